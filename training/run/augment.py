"""Training augmentation, on the batch as the loader delivers it.

CAV-MAE's: SpecAugment (torchaudio's frequency and time masking, one mask per sample) and
mixup.  Beside them, each an option that is off by default:

* audio (``--audio-augment P``): each of five changes applies to a sample with probability P,
  on its log-mel fbank (the features the models read), undoing CAV-MAE's normalisation first:
  gain (+-6 dB), filtering (a smooth random equaliser curve over the mel bins, +-6 dB), speed
  and pitch (the time axis stretched by 0.9-1.1 and the mel axis shifted by up to 3 bins),
  reverberation (each mel energy smeared forward with an exponential tail of 50-300 ms,
  10-40 % wet) and mixing (another clip of the batch added in the energy domain at -20 to
  -10 dB, so it stays background);
* image (``--image-augment P``): colour (brightness, contrast, saturation +-25 %), scale and
  crop (a zoom of 1-1.3 at a random centre, frame and mask moved together) and blur (a
  Gaussian of sigma 0.5-1.5 pixels), each with probability P;
* modality dropout (``--modality-dropout P``): a sample loses its audio (with probability P/2:
  the fbank becomes the features of silence) or its picture (P/2: the frame becomes the
  dataset mean, and its mask no longer counts), CAV-MAE's audio-only and visual-only inputs,
  so each branch has to name the class on its own.

Every draw comes from the run's generator, whose state the checkpoint keeps, so a resumed
run augments as an uninterrupted one would."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.transforms as T

from emktd.features import CAVMAE_FBANK_MEAN, CAVMAE_FBANK_STD

from .config import RunConfig

SILENCE_LOG_ENERGY = math.log(1.1920929e-07)  # Kaldi's floor: the fbank of digital silence
FRAME_RATE_HZ = 100  # fbank frames per second (10 ms shift)


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


def _draw(shape, generator, low=0.0, high=1.0, device=None) -> torch.Tensor:
    return (low + (high - low) * torch.rand(shape, generator=generator)).to(device)


def audio_augment(audio: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Gain, filtering, speed and pitch, reverberation and mixing of fbank ``[B, T, F]``, each
    applied to a sample with probability ``p`` (see the module's docstring)."""
    b, t, f = audio.shape
    dev = audio.device
    log_mel = audio.float() * CAVMAE_FBANK_STD + CAVMAE_FBANK_MEAN
    chosen = (torch.rand(5, b, generator=generator) < p).to(dev)
    db = math.log(10) / 10  # one decibel of power in natural-log units
    gain = _draw((b, 1, 1), generator, -6, 6, dev) * db
    log_mel = log_mel + torch.where(chosen[0].view(b, 1, 1), gain, torch.zeros_like(gain))
    bins = torch.linspace(0, 1, f, device=dev)
    curve = sum(_draw((b, 1, 1), generator, -2, 2, dev) * db * torch.cos(math.pi * k * bins + _draw(
        (b, 1, 1), generator, 0, math.pi, dev)) for k in (1, 2, 3))
    log_mel = log_mel + torch.where(chosen[1].view(b, 1, 1), curve, torch.zeros_like(curve))
    stretch, shift = _draw((b,), generator, 0.9, 1.1, dev), _draw((b,), generator, -3, 3, dev)
    ys = torch.linspace(-1, 1, t, device=dev).view(1, t, 1) * stretch.view(b, 1, 1) + (stretch.view(b, 1, 1) - 1)
    xs = torch.linspace(-1, 1, f, device=dev).view(1, 1, f) + (2 * shift / max(1, f - 1)).view(b, 1, 1)
    grid = torch.stack([xs.expand(b, t, f), ys.expand(b, t, f)], dim=-1)
    warped = F.grid_sample(log_mel[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]
    log_mel = torch.where(chosen[2].view(b, 1, 1), warped, log_mel)
    tail_s, wet = _draw((b,), generator, 0.05, 0.3, dev), _draw((b,), generator, 0.1, 0.4, dev)
    lags = torch.arange(int(0.3 * FRAME_RATE_HZ * 3), device=dev).float()
    kernel = torch.exp(-lags.view(1, -1) / (tail_s.view(b, 1) * FRAME_RATE_HZ))
    kernel = wet.view(b, 1) * kernel / kernel.sum(1, keepdim=True)
    kernel[:, 0] += 1 - wet
    power = log_mel.exp().transpose(1, 2)  # [B, F, T]
    padded = F.pad(power, (kernel.shape[1] - 1, 0))
    reverberant = F.conv1d(padded.reshape(1, b * f, -1), kernel.flip(1).repeat_interleave(f, 0)[:, None],
                           groups=b * f).reshape(b, f, t).transpose(1, 2)
    log_mel = torch.where(chosen[3].view(b, 1, 1), reverberant.clamp_min(1e-10).log(), log_mel)
    other = log_mel.roll(1, dims=0)
    level = _draw((b, 1, 1), generator, -20, -10, dev) * db
    mixed = torch.logaddexp(log_mel, other + level)
    log_mel = torch.where(chosen[4].view(b, 1, 1) & torch.tensor(b > 1, device=dev), mixed, log_mel)
    return ((log_mel - CAVMAE_FBANK_MEAN) / CAVMAE_FBANK_STD).to(audio.dtype)


def image_augment(frames: torch.Tensor, masks: torch.Tensor | None, p: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Colour, scale and crop, and blur of normalised frames ``[B, 3, S, S]`` (masks ``[B, 1, S, S]``
    follow the geometry), each applied to a sample with probability ``p``."""
    from torchvision.transforms.v2 import functional as TF

    from emktd.features import IMAGENET_MEAN, IMAGENET_STD

    b, dev = frames.shape[0], frames.device
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    x = (frames.float() * std + mean).clamp(0, 1)
    chosen = (torch.rand(3, b, generator=generator) < p).to(dev)
    brightness, contrast, saturation = (_draw((b, 1, 1, 1), generator, 0.75, 1.25, dev) for _ in range(3))
    grey = (x * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
    coloured = (grey + (x - grey) * saturation)
    coloured = (coloured.mean(dim=(1, 2, 3), keepdim=True) + (coloured - coloured.mean(dim=(1, 2, 3), keepdim=True))
                * contrast) * brightness
    x = torch.where(chosen[0].view(b, 1, 1, 1), coloured.clamp(0, 1), x)
    zoom = torch.where(chosen[1], _draw((b,), generator, 1.0, 1.3, dev), torch.ones(b, device=dev))
    room = 1 - 1 / zoom
    centre = (_draw((b, 2), generator, -1, 1, dev) * room.view(b, 1))
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if masks is not None:
        masks = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    sigma = _draw((b,), generator, 0.5, 1.5, dev)
    for i in torch.nonzero(chosen[2]).flatten().tolist():
        x[i] = TF.gaussian_blur(x[i], kernel_size=[5, 5], sigma=[float(sigma[i])] * 2)
    return ((x - mean) / std).to(frames.dtype), masks


def modality_dropout(batch: dict, p: float, generator: torch.Generator) -> None:
    """In place: with probability p/2 a sample's audio becomes silence, with p/2 its frame the
    dataset mean (that sample's mask then no longer counts)."""
    b, dev = batch["audio"].shape[0], batch["audio"].device
    draw = torch.rand(b, generator=generator).to(dev)
    no_audio, no_picture = draw < p / 2, (draw >= p / 2) & (draw < p)
    silence = torch.full_like(batch["audio"], (SILENCE_LOG_ENERGY - CAVMAE_FBANK_MEAN) / CAVMAE_FBANK_STD)
    batch["audio"] = torch.where(no_audio.view(b, 1, 1), silence, batch["audio"])
    batch["frames"] = torch.where(no_picture.view(b, 1, 1, 1), torch.zeros_like(batch["frames"]), batch["frames"])
    if "mask_valid" in batch:
        batch["mask_valid"] = batch["mask_valid"] & ~no_picture.view(-1, *([1] * (batch["mask_valid"].ndim - 1)))
    batch["paired"] = batch.get("paired", torch.ones(b, dtype=torch.bool, device=dev)) & ~(no_audio | no_picture)


def augment(config: RunConfig, batch: dict, generator: torch.Generator) -> bool:
    """Every augmentation the config asks for, in place; returns whether the inputs changed."""
    changed = False
    if config.audio_augment:
        batch["audio"] = audio_augment(batch["audio"], config.audio_augment, generator)
        changed = True
    if config.image_augment:
        batch["frames"], masks = image_augment(batch["frames"], batch.get("masks"), config.image_augment, generator)
        if masks is not None:
            batch["masks"] = masks
        changed = True
    if config.modality_dropout:
        modality_dropout(batch, config.modality_dropout, generator)
        changed = True
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
