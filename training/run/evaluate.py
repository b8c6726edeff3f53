"""Evaluation of a model on a run's evaluation parts.

Classification is clip-level (logits averaged over the clip's frames); segmentation is
per frame, one clip per batch as AVSBench tests, overall and per evaluation part (S4 and MS3
of the embedded benchmark); with clip modes, top-1 per informativeness mode; with clip groups
(seen and new instances), all of it again per group; with a monitor, its mean weights per mode.
Each clip's own outcome (top-1 hit, its frames' summed IoU) is kept under ``per_clip``, so that
results can resample the test clips.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from emktd.models import AVTransformer

from .config import RunConfig
from .data import ResumableSampler, loader
from .loop import autocast, student_frames
from .metrics import SegmentationMeter, classification_metrics


class _Tally:
    """What evaluation accumulates clip by clip."""

    def __init__(self, groups: dict[str, str] | None = None, per_clip: bool = False):
        self.groups, self.per_clip = groups or {}, per_clip
        self.by_group: dict[str, _Tally] = {}
        self.scores, self.targets, self.ids, self.skipped = [], [], [], []
        self.clip_iou: dict[str, tuple[float, int]] = {}  # clip id -> (sum of its frames' IoU, frames)
        self.meter = SegmentationMeter()
        self.part_meters: dict[str, SegmentationMeter] = defaultdict(SegmentationMeter)
        self.weights: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def add(self, batch: dict, out, part: str) -> None:
        if self.groups:
            self.by_group.setdefault(self.groups.get(batch["id"][0], "unknown"), _Tally()).add(batch, out, part)
        self.scores.append(out.logits.float().mean(dim=0).cpu())
        self.targets.append(batch["target"][0])
        self.ids.append(batch["id"][0])
        if out.mask_logits is not None and "masks" in batch:
            valid = batch["mask_valid"][0]
            if valid.any():
                pred = F.interpolate(out.mask_logits.float(), size=batch["masks"].shape[-2:], mode="bilinear",
                                     align_corners=False)
                pred, truth = pred[valid.to(pred.device)].cpu(), batch["masks"][0][valid]
                self.meter.update(pred, truth)
                self.part_meters[part].update(pred, truth)
                self.clip_iou[batch["id"][0]] = (float(self.meter.ious[-1].sum()), int(self.meter.ious[-1].numel()))

    def result(self, config: RunConfig, modes: dict[str, str] | None, seconds: float) -> dict:
        result = {"clips": len(self.ids), "unreadable": len(self.skipped), "seconds": seconds}
        hits = None
        if self.scores and config.objective != "segmentation":
            s, t = torch.stack(self.scores).numpy(), torch.stack(self.targets).numpy()
            result.update(classification_metrics(s, t))
            hits = (t[np.arange(len(s)), s.argmax(1)] > 0)
            if modes:
                by_mode = defaultdict(list)
                for clip_id, hit in zip(self.ids, hits):
                    by_mode[modes.get(clip_id, "unknown")].append(bool(hit))
                result["top1_by_mode"] = {m: float(np.mean(v)) for m, v in sorted(by_mode.items())}
        if self.meter.ious:
            result.update(self.meter.result())
            result["segmentation_by_part"] = {name: m.result() for name, m in sorted(self.part_meters.items())}
        if self.by_group:
            result["by_group"] = {name: {k: v for k, v in tally.result(config, modes, seconds).items()
                                         if k != "seconds"} for name, tally in sorted(self.by_group.items())}
        if self.weights:
            result["em_weights_by_mode"] = {mode: {m: float(np.mean(v)) for m, v in ws.items()}
                                            for mode, ws in sorted(self.weights.items())}
        if self.per_clip and self.ids:
            iou = [self.clip_iou.get(i, (0.0, 0)) for i in self.ids]
            result["per_clip"] = {"ids": list(self.ids), "group": [self.groups.get(i, "") for i in self.ids],
                                  "top1": [int(h) for h in hits] if hits is not None else None,
                                  "iou_sum": [round(x, 5) for x, _ in iou], "frames": [n for _, n in iou]}
        return result


@torch.no_grad()
def evaluate(config: RunConfig, model: AVTransformer, dataset, device, modes: dict[str, str] | None = None,
             monitor=None, progress: bool = False, desc: str = "eval", groups: dict[str, str] | None = None) -> dict:
    """Metrics of ``model`` on ``dataset`` (a :class:`data.Concat` of whole clips); with ``groups``
    ({clip id: group}), the same metrics again for each group under ``by_group``."""
    from tqdm import tqdm

    model.eval()
    tally = _Tally(groups, per_clip=True)
    data_loader = loader(dataset, 1, ResumableSampler(len(dataset), 0, shuffle=False), config.workers)
    started = time.time()
    for index, (batch, errors) in enumerate(tqdm(data_loader, desc=desc, disable=not progress)):
        tally.skipped += [e["id"] for e in errors]
        if batch is None:
            continue
        frames = batch["frames"][0]
        if frames.ndim == 3:
            frames = frames[None]
        frames = student_frames(frames.to(device), model.config.image_size)
        with autocast(config, device):  # the clip's audio is encoded once for all its frames
            out = model(batch["audio"].to(device), frames[None])
        tally.add(batch, out, dataset.part_name(index))
        if monitor is not None and modes:
            mode = modes.get(batch["id"][0], "unknown")
            for m, w in monitor.weights(out.tokens(), config.lam).items():
                tally.weights[mode][m].append(float(w.mean()))
    return tally.result(config, modes, round(time.time() - started, 1))
