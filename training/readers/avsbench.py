"""AVSBench-object: Single-source (S4) and Multi-sources (MS3) folders of frames, masks,
audio_wav and audio_log_mel with a meta csv (see docs/datasets.md for the layouts)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import torch

from emktd.features import SAMPLE_RATE_HZ, FbankConfig, audio_fbank, audio_fbank_windows, frames_to_tensor

from .common import ClipCache, FormatError, Manifest, Reader, multi_hot, read_mask, read_rgb, read_wav


def s4_paths(root: Path, split: str, category: str, name: str, frames: int = 5) -> dict:
    """Where AVSBench's Single-source layout keeps one clip's files."""
    data = Path(root) / "s4_data"
    return {"frames": [data / "visual_frames" / split / category / name / f"{name}_{k}.png" for k in range(1, frames + 1)],
            "masks": [data / "gt_masks" / split / category / name / f"{name}_{k}.png" for k in range(1, frames + 1)],
            "wav": data / "audio_wav" / split / category / f"{name}.wav",
            "log_mel": data / "audio_log_mel" / split / category / f"{name}.pkl"}


def ms3_paths(root: Path, split: str, vid: str, frames: int = 5) -> dict:
    """Where AVSBench's Multi-sources layout keeps one clip's files (frames are not split by split)."""
    data = Path(root) / "ms3_data"
    return {"frames": [data / "visual_frames" / vid / f"{vid}.mp4_{k}.png" for k in range(1, frames + 1)],
            "masks": [data / "gt_masks" / split / vid / f"{vid}_{k}.png" for k in range(1, frames + 1)],
            "wav": data / "audio_wav" / split / f"{vid}.wav",
            "log_mel": data / "audio_log_mel" / split / f"{vid}.pkl"}


class _AVSBench(Reader):
    """Shared AVSBench reading: five frames, five masks (S4 train: only the first), the raw wav.

    ``audio_windows=None`` gives the fbank of the whole clip ``[T, F]``; an int
    gives that many one-second windows ``[W, T, F]`` (fbank models read audio_wav).
    Samples: frames ``[5, 3, S, S]``, masks ``[5, 1, S, S]``, mask_valid ``[5]`` bool.
    """

    FRAMES = 5

    def load(self, item, frames: list[int] | None = None) -> dict:
        """The clip with the given annotated frames (0-based; default all five)."""
        ks = list(range(self.FRAMES)) if frames is None else frames
        if self.clip_cache is None:
            found = self.decode(item, ks)
        else:  # the cache keeps whole clips: all five frames decoded once (any unreadable file fails it)
            found = self.clip_cache.get(str(item["wav"]), [*item["frames"], *item["masks"], item["wav"]],
                                        lambda: self.decode(item, list(range(self.FRAMES))))
            found = {k: (v[ks] if k in ("pictures", "masks", "mask_valid") else v) for k, v in found.items()}
        if frames is None and not found["mask_valid"].any():
            raise FormatError(f"{item['masks'][0]}: no ground-truth mask for this clip")
        return {"id": item["id"], "audio": torch.from_numpy(found["audio"]),
                "frames": frames_to_tensor(found["pictures"], self.image_size),
                "masks": torch.from_numpy(found["masks"]).float()[:, None],
                "mask_valid": torch.from_numpy(found["mask_valid"]),
                "target": multi_hot(item["labels"], len(self.labels))}

    def decode(self, item, frames: list[int]) -> dict[str, np.ndarray]:
        """The files of the given frames decoded, before any tensor transform: pictures ``[n, H, W, 3]``
        uint8, masks ``[n, S, S]`` uint8 in {0, 1} at the image size (zero where a frame has none),
        mask_valid ``[n]`` bool, and the clip's audio features (float32)."""
        pictures = np.stack([read_rgb(item["frames"][k]) for k in frames])
        masks = np.zeros((len(frames), self.image_size, self.image_size), dtype=np.uint8)
        valid = np.zeros(len(frames), dtype=bool)
        for i, k in enumerate(frames):
            path = item["masks"][k]
            if path.is_file():
                mask = torch.from_numpy(read_mask(path))[None, None]
                masks[i] = torch.nn.functional.interpolate(mask, size=(self.image_size, self.image_size),
                                                           mode="nearest")[0, 0].numpy()
                valid[i] = True
        wav = read_wav(item["wav"])
        audio = (audio_fbank(wav, SAMPLE_RATE_HZ, self.fbank) if self.audio_windows is None
                 else audio_fbank_windows(wav, self.audio_windows, 1.0, SAMPLE_RATE_HZ, self.fbank))
        return {"pictures": pictures, "masks": masks, "mask_valid": valid, "audio": audio.numpy()}

    def use_clip_cache(self, root: Path) -> bool:
        self.clip_cache = ClipCache(root, {"reader": "avsbench", "fbank": dataclasses.asdict(self.fbank),
                                           "image_size": self.image_size, "audio_windows": self.audio_windows})
        return True

    def _read_meta(self, root: Path, meta: str, data: str, columns: tuple[str, ...]) -> list[dict]:
        if not (root / meta).is_file() or not (root / data).is_dir():
            raise FormatError(f"{root}: expected {meta} and {data}/ (AVSBench layout)")
        with open(root / meta, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise FormatError(f"{root / meta}: expected columns {', '.join(columns)}")
            return list(reader)

    def _collect(self, name: str, split: str, rows: list[dict], make_item, needs_first_mask: bool) -> None:
        """Items of ``split`` whose files are all there; the others are listed as missing."""
        self.manifest = Manifest(name)
        self.items = []
        for row in rows:
            if row["split"] != split:
                continue
            self.manifest.rows += 1
            item = make_item(row)
            complete = all(p.is_file() for p in item["frames"]) and item["wav"].is_file() and (
                not needs_first_mask or item["masks"][0].is_file())
            if complete:
                self.items.append(item)
            else:
                self.manifest.missing.append(item["id"])


class S4Dataset(_AVSBench):
    """``Single-source/``: s4_meta_data.csv (name,...,category,split) and s4_data/{visual_frames,gt_masks,
    audio_wav}/<split>/<category>/<name>..."""


    def __init__(self, root: Path, split: str, labels: list[str] | None = None, fbank: FbankConfig = FbankConfig(),
                 image_size: int = 224, audio_windows: int | None = None):
        root = Path(root)
        rows = self._read_meta(root, "s4_meta_data.csv", "s4_data", ("name", "category", "split"))
        self.labels = labels if labels is not None else sorted({r["category"] for r in rows})
        self._collect(f"AVSBench S4 {split} ({root})", split, rows, lambda row: {
            "id": row["name"], "labels": [self.labels.index(row["category"])],
            **s4_paths(root, split, row["category"], row["name"])}, needs_first_mask=True)
        self.fbank, self.image_size, self.audio_windows = fbank, image_size, audio_windows


class MS3Dataset(_AVSBench):
    """``Multi-sources/``: ms3_meta_data.csv (video_id,split), ms3_data/visual_frames/<id>/<id>.mp4_<k>.png
    (not split by split), gt_masks/<split>/<id>/<id>_<k>.png (palette), audio_wav/<split>/<id>.wav.

    MS3 has no category column; this project's benchmark adds an optional ``labels``
    column (';'-separated class names) that real MS3 files lack.
    """


    def __init__(self, root: Path, split: str, labels: list[str] | None = None, fbank: FbankConfig = FbankConfig(),
                 image_size: int = 224, audio_windows: int | None = None):
        root = Path(root)
        rows = self._read_meta(root, "ms3_meta_data.csv", "ms3_data", ("video_id", "split"))
        names = sorted({n for r in rows for n in (r.get("labels") or "").split(";") if n})
        self.labels = labels if labels is not None else names
        self._collect(f"AVSBench MS3 {split} ({root})", split, rows, lambda row: {
            "id": row["video_id"], "labels": [self.labels.index(n) for n in (row.get("labels") or "").split(";") if n],
            **ms3_paths(root, split, row["video_id"])}, needs_first_mask=False)
        self.fbank, self.image_size, self.audio_windows = fbank, image_size, audio_windows
