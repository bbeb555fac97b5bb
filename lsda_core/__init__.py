"""lsda-study: R-CNN and LSDA reproduced as a Jupyter Book."""

__version__ = "0.1.0"
