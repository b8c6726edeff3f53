"""Datasets for a run: which files, which labels, and the per-visit frame draw.

Training visits each clip once per epoch and draws one of its frames from a generator
seeded by (seed, epoch, clip), so an epoch is reproducible and resumable whatever the
number of data workers.  Evaluation loads whole clips (all annotated frames).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import data_formats as formats
from config import RunConfig
from emktd.features import FbankConfig


@dataclass
class RunData:
    labels: list[str]
    train: torch.utils.data.Dataset
    eval: torch.utils.data.Dataset
    bases: list  # the underlying datasets (their manifests)

    def report(self) -> list[str]:
        return [base.manifest.report() for base in self.bases]


class Concat(torch.utils.data.Dataset):
    """Several datasets with one label list, indexed end to end."""

    def __init__(self, parts: list):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int):
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[part], index - int(self.offsets[part])

    def __getitem__(self, index: int) -> dict:
        part, local = self.locate(index)
        return part[local]


def frame_key(clip_id: str, k: int) -> str:
    """What the teacher cache is keyed by: a clip and one of its annotated frames."""
    return f"{clip_id}#{k}"


class FrameVisits(torch.utils.data.Dataset):
    """One frame per clip and visit, drawn from ``frames_per_clip`` by a (seed, epoch, clip) generator."""

    def __init__(self, clips: Concat, frames_per_clip: int, seed: int):
        self.clips, self.frames_per_clip, self.seed, self.epoch = clips, frames_per_clip, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def frame_of(self, index: int) -> int:
        return int(np.random.default_rng([self.seed, self.epoch, index]).integers(self.frames_per_clip))

    def __getitem__(self, index: int) -> dict:
        return self.sample(index, self.frame_of(index))

    def sample(self, index: int, k: int) -> dict:
        """Clip ``index`` with its annotated frame ``k`` (or an error record naming the clip)."""
        part, local = self.clips.locate(index)
        item = part.items[local]
        try:
            sample = part.load(item, [k])
        except (formats.FormatError, formats.MediaError, OSError) as exc:
            part.manifest.corrupt[item["id"]] = str(exc)
            return {"id": item["id"], "error": str(exc)}
        out = {key: (value[0] if key in ("frames", "masks", "mask_valid") else value) for key, value in sample.items()}
        out["key"] = frame_key(item["id"], k)
        return out


class AllFrames(FrameVisits):
    """Every (clip, frame) pair of the clips, optionally only those whose key ``wanted`` accepts."""

    def __init__(self, clips: Concat, frames_per_clip: int, wanted=None):
        super().__init__(clips, frames_per_clip, 0)
        pairs = []
        for index in range(len(clips)):
            part, local = clips.locate(index)
            for k in range(frames_per_clip):
                if wanted is None or wanted(frame_key(part.items[local]["id"], k)):
                    pairs.append((index, k))
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        return self.sample(*self.pairs[index])


def _capped(dataset, cap: int):
    if cap and len(dataset.items) > cap:
        dataset.items = dataset.items[:cap]
    return dataset


def ensure_embedded(root: Path, build: bool) -> Path:
    if (root / "clips.jsonl").is_file():
        return root
    if not build:
        raise SystemExit(f"{root}: the embedded benchmark is missing; build it with "
                         "`python training/benchmark.py build` or drop --build-benchmark false")
    import benchmark

    print(f"{root}: building the embedded benchmark (about 6 minutes on 2 cores)", flush=True)
    pack = benchmark.ensure_pack(None)
    benchmark.build(root, benchmark.SIZES["default"], 0, pack, benchmark.FORMATS, workers=2)
    return root


def build(config: RunConfig, audio_frames: int, num_mel_bins: int, image_size: int) -> RunData:
    """The train and eval datasets of ``config``; raises FormatError (a clear message) on a wrong layout."""
    fbank = FbankConfig(num_frames=audio_frames, num_mel_bins=num_mel_bins)
    root = Path(config.data_root)
    if config.dataset == "embedded":
        root = ensure_embedded(root, config.build_benchmark)
        labels = [formats.category_dir(c) for c in (root / "classes.txt").read_text().split("\n") if c]
        s4, ms3 = root / "avsbench" / "Single-source", root / "avsbench" / "Multi-sources"

        def split(name, cap):
            parts = [_capped(formats.AVSBenchS4Dataset(s4, name, labels, fbank, image_size), cap),
                     _capped(formats.AVSBenchMS3Dataset(ms3, name, labels, fbank, image_size), cap)]
            return parts

        train_parts, eval_parts = split("train", config.max_train_clips), split(config.eval_split, config.max_eval_clips)
    elif config.dataset in ("avsbench-s4", "avsbench-ms3"):
        cls = formats.AVSBenchS4Dataset if config.dataset == "avsbench-s4" else formats.AVSBenchMS3Dataset
        train = _capped(cls(root, "train", None, fbank, image_size), config.max_train_clips)
        labels = train.labels
        train_parts = [train]
        eval_parts = [_capped(cls(root, config.eval_split, labels, fbank, image_size), config.max_eval_clips)]
    elif config.dataset == "vggsound":
        rows = formats.read_vggsound_csv(Path(config.vggsound_csv))
        labels = sorted({r[2] for r in rows})
        common = dict(labels=labels, fbank=fbank, image_size=image_size, num_frames=config.frames_per_clip)
        train_parts = [_capped(formats.VGGSoundDataset(config.vggsound_csv, config.clip_dir, "train", **common),
                               config.max_train_clips)]
        eval_parts = [_capped(formats.VGGSoundDataset(config.vggsound_csv, config.clip_dir, config.eval_split,
                                                      **common), config.max_eval_clips)]
    else:  # cavmae-json
        common = dict(fbank=fbank, image_size=image_size, num_frames=config.frames_per_clip)
        train_parts = [_capped(formats.CavMaeJsonDataset(config.train_json, config.label_csv, **common),
                               config.max_train_clips)]
        eval_parts = [_capped(formats.CavMaeJsonDataset(config.eval_json, config.label_csv, **common),
                              config.max_eval_clips)]
        labels = train_parts[0].labels
    for part in train_parts + eval_parts:
        if len(part) == 0:
            raise formats.FormatError(f"{part.manifest.name}: no usable clips ({part.manifest.report()})")
    return RunData(labels, FrameVisits(Concat(train_parts), config.frames_per_clip, config.seed),
                   Concat(eval_parts), train_parts + eval_parts)


def clip_modes(config: RunConfig) -> dict[str, str]:
    """Embedded benchmark: clip id -> informativeness mode, for per-mode results."""
    path = Path(config.data_root) / "clips.jsonl"
    if config.dataset != "embedded" or not path.is_file():
        return {}
    return {r["id"]: r["mode"] for r in map(json.loads, path.read_text().splitlines())}
