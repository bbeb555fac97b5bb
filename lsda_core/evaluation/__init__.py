"""Judging detections: AP (VOC 2007, ILSVRC), Hoiem's false-positive analysis, the bootstrap, pool5
units. Imports core, store, data, models."""
