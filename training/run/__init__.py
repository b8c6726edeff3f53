"""One training run (``python training/distill.py``), one module per concern:

- :mod:`.config`: the run's settings (fields with help and types), presets, files and flags;
- :mod:`.methods` and :mod:`.datasets`: the registries of distillation methods and of datasets;
- :mod:`.data`: the run's parts, the per-visit frame draw and the resumable order;
- :mod:`.teacher`: loading the frozen teacher, its outputs and their cache;
- :mod:`.objective`: what a step minimises (task losses, the method's term, KD) and the trained module;
- :mod:`.augment`, :mod:`.loop`: augmentation and one epoch of training;
- :mod:`.probes`: the entropy monitor's probes; :mod:`.evaluate`, :mod:`.metrics`: evaluation;
- :mod:`.folder`: the run folder; :mod:`.distributed`: processes under torchrun;
- :mod:`.pipeline`: the stages of a run in order.
"""
