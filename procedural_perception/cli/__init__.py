"""Thin command-line entry points: train, eval, render, memory."""
