"""The run folder: its log, its files (each written whole), its checkpoint and its plots.

Only rank 0 writes.  The folder is made on the first write, so a run that stops at start-up
(a bad config, a missing teacher) leaves nothing behind.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from emktd.files import atomic_path, write_text_atomic
from emktd.models import MODALITIES

# what a run's record keeps of its probes: when they stopped, on how many clips, their accuracy and
# entropy on the clips they fitted, on the held-out ones and (cross-fitted) out of fold, and the
# mean weight they give the training frames
PROBE_REPORT = ("best_epoch", "train_clips", "held_out_clips", "train", "held_out", "mean_weights", "folds",
                "out_of_fold")


class RunFolder:
    def __init__(self, path: Path, rank: int):
        self.path, self.rank = Path(path), rank

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    def log(self, record: dict) -> None:
        if self.rank == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self.path / "log.jsonl", "a") as f:
                f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def write(self, name: str, text: str) -> None:
        if self.rank == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path / name, text)

    def save_checkpoint(self, state: dict) -> None:
        if self.rank == 0:
            self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.checkpoint_path) as tmp:  # a kill leaves the previous checkpoint whole
                torch.save(state, tmp)

    def records(self) -> list[dict]:
        path = self.path / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def probes(self) -> dict | None:
        """The monitor's probes as the run trained them (its log's last ``probes`` record, without
        the per-epoch losses), or None for a run without a monitor."""
        found = [r for r in self.records() if r.get("type") == "probes"]
        return {k: found[-1][k] for k in PROBE_REPORT if k in found[-1]} if found else None

    def plot(self) -> None:
        """Loss terms and EM weights over training, from log.jsonl."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [r for r in self.records() if r.get("type") == "train"]
        if not train:
            return
        steps = [r["step"] for r in train]
        keys = [k for k in ("loss", "cls", "seg", "kd", "distill", "ktd_audio", "ktd_visual", "ktd_fused", "method")
                if k in train[-1]]
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in keys:
            ax.plot(steps, [r.get(k, np.nan) for r in train], label=k)
        ax.set(yscale="log", xlabel="step", title="loss terms")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.path / "loss.png", dpi=110)
        plt.close(fig)
        if "w_audio" in train[-1]:
            fig, ax = plt.subplots(figsize=(7, 3.5))
            for m in MODALITIES:
                ax.plot(steps, [r.get(f"w_{m}", np.nan) for r in train], label=m)
            ax.set(ylim=(0, 1), xlabel="step", title="mean entropy weight per modality (training batches)")
            ax.legend()
            fig.tight_layout()
            fig.savefig(self.path / "em_weights.png", dpi=110)
            plt.close(fig)
