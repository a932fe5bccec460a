"""Shared code: params, I/O, text, models, training, statistics, scoring. Imports nothing above it."""
