"""One epoch of training: the learning rate set every step, the teacher's outputs (cached where
the inputs are unaugmented), the student's, the losses, the update, logs and checkpoints.

A step stops the run with a message on a non-finite loss; logged values are averaged over
ranks; ``stop_after_steps`` ends an epoch early (tests and benchmarks).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from emktd.models import MODALITIES, AVTransformer

from .augment import augment
from .config import RunConfig
from .data import to_device
from .distributed import reduce_mean, unwrap, world
from .objective import Grids, distill_terms, task_losses, total_loss
from .teacher import TeacherCache, teacher_outputs


def lr_at(config: RunConfig, step: float, steps_per_epoch: int) -> float:
    """Linear warm-up, then half-cosine from lr to min_lr over the run (set every step, as MAE does)."""
    epoch = step / max(1, steps_per_epoch)
    if epoch < config.warmup_epochs:
        return config.lr * epoch / config.warmup_epochs
    progress = (epoch - config.warmup_epochs) / max(1e-8, config.epochs - config.warmup_epochs)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def student_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Frames ``[B, 3, S, S]`` at the student's input size (antialiased when it is smaller)."""
    if frames.shape[-1] == size:
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def autocast(config: RunConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.bf16)


@dataclass
class State:
    epoch: int = 0
    step_in_epoch: int = 0  # batches of the current epoch already done
    global_step: int = 0
    earlier_seconds: float = 0.0  # training time of earlier sittings, up to the checkpoint resumed from


@dataclass
class Fit:
    """What every step of a run uses: the models, the method's inputs, the optimiser, the outlets."""

    config: RunConfig
    trainee: nn.Module  # the Trainee, possibly wrapped by DDP or torch.compile
    teacher: AVTransformer | None
    monitor: nn.Module | None
    grids: Grids | None
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    device: torch.device
    cache: TeacherCache | None
    log: Callable[[dict], None]
    checkpoint: Callable[[], None]
    bar: object = None


def step_losses(fit: Fit, batch: dict) -> tuple[torch.Tensor, dict, dict | None]:
    """Augment, run the teacher (unless the method needs none) and the student; (loss, terms, teacher outputs)."""
    config = fit.config
    augmented = augment(config, batch, fit.generator)
    with autocast(config, fit.device):
        t = None
        if fit.teacher is not None and config.method != "none":  # without distillation the teacher idles
            # an augmented batch is not what the cache holds: the teacher sees it afresh
            keys = batch["key"]
            if "labelled" in batch:  # transfer-pool clips are new every epoch: never cached, no fold
                keys = [k if labelled else None for k, labelled in zip(keys, batch["labelled"].tolist())]
            t = teacher_outputs(fit.teacher, fit.monitor, batch["audio"], batch["frames"], config.lam,
                                keys, None if augmented else fit.cache)
        size = unwrap(fit.trainee).student.config.image_size
        s = fit.trainee(batch["audio"], student_frames(batch["frames"], size))
        terms = task_losses(config, s, batch)
        if t is not None:
            terms.update(distill_terms(config, t, s, fit.grids))
        return total_loss(config, terms), terms, t


def train_one_epoch(fit: Fit, data_loader, state: State) -> bool:
    """Train until the epoch ends (True) or ``stop_after_steps`` is reached (False)."""
    config = fit.config
    fit.trainee.train()
    steps_per_epoch = math.ceil(len(data_loader.dataset) / world()[1] / config.batch_size)
    window: dict[str, list[float]] = defaultdict(list)
    started, samples = time.time(), 0
    for batch, errors in data_loader:
        if errors:
            fit.log({"type": "skipped", "ids": [e["id"] for e in errors], "reasons": [e["error"] for e in errors]})
        if batch is None:
            state.step_in_epoch += 1
            continue
        lr = lr_at(config, state.global_step, steps_per_epoch)
        for group in fit.optimizer.param_groups:
            group["lr"] = lr
        batch = to_device(batch, fit.device)
        loss, terms, t = step_losses(fit, batch)
        if not torch.isfinite(loss):
            raise SystemExit(f"step {state.global_step}: the loss is {loss.item()} "
                             f"({ {k: float(v.detach()) for k, v in terms.items()} }); stopping")
        fit.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        fit.optimizer.step()
        state.step_in_epoch += 1
        state.global_step += 1
        samples += batch["audio"].shape[0]
        _remember(window, loss, terms, t, fit.bar, lr)
        if state.global_step % config.log_every == 0:
            means = reduce_mean({k: float(np.mean(v)) for k, v in window.items()}, fit.device)
            fit.log({"type": "train", "step": state.global_step,
                     "epoch": state.epoch + state.step_in_epoch / steps_per_epoch, "lr": lr,
                     "samples_per_s": samples * world()[1] / max(time.time() - started, 1e-9), **means,
                     **({"cache_hits": fit.cache.hits, "cache_misses": fit.cache.misses} if fit.cache is not None else {})})
            window.clear()
        if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
            fit.checkpoint()
        if config.stop_after_steps and state.global_step >= config.stop_after_steps:
            return False
    return True


def _remember(window: dict, loss, terms: dict, t: dict | None, bar, lr: float) -> None:
    """Keep a step's values for the next log record (and show them on the progress bar)."""
    loss_value = float(loss.detach())
    for k, v in terms.items():
        window[k].append(float(v.detach()))
    window["loss"].append(loss_value)
    if t is not None and "w_audio" in t:
        for m in MODALITIES:
            window[f"w_{m}"].append(float(t[f"w_{m}"].mean()))
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
