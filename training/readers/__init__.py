"""Readers of the real datasets' on-disk formats: VGGSound (:mod:`.vggsound`), CAV-MAE's json
files (:mod:`.cavmae`) and AVSBench S4/MS3 (:mod:`.avsbench`), over what they share
(:mod:`.common`).  Each reader is a torch Dataset of whole clips with a manifest of what it
found; :mod:`training.run.datasets` turns them into a run's parts."""
