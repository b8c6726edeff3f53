"""CAV-MAE preprocessing: Kaldi fbank for audio, resize + centre crop for frames.

Audio follows CAV-MAE's data loader step for step: mean removal, Kaldi fbank
(HTK-compatible mel bins, Hanning window, no energy term), zero padding or
cutting to the model's frame count, then ``(x - mean) / std`` with CAV-MAE's
dataset statistics (it divides by std, not by 2 * std as AST does).  Padding
happens before normalisation, as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi

from . import SAMPLE_RATE_HZ

__all__ = [
    "SAMPLE_RATE_HZ",
    "CAVMAE_FBANK_MEAN",
    "CAVMAE_FBANK_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FbankConfig",
    "audio_fbank",
    "audio_fbank_windows",
    "frames_to_tensor",
]

CAVMAE_FBANK_MEAN = -5.081
CAVMAE_FBANK_STD = 4.4849
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi fbank settings; the defaults are CAV-MAE's."""

    num_frames: int = 1024
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window_type: str = "hanning"
    mean: float = CAVMAE_FBANK_MEAN
    std: float = CAVMAE_FBANK_STD


def _as_tensor(waveform) -> torch.Tensor:
    wav = torch.as_tensor(np.asarray(waveform, dtype=np.float32) if not torch.is_tensor(waveform) else waveform)
    wav = wav.float()
    if wav.ndim == 2:  # [C, S]: average the channels
        wav = wav.mean(0)
    if wav.ndim != 1:
        raise ValueError(f"waveform must be [S] or [C, S], got shape {tuple(wav.shape)}")
    return wav


def audio_fbank(
    waveform,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    config: FbankConfig = FbankConfig(),
    dither: float = 0.0,
    normalize: bool = True,
) -> torch.Tensor:
    """Mono waveform ``[S]`` (or ``[C, S]``, averaged) -> fbank ``[num_frames, num_mel_bins]``.

    ``dither`` is 0 at inference, as in CAV-MAE's evaluation; training may set it.
    A waveform shorter than one analysis window is zero-padded to one window.
    """
    wav = _as_tensor(waveform)
    wav = wav - wav.mean()
    window = int(round(sample_rate_hz * config.frame_length_ms / 1000.0))
    if wav.numel() < window:
        wav = F.pad(wav, (0, window - wav.numel()))
    fbank = kaldi.fbank(
        wav.unsqueeze(0),
        htk_compat=True,
        sample_frequency=sample_rate_hz,
        use_energy=False,
        window_type=config.window_type,
        num_mel_bins=config.num_mel_bins,
        dither=dither,
        frame_length=config.frame_length_ms,
        frame_shift=config.frame_shift_ms,
    )
    missing = config.num_frames - fbank.shape[0]
    if missing > 0:
        fbank = F.pad(fbank, (0, 0, 0, missing))
    elif missing < 0:
        fbank = fbank[: config.num_frames]
    if normalize:
        fbank = (fbank - config.mean) / config.std
    return fbank


def audio_fbank_windows(
    waveform,
    num_windows: int,
    window_s: float = 1.0,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    config: FbankConfig = FbankConfig(num_frames=96),
    dither: float = 0.0,
    normalize: bool = True,
) -> torch.Tensor:
    """Split audio into ``num_windows`` consecutive windows of ``window_s`` seconds
    (AVSBench: five 1 s windows, one per annotated frame) -> ``[W, num_frames, num_mel_bins]``.

    Audio shorter than ``num_windows * window_s`` is zero-padded at the end.
    Each window gets the full CAV-MAE treatment on its own (its own mean removal).
    """
    wav = _as_tensor(waveform)
    hop = int(round(window_s * sample_rate_hz))
    needed = hop * num_windows
    if wav.numel() < needed:
        wav = F.pad(wav, (0, needed - wav.numel()))
    return torch.stack([
        audio_fbank(wav[i * hop:(i + 1) * hop], sample_rate_hz, config, dither, normalize)
        for i in range(num_windows)
    ])


def frames_to_tensor(frames, image_size: int = 224) -> torch.Tensor:
    """RGB uint8 frames ``[T, H, W, 3]`` -> normalised ``[T, 3, image_size, image_size]``.

    Bicubic (antialiased) resize of the shorter side to ``image_size``, centre
    crop, scale to [0, 1], ImageNet mean/std: CAV-MAE's evaluation transform.
    """
    x = torch.as_tensor(np.asarray(frames))
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] RGB, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    height, width = x.shape[-2:]
    scale = image_size / min(height, width)
    new_h, new_w = max(image_size, round(height * scale)), max(image_size, round(width * scale))
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    x = x[:, :, top:top + image_size, left:left + image_size].clamp_(0.0, 1.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
