"""Measurements of the engine (run as modules: `python -m benchmarks.quality`)."""
