"""The entropy monitor (EM): probes on a frozen teacher's tokens, the weights they give, and
their files.

A probe per modality reads the teacher's audio, visual or fused tokens; the softmax entropy H
of its prediction gives the sample's weight ``w = exp(-lam * H)`` in EM-KTD.  Training
(``training/run/probes.py``), publishing and the demo all build, save and load the monitor
here, in one file format: ``monitor.safetensors`` (the probes' weights) beside
``monitor.json`` (task, lambda, width, classes).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .files import atomic_path, write_text_atomic
from .models import MODALITIES, AVConfig

__all__ = ["entropy", "entropy_weights", "ClassificationProbe", "SegmentationProbe", "EntropyMonitor",
           "MonitorLoadError", "save_monitor", "load_monitor", "MONITOR_WEIGHTS", "MONITOR_CONFIG", "TASKS"]

TASKS = ("classification", "segmentation")
MONITOR_WEIGHTS, MONITOR_CONFIG = "monitor.safetensors", "monitor.json"

Grid = tuple[int, int]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy in nats over dim 1, averaged over any spatial dims:
    ``[B, K]`` or ``[B, K, H, W]`` -> ``[B]``."""
    log_p = F.log_softmax(logits.float(), dim=1)
    h = -(log_p.exp() * log_p).sum(dim=1)
    return h.flatten(1).mean(dim=1) if h.ndim > 1 else h


def entropy_weights(probe_logits: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """w = exp(-lam * H) with H the probe's softmax entropy (nats), detached: ``[B, K(, H, W)]`` -> ``[B]``.

    A confident probe (low entropy) gives a weight near 1, an unsure one less.
    """
    with torch.no_grad():
        return torch.exp(-lam * entropy(probe_logits.detach()))


class ClassificationProbe(nn.Module):
    """Linear layer on the mean-pooled tokens: ``[B, N, C]`` -> ``[B, K]``."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(tokens.mean(dim=1))


class SegmentationProbe(nn.Module):
    """Per-pixel two-class (background, object) linear probe -> ``[B, 2, H, W]``.

    Visual and fused tokens: a 1x1 linear map of each visual token, upsampled
    bilinearly to ``out_size``.  [decision] Audio tokens have no image
    positions, so the audio probe maps the mean-pooled audio tokens linearly to
    the logits of every cell of the visual grid: still a linear per-pixel
    readout of what the audio knows about where the object is.
    """

    def __init__(self, dim: int, grid: Grid, out_size: int, from_audio: bool = False):
        super().__init__()
        self.grid, self.out_size, self.from_audio = tuple(grid), out_size, from_audio
        cells = grid[0] * grid[1]
        self.linear = nn.Linear(dim, 2 * cells if from_audio else 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, (h, w) = tokens.shape[0], self.grid
        if self.from_audio:
            x = self.linear(tokens.mean(dim=1)).view(b, 2, h, w)
        else:
            x = self.linear(tokens[:, tokens.shape[1] - h * w:]).transpose(1, 2).reshape(b, 2, h, w)
        return F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)


class EntropyMonitor(nn.Module):
    """One probe per modality on the frozen teacher's tokens.

    Train the probes with :meth:`probe_loss` (cross-entropy) before
    distillation, then freeze them; :meth:`weights` gives the per-sample,
    per-modality EM weights ``{modality: [B]}``.
    """

    def __init__(self, dim: int, num_classes: int = 0, task: str = "classification",
                 visual_grid: Grid | None = None, image_size: int | None = None):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected 'classification' or 'segmentation'")
        self.task = task
        if task == "classification":
            if num_classes < 2:
                raise ValueError("a classification monitor needs num_classes >= 2")
            self.probes = nn.ModuleDict({m: ClassificationProbe(dim, num_classes) for m in MODALITIES})
        else:
            if visual_grid is None or image_size is None:
                raise ValueError("a segmentation monitor needs visual_grid and image_size")
            self.probes = nn.ModuleDict({m: SegmentationProbe(dim, visual_grid, image_size, from_audio=m == "audio")
                                         for m in MODALITIES})

    @classmethod
    def for_model(cls, config: AVConfig, task: str = "classification",
                  num_classes: int | None = None) -> "EntropyMonitor":
        """A monitor for the tokens of a model of ``config`` (its width, classes and visual grid)."""
        return cls(config.embed_dim, config.num_classes if num_classes is None else num_classes, task,
                   config.visual_grid, config.image_size)

    def forward(self, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{modality: tokens}`` -> ``{modality: probe logits}`` for the modalities given."""
        return {m: self.probes[m](t.detach()) for m, t in tokens.items() if t is not None}

    def probe_loss(self, tokens: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of the probes. ``target``: class ids ``[B]`` or binary masks ``[B, 1|-, H, W]``."""
        logits = self(tokens)
        if self.task == "segmentation":
            target = (target.reshape(target.shape[0], *target.shape[-2:]) > 0.5).long()
        return sum(F.cross_entropy(out, target) for out in logits.values())

    def weights(self, tokens: dict[str, torch.Tensor], lam: float = 1.0) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {m: entropy_weights(out, lam) for m, out in self(tokens).items()}




class MonitorLoadError(ValueError):
    """A monitor file pair that cannot be read; the message names the file and what was expected."""


def save_monitor(monitor: EntropyMonitor, folder: str | Path, lam: float, **info) -> Path:
    """``folder/monitor.safetensors`` and ``folder/monitor.json``, each written whole or not at all;
    ``info`` (JSON values, e.g. the mean weights on the training frames) goes into the json too."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MONITOR_WEIGHTS) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in monitor.state_dict().items()}, str(tmp))
    probe = next(iter(monitor.probes.values()))
    write_text_atomic(folder / MONITOR_CONFIG, json.dumps(
        {"task": monitor.task, "lam": lam, "dim": probe.linear.in_features,
         "num_classes": probe.linear.out_features if monitor.task == "classification" else 0, **info},
        indent=1) + "\n")
    return folder


def load_monitor(folder: str | Path, config: AVConfig) -> tuple[EntropyMonitor, float] | None:
    """The monitor saved in ``folder`` for a model of ``config`` and its lambda, in eval mode;
    None when the folder has none.  A damaged pair raises :class:`MonitorLoadError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights_path = folder / MONITOR_CONFIG, folder / MONITOR_WEIGHTS
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        task, lam, num_classes = meta["task"], float(meta["lam"]), int(meta["num_classes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MonitorLoadError(f"{meta_path}: expected a JSON object with task, lam, dim and num_classes "
                               f"({type(exc).__name__}: {exc})") from None
    try:
        monitor = EntropyMonitor.for_model(config, task, num_classes)
        monitor.load_state_dict(load_file(str(weights_path)))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise MonitorLoadError(f"{weights_path}: expected the {task} probes of a width-{config.embed_dim} "
                               f"model ({type(exc).__name__}: {exc})") from None
    return monitor.eval().requires_grad_(False), lam
