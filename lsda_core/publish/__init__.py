"""What the reader sees: paper numbers and claims, tables, plots, figures, the book build and status. Imports every layer below."""
