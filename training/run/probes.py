"""The entropy monitor's probes, fitted on the frozen teacher's tokens before distillation.

One pass over the training frames gathers what the probes read (mean-pooled tokens, or the
visual positions for segmentation probes); then the probes train to convergence on most of the
training clips, stopped on the loss of the rest (the paper's two-stage process: probes first,
trained to convergence, then frozen), and their accuracy and mean entropy are reported, since a
probe that has barely moved from its initialisation gives near-maximal entropy everywhere and
its weights would say nothing about a clip.

A run reads its weights through :class:`RunMonitor`: per sample from the probes (EM-KTD), per
sample from the probes of the clip's own fold when cross-fitted (``--monitor-folds k``: probes
fitted on the other folds, so no clip is weighted by probes that saw it), or as the probes' mean
weight per modality over the training frames (the ``emktd-static`` control).
"""

from __future__ import annotations

import copy
import math
import zlib
from collections import defaultdict

import numpy as np
import torch
import torch.nn as nn

from emktd.models import MODALITIES, AVTransformer
from emktd.monitor import EntropyMonitor, entropy

from .config import RunConfig
from .data import ResumableSampler, loader, to_device
from .teacher import TeacherCache, teacher_outputs


def fold_of(key: str, folds: int) -> int:
    """The fold of a clip (``key``: a clip id or a frame key ``<clip id>#<frame>``), fixed by its id."""
    return zlib.crc32(key.rsplit("#", 1)[0].encode()) % folds


class RunMonitor(nn.Module):
    """The EM weights a run reads, ``{modality: [B]}``: see the module's docstring.

    ``folds``: the cross-fitted probes, fold k's fitted on the clips of the other folds; samples
    whose keys are not given (evaluation) read ``monitor``, fitted on every training clip.
    ``static``: constant weights per modality, whatever the sample."""

    def __init__(self, monitor: EntropyMonitor, folds=(), static: dict[str, float] | None = None):
        super().__init__()
        self.monitor, self.folds, self.static = monitor, nn.ModuleList(folds), static
        self.task = monitor.task

    def weights(self, tokens: dict[str, torch.Tensor], lam: float, keys=None) -> dict[str, torch.Tensor]:
        if self.static is not None:
            return {m: torch.full((t.shape[0],), self.static[m], device=t.device) for m, t in tokens.items()
                    if t is not None}
        if len(self.folds) and keys is not None and any(k is not None for k in keys):
            # fold k's probes for a training sample of fold k; the whole monitor for a sample
            # no probe fitted on (a None key: a transfer-pool clip), as for evaluation
            each = [fold.weights(tokens, lam) for fold in self.folds] + [self.monitor.weights(tokens, lam)]
            device = next(iter(each[0].values())).device
            pick = torch.tensor([fold_of(k, len(self.folds)) if k is not None else len(self.folds) for k in keys],
                                device=device)[:, None]
            return {m: torch.stack([w[m] for w in each], dim=1).gather(1, pick).squeeze(1) for m in each[0]}
        return self.monitor.weights(tokens, lam)


def gather_features(config: RunConfig, teacher: AVTransformer, monitor: EntropyMonitor, dataset, device,
                    progress: bool, cache: TeacherCache | None = None
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """What each probe reads, per training frame, the targets (class ids or masks) and the frames' keys."""
    from tqdm import tqdm

    seg = monitor.task == "segmentation"
    gh, gw = teacher.config.visual_grid
    feats: dict[str, list[torch.Tensor]] = defaultdict(list)
    targets: list[torch.Tensor] = []
    frame_keys: list[str] = []
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
        frame_keys += list(keys)
    if not targets:
        raise SystemExit("no training samples reached the entropy probes")
    return {m: torch.cat(v) for m, v in feats.items()}, torch.cat(targets), frame_keys


def holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) indices of ``n`` samples (one frame per clip), ``fraction`` held out; with
    fewer than two samples to hold out, every sample serves both (a run too small to stop on)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    count = int(round(n * fraction))
    if count < 2 or n - count < 2:
        return order, order
    return order[count:], order[:count]


