"""What every reader shares: errors, the manifest of what was found, samples and collation,
small file readers, and the AVSBench category naming.

Readers never substitute anything for a missing or unreadable clip: missing files are found
when the reader is built and listed in its ``manifest``; a clip that fails to decode comes
back as ``{"id", "error"}`` and :func:`collate` sets it aside, so every evaluation can print
the clips it really ran on.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emktd.features import SAMPLE_RATE_HZ

try:  # PyAV is needed for VGGSound's mp4 clips only; GPU machines without it read the other formats
    from emktd.media import MediaError
except ImportError:  # pragma: no cover - exercised only where PyAV is missing
    class MediaError(ValueError):
        pass


class FormatError(ValueError):
    """A dataset folder or file is not in the layout its reader expects."""


def read_wav(path: Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """PCM wav (8/16/32-bit, any channels, any rate) -> mono float32 at ``sample_rate_hz``."""
    try:
        with wave.open(str(path), "rb") as src:
            channels, width, rate = src.getnchannels(), src.getsampwidth(), src.getframerate()
            raw = src.readframes(src.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise FormatError(f"{path}: not a readable PCM wav file ({exc})") from None
    dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}.get(width)
    if dtype is None:
        raise FormatError(f"{path}: {8 * width}-bit samples; expected 8, 16 or 32-bit PCM")
    audio = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    audio = (audio - 128) / 128 if width == 1 else audio / float(2 ** (8 * width - 1))
    audio = audio.reshape(-1, channels).mean(axis=1)
    if rate != sample_rate_hz:
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(audio), rate, sample_rate_hz).numpy()
    return audio


def read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable image ({exc})") from None


def read_mask(path: Path) -> np.ndarray:
    """Binary mask PNG (mode 1, L or P) -> ``[H, W]`` float32 in {0, 1}."""
    try:
        with Image.open(path) as image:
            return (np.asarray(image.convert("L")) > 127).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable mask image ({exc})") from None


def vggsound_ytid(split: str, index: int) -> str:
    """An 11-character id in YouTube's alphabet for benchmark clip ``index`` of ``split``."""
    return f"emk{split[:2]}{index:06d}"


def category_dir(label: str) -> str:
    """AVSBench names categories with underscores (e.g. 'female_singing')."""
    return label.replace(" ", "_").replace(",", "")


@dataclass
class Manifest:
    """What a loader found: rows in the metadata, files missing, clips that failed to decode."""

    name: str
    rows: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return self.rows - len(self.missing)

    def report(self, used: int | None = None) -> str:
        used = self.available - len(self.corrupt) if used is None else used
        text = (f"{self.name}: {self.rows} clips listed, {len(self.missing)} missing, "
                f"{len(self.corrupt)} unreadable, {used} used")
        if self.missing:
            text += f"; missing e.g. {', '.join(self.missing[:5])}"
        if self.corrupt:
            first = next(iter(self.corrupt.items()))
            text += f"; unreadable e.g. {first[0]} ({first[1]})"
        return text

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"name": self.name, "rows": self.rows, "missing": self.missing,
                                    "corrupt": self.corrupt}, indent=1) + "\n")


def collate(batch: list[dict]) -> tuple[dict | None, list[dict]]:
    """Stack the good samples; return ``(batch or None, [{"id", "error"}, ...])``."""
    errors = [s for s in batch if "error" in s]
    good = [s for s in batch if "error" not in s]
    if not good:
        return None, errors
    out = {}
    for key in good[0]:
        values = [s[key] for s in good]
        out[key] = torch.stack(values) if torch.is_tensor(values[0]) else values
    return out, errors


class Reader(torch.utils.data.Dataset):
    manifest: Manifest
    items: list

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        try:
            return self.load(item)
        except (FormatError, MediaError, OSError) as exc:
            self.manifest.corrupt[item["id"]] = str(exc)
            return {"id": item["id"], "error": str(exc)}

    def load(self, item) -> dict:
        raise NotImplementedError


def multi_hot(label_ids: list[int], num_classes: int) -> torch.Tensor:
    target = torch.zeros(num_classes)
    target[label_ids] = 1.0
    return target


def pick_frames(frames: np.ndarray, policy: str, rng: np.random.Generator | None) -> np.ndarray:
    if policy == "all":
        return frames
    if policy == "middle":
        return frames[len(frames) // 2:len(frames) // 2 + 1]
    if policy == "random":
        k = int((rng or np.random.default_rng()).integers(len(frames)))
        return frames[k:k + 1]
    raise ValueError(f"unknown frame policy {policy!r}; expected 'all', 'middle' or 'random'")
