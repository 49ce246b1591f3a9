"""Evaluation math on frozen encoders (no Lightning): kNN, segmentation, 2AFC, linear probes."""
