"""Everything that reproduces EM-KTD beyond the library, laid out by job:

- ``run/``: one training run (config, methods, datasets, data, the loops, losses, teacher cache,
  probes, evaluation, metrics); ``python training/distill.py`` runs it.
- ``readers/``: readers of the real datasets' on-disk formats.
- ``embedded/``: the embedded benchmark (sources, synthesis, writers, build).
- ``experiments/``: the evidence runner, run records and results tables, publishing, examples.
- ``perf/``: benchmarks of training throughput.
"""
