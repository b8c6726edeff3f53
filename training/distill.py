"""Distil an audio-visual student (EM-KTD by default), or train a teacher.

    python training/distill.py                      # the embedded default (see --help)
    python training/distill.py --task teacher       # train the embedded benchmark's teacher
    python training/distill.py --method kd --seed 1 # a baseline
    python training/distill.py --preset vggsound-paper --vggsound-csv ... --clip-dir ... --teacher vgg_65.5.pth
    torchrun --nproc-per-node 8 training/distill.py ...   # multi-GPU / multi-node
    python training/distill.py --out runs/x --resume true # continue an interrupted run

A run folder holds: config.json (fully resolved), log.jsonl (every logged step),
metrics.json (teacher and student on the evaluation split, clip counts, hardware,
wall time), student/ (a model folder: config.json + model.safetensors), the entropy
monitor (monitor.safetensors + monitor.json), checkpoints/last.pt, manifest.json (clips
used, missing, unreadable) and plots.  The stages are in training/run/pipeline.py.
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository root: `training` imports as a package

from training.run.pipeline import main  # noqa: E402

if __name__ == "__main__":
    main()
