"""CAV-MAE's training augmentation: SpecAugment (torchaudio's frequency and time masking, one
mask per sample) and mixup.  Every draw comes from the run's generator, whose state the
checkpoint keeps, so a resumed run augments as an uninterrupted one would."""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.transforms as T

from .config import RunConfig


def spec_augment(audio: torch.Tensor, freqm: int, timem: int, generator: torch.Generator) -> torch.Tensor:
    """fbank ``[B, T, F]`` with a frequency mask of up to ``freqm`` bins and a time mask of up to
    ``timem`` frames per sample.  torchaudio draws from the global generator: it runs here on one
    forked from a seed of ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    devices = [audio.device] if audio.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        spec = audio.transpose(1, 2)  # torchaudio masks (..., freq, time)
        if freqm:
            spec = T.FrequencyMasking(freqm, iid_masks=True)(spec)
        if timem:
            spec = T.TimeMasking(timem, iid_masks=True)(spec)
    return spec.transpose(1, 2).contiguous()


def augment(config: RunConfig, batch: dict, generator: torch.Generator) -> bool:
    """SpecAugment and mixup in place; returns whether the inputs changed."""
    changed = False
    if config.freqm or config.timem:
        batch["audio"] = spec_augment(batch["audio"], config.freqm, config.timem, generator)
        changed = True
    if config.mixup and float(torch.rand(1, generator=generator)) < config.mixup:
        b = batch["audio"].shape[0]
        perm = torch.randperm(b, generator=generator).to(batch["audio"].device)
        lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator))).beta(10, 10))
        for key in ("audio", "frames", "target"):
            batch[key] = lam * batch[key] + (1 - lam) * batch[key][perm]
        changed = True
    return changed
