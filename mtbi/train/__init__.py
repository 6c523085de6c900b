"""Datasets, length-bucketing sampler and trainers."""
