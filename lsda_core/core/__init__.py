"""The study's vocabulary: parameters, errors, boxes and dataset structures. Imports nothing else of lsda_core."""
