"""Measurements of the engine, run as modules: `python -m benchmarks.quality` (do generated images
convince other classifiers?) and `python -m benchmarks.speed` (the optimize step against a
straightforward reference; see benchmarks/README.md)."""
