"""What every reader shares: errors, the manifest of what was found, samples and collation,
small file readers, and the AVSBench category naming.

Readers never substitute anything for a missing or unreadable clip: missing files are found
when the reader is built and listed in its ``manifest``; a clip that fails to decode comes
back as ``{"id", "error"}`` and :func:`collate` sets it aside, so every evaluation can print
the clips it really ran on.
"""

from __future__ import annotations

import hashlib
import json
import os
import wave
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emktd.features import SAMPLE_RATE_HZ
from emktd.files import atomic_path, write_text_atomic

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


class ClipCache:
    """Decoded clips kept on disk: one uncompressed ``.npz`` per clip under a folder named by the
    decoding parameters, read back instead of decoding the clip's files again.

    A reader decodes a clip the first time it is asked for it (in whichever data-loading
    process asks; files are written to a temporary name and renamed, so processes and ranks
    can fill one cache at once).  Each entry records the size and modification time of every
    source file; an entry whose sources changed (a rebuilt dataset) is decoded again.  What
    comes back is exactly what decoding gives, so a run reads the same samples either way.
    """

    def __init__(self, root: Path, params: dict):
        text = json.dumps(params, sort_keys=True)
        self.folder = Path(root) / hashlib.sha1(text.encode()).hexdigest()[:16]
        self.params = text

    @staticmethod
    def stamp(sources: list[Path]) -> np.ndarray:
        """(size, mtime in ns) of each source file, (-1, -1) for one that does not exist."""
        found = []
        for path in sources:
            try:
                info = os.stat(path)
                found.append((info.st_size, info.st_mtime_ns))
            except FileNotFoundError:
                found.append((-1, -1))
        return np.asarray(found, dtype=np.int64)

    def entry(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()[:24]}.npz"

    def get(self, key: str, sources: list[Path], decode) -> dict[str, np.ndarray]:
        """The arrays ``decode()`` gives for the clip ``key`` made from ``sources``, from disk when
        an entry made from the same files is there."""
        path, stamp = self.entry(key), self.stamp(sources)
        try:
            with np.load(path) as stored:
                if np.array_equal(stored["_sources"], stamp):
                    return {name: stored[name] for name in stored.files if name != "_sources"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # absent, from other files, or cut short: decode again
        decoded = decode()
        self._write(path, {**decoded, "_sources": stamp})
        return decoded

    def _write(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        params = self.folder / "params.json"
        if not params.is_file():
            write_text_atomic(params, self.params + "\n")
        with atomic_path(path) as tmp:  # readers see a whole entry or none
            np.savez(tmp, **arrays)


class Reader(torch.utils.data.Dataset):
    manifest: Manifest
    items: list
    clip_cache: ClipCache | None = None  # set by readers that can keep decoded clips (see use_clip_cache)

    def use_clip_cache(self, root: Path) -> bool:
        """Keep decoded clips under ``root`` where this reader supports it (returns whether it does)."""
        return False

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
