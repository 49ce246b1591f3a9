"""Shared infrastructure: configuration, atomic writes, results files, distributed helpers."""
