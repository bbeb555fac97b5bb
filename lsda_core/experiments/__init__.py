"""One module per chapter: its tables and ablations as functions (no pandas, no matplotlib). Imports every layer below publish."""
