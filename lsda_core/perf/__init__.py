"""Measuring speed: the benchmark and its stored results. Imports core, store, data, models, detection, evaluation."""