@torch.no_grad()
def probe_report(monitor: EntropyMonitor, feats: dict[str, torch.Tensor], target: torch.Tensor, device,
                 batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Per probe: accuracy (a class of the clip's, or mask pixels) and mean entropy in nats, over the samples."""
    monitor.eval()
    hits: dict[str, float] = defaultdict(float)
    entropy_sum: dict[str, float] = defaultdict(float)
    for i in range(0, target.shape[0], batch_size):
        logits = monitor({m: feats[m][i:i + batch_size].to(device) for m in MODALITIES})
        truth = target[i:i + batch_size].to(device)
        if monitor.task == "segmentation":
            truth = (truth.reshape(truth.shape[0], *truth.shape[-2:]) > 0.5).long()
        for m, out in logits.items():
            if monitor.task == "classification" and truth.ndim == 2:  # multi-hot: any named class is right
                right = truth.gather(1, out.argmax(dim=1, keepdim=True)).squeeze(1) > 0
            else:
                right = out.argmax(dim=1) == truth
            right = right.float()
            hits[m] += float(right.reshape(right.shape[0], -1).mean(dim=1).sum())
            entropy_sum[m] += float(entropy(out).sum())
    n = max(1, target.shape[0])
    return {m: {"accuracy": hits[m] / n, "entropy": entropy_sum[m] / n} for m in hits}


def train_probes(config: RunConfig, teacher: AVTransformer, monitor: EntropyMonitor, dataset, device,
                 progress: bool, cache: TeacherCache | None = None,
                 folds: int = 0) -> tuple[dict, list[EntropyMonitor]]:
    """Gather the teacher's features of ``dataset`` and fit the probes on them (:func:`fit_probes`);
    with ``folds`` >= 2, also one monitor per fold, fitted on the other folds' clips.  Returns the
    report (with each probe's mean weight over the training frames at ``config.lam``, and with
    folds each probe's accuracy and entropy on the fold it never saw) and the fold monitors."""
    feats, target, keys = gather_features(config, teacher, monitor, dataset, device, progress, cache)
    report = fit_probes(config, monitor, feats, target, device, progress)
    report["mean_weights"] = mean_weights(monitor, feats, config.lam, device)
    fold_monitors = []
    if folds >= 2:
        fold = torch.tensor([fold_of(k, folds) for k in keys])
        unseen = []
        for k in range(folds):
            inside, outside = (fold != k).nonzero().squeeze(1), (fold == k).nonzero().squeeze(1)
            if len(outside) == 0 or len(inside) == 0:
                raise SystemExit(f"cross-fitted monitor: fold {k} of {folds} is empty; use fewer folds")
            member = copy.deepcopy(monitor).requires_grad_(True)
            for module in member.modules():  # a fresh start, as the plain monitor had
                if isinstance(module, nn.Linear):
                    module.reset_parameters()
            fit_probes(config, member, {m: v[inside] for m, v in feats.items()}, target[inside], device)
            unseen.append((len(outside), probe_report(member, {m: v[outside] for m, v in feats.items()},
                                                      target[outside], device)))
            fold_monitors.append(member)
        total = sum(n for n, _ in unseen)
        report["folds"] = folds
        report["out_of_fold"] = {m: {key: sum(n * r[m][key] for n, r in unseen) / total
                                     for key in ("accuracy", "entropy")} for m in unseen[0][1]}
    return report, fold_monitors


@torch.no_grad()
def mean_weights(monitor: EntropyMonitor, feats: dict[str, torch.Tensor], lam: float, device,
                 batch_size: int = 256) -> dict[str, float]:
    """Each probe's mean EM weight ``exp(-lam * H)`` over the gathered frames."""
    sums: dict[str, float] = defaultdict(float)
    n = next(iter(feats.values())).shape[0]
    for i in range(0, n, batch_size):
        for m, w in monitor.weights({m: v[i:i + batch_size].to(device) for m, v in feats.items()}, lam).items():
            sums[m] += float(w.sum())
    return {m: v / max(1, n) for m, v in sums.items()}


def fit_probes(config: RunConfig, monitor: EntropyMonitor, feats: dict[str, torch.Tensor], target: torch.Tensor,
               device, progress: bool = False) -> dict:
    """Fit the probes to convergence: AdamW with a cosine schedule over at most ``probe_epochs``,
    stopped when the loss on held-out training clips has not improved for ``probe_patience``
    epochs, keeping the best epoch's probes.  Returns the epochs' losses and, per probe, its
    accuracy and mean entropy on the training and the held-out clips."""
    from tqdm import tqdm

    train_idx, held_idx = holdout(target.shape[0], config.probe_holdout, config.seed)
    optimizer = torch.optim.AdamW(monitor.parameters(), lr=config.probe_lr, weight_decay=1e-4)
    batch_size = 256
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, max(1, config.probe_epochs * math.ceil(len(train_idx) / batch_size)))
    g = torch.Generator().manual_seed(config.seed)
    losses, held_losses, best = [], [], (math.inf, 0, None)
    for epoch in tqdm(range(config.probe_epochs), desc="probe epochs", disable=not progress):
        monitor.train()
        order = train_idx[torch.randperm(len(train_idx), generator=g)]
        epoch_loss = []
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = monitor.probe_loss({m: feats[m][idx].to(device) for m in MODALITIES}, target[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_loss.append(float(loss.detach()))
        losses.append(float(np.mean(epoch_loss)))
        held_losses.append(_loss(monitor, feats, target, held_idx, device))
        if held_losses[-1] < best[0] - 1e-5:
            best = (held_losses[-1], epoch, copy.deepcopy(monitor.state_dict()))
        elif epoch - best[1] >= config.probe_patience:
            break
    if best[2] is not None:  # else the held-out loss was never finite: keep the last epoch's probes
        monitor.load_state_dict(best[2])
    monitor.eval().requires_grad_(False)
    pick = lambda idx: ({m: v[idx] for m, v in feats.items()}, target[idx])  # noqa: E731
    return {"epoch_losses": losses, "held_out_losses": held_losses, "best_epoch": best[1] + 1,
            "train_clips": len(train_idx), "held_out_clips": len(held_idx) if held_idx is not train_idx else 0,
            "train": probe_report(monitor, *pick(train_idx), device),
            "held_out": probe_report(monitor, *pick(held_idx), device)}


@torch.no_grad()
def _loss(monitor: EntropyMonitor, feats, target, idx, device, batch_size: int = 256) -> float:
    monitor.eval()
    total = 0.0
    for i in range(0, len(idx), batch_size):
        part = idx[i:i + batch_size]
        total += float(monitor.probe_loss({m: feats[m][part].to(device) for m in MODALITIES},
                                          target[part].to(device))) * len(part)
    return total / max(1, len(idx))
