"""Benchmarks of training: throughput per method and the distillation loss's share of a step
(:mod:`.throughput`, ``python -m training.perf.throughput``)."""
