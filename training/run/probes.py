"""The entropy monitor's probes, fitted on the frozen teacher's tokens before distillation.

One pass over the training frames gathers what the probes read (mean-pooled tokens, or the
visual positions for segmentation probes), then the probes train for ``probe_epochs`` over
the gathered features with a cosine schedule, and are frozen.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from emktd.models import MODALITIES, AVTransformer
from emktd.monitor import EntropyMonitor

from .config import RunConfig
from .data import ResumableSampler, loader, to_device
from .teacher import TeacherCache, teacher_outputs


def gather_features(config: RunConfig, teacher: AVTransformer, monitor: EntropyMonitor, dataset, device,
                    progress: bool, cache: TeacherCache | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """What each probe reads, per training frame, and the targets (class ids or masks)."""
    from tqdm import tqdm

    seg = monitor.task == "segmentation"
    gh, gw = teacher.config.visual_grid
    feats: dict[str, list[torch.Tensor]] = defaultdict(list)
    targets: list[torch.Tensor] = []
    data_loader = loader(dataset, config.batch_size, ResumableSampler(len(dataset), config.seed, shuffle=False),
                         config.workers)
    teacher.eval()
    for batch, _ in tqdm(data_loader, desc="probe features", disable=not progress):
        if batch is None:
            continue
        keys = batch.get("key")
        if seg:
            keep = batch["mask_valid"]
            if not keep.any():
                continue
            batch = {k: (v[keep] if torch.is_tensor(v) else v) for k, v in batch.items()}
            keys = [k for k, kept in zip(keys, keep.tolist()) if kept] if keys is not None else None
        batch = to_device(batch, device)
        tokens = teacher_outputs(teacher, None, batch["audio"], batch["frames"], 0.0, keys, cache)
        for m in MODALITIES:
            x = tokens[m].float()
            if seg and m != "audio":
                feats[m].append(x[:, x.shape[1] - gh * gw:].cpu())  # the visual positions
            else:
                feats[m].append(x.mean(dim=1, keepdim=True).cpu())  # pooled: what a linear probe reads
        targets.append((batch["masks"][:, 0] if seg else batch["target"]).cpu())
    if not targets:
        raise SystemExit("no training samples reached the entropy probes")
    return {m: torch.cat(v) for m, v in feats.items()}, torch.cat(targets)


def train_probes(config: RunConfig, teacher: AVTransformer, monitor: EntropyMonitor, dataset, device,
                 progress: bool, cache: TeacherCache | None = None) -> list[float]:
    """Fit the probes (AdamW, cosine schedule); returns the mean loss of each epoch."""
    from tqdm import tqdm

    feats, target = gather_features(config, teacher, monitor, dataset, device, progress, cache)
    optimizer = torch.optim.AdamW(monitor.parameters(), lr=config.probe_lr, weight_decay=1e-4)
    n, batch_size = target.shape[0], 256
    steps = config.probe_epochs * math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    g = torch.Generator().manual_seed(config.seed)
    losses = []
    monitor.train()
    for _ in tqdm(range(config.probe_epochs), desc="probe epochs", disable=not progress):
        order = torch.randperm(n, generator=g)
        epoch_loss = []
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            loss = monitor.probe_loss({m: feats[m][idx].to(device) for m in MODALITIES}, target[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_loss.append(float(loss.detach()))
        losses.append(float(np.mean(epoch_loss)))
    monitor.eval()
    for p in monitor.parameters():
        p.requires_grad_(False)
    return losses
