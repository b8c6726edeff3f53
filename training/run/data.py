"""A run's data: its parts built by the dataset registry, the per-visit frame draw, the order.

Training visits each clip once per epoch and draws one of its frames from a generator
seeded by (seed, epoch, clip), so an epoch is reproducible and resumable whatever the
number of data workers.  Evaluation loads whole clips (all annotated frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from emktd.features import FbankConfig
from training.readers.common import FormatError, MediaError, collate

from .config import RunConfig
from .datasets import DATASET_ENTRIES
from .distributed import world


@dataclass
class RunData:
    labels: list[str]
    train: torch.utils.data.Dataset
    eval: torch.utils.data.Dataset
    bases: list  # the underlying datasets (their manifests)

    clip_cache: str = ""  # where decoded clips are kept, and which parts decode every time
    pool: "FrameVisits | None" = None  # unlabelled clips (the transfer pool), teacher targets only

    def report(self) -> list[str]:
        return [base.manifest.report() for base in self.bases] + ([self.clip_cache] if self.clip_cache else [])

    @property
    def fitting(self) -> torch.utils.data.Dataset:
        """What a run trains on: the labelled training clips, and the pool's after them."""
        return self.train if self.pool is None else WithPool(self.train, self.pool)


class WithPool(torch.utils.data.Dataset):
    """The labelled training visits, then the pool's; every sample says which it is (``labelled``),
    so that the task losses read only the labelled ones and the teacher cache keeps only theirs."""

    def __init__(self, train: "FrameVisits", pool: "FrameVisits"):
        self.train, self.pool = train, pool

    def set_epoch(self, epoch: int) -> None:
        self.train.set_epoch(epoch)
        self.pool.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.train) + len(self.pool)

    def __getitem__(self, index: int) -> dict:
        labelled = index < len(self.train)
        sample = self.train[index] if labelled else self.pool[index - len(self.train)]
        if "error" not in sample:
            sample["labelled"] = torch.tensor(labelled)
        return sample


class Concat(torch.utils.data.Dataset):
    """Several readers with one label list, indexed end to end; ``names`` name the parts."""

    def __init__(self, parts: list, names: list[str] | None = None):
        self.parts = parts
        self.names = names or ["all"] * len(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int):
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[part], index - int(self.offsets[part])

    def part_name(self, index: int) -> str:
        return self.names[int(np.searchsorted(self.offsets, index, side="right") - 1)]

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
        for part in self.clips.parts:  # a stream composes new clips every epoch
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

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
        except (FormatError, MediaError, OSError) as exc:
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


def build(config: RunConfig, audio_frames: int, num_mel_bins: int, image_size: int) -> RunData:
    """The train and eval data of ``config``, from its dataset's registry entry; raises FormatError
    (a clear message) on a wrong layout or an empty part."""
    fbank = FbankConfig(num_frames=audio_frames, num_mel_bins=num_mel_bins)
    parts = DATASET_ENTRIES[config.dataset].build(config, fbank, image_size)
    readers = [reader for _, reader in parts.train + parts.eval]
    for reader in readers:
        if len(reader) == 0:
            raise FormatError(f"{reader.manifest.name}: no usable clips ({reader.manifest.report()})")
    train = Concat([r for _, r in parts.train], [n for n, _ in parts.train])
    pool = None
    if parts.pool is not None:
        pool = FrameVisits(Concat([parts.pool], ["pool"]), config.frames_per_clip, config.seed + 1)
        readers.append(parts.pool)
    return RunData(parts.labels, FrameVisits(train, config.frames_per_clip, config.seed),
                   Concat([r for _, r in parts.eval], [n for n, _ in parts.eval]), readers,
                   _use_clip_cache(config, readers), pool)


def _use_clip_cache(config: RunConfig, readers: list) -> str:
    """Point the readers at --clip-cache-dir; a line saying where, and which readers decode every time."""
    if not config.clip_cache_dir:
        return ""
    root = config.path(config.clip_cache_dir)
    uncached = [reader.manifest.name for reader in readers if not reader.use_clip_cache(root)]
    return (f"decoded clips kept in {root}"
            + (f" (not for {', '.join(uncached)}: decoded every time)" if uncached else ""))


def clip_modes(config: RunConfig) -> dict[str, str]:
    """clip id -> informativeness mode, where the dataset records one (the embedded benchmark)."""
    return DATASET_ENTRIES[config.dataset].modes(config)


def clip_groups(config: RunConfig) -> dict[str, str]:
    """clip id -> evaluation group (seen or new instances), where the dataset records one."""
    return DATASET_ENTRIES[config.dataset].group_of(config)


# ---------------------------------------------------------------- order and batches

class ResumableSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, sharded over ranks, that can start part-way through."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.epoch, self.start = 0, 0
        self.rank, self.size = world()

    def set_position(self, epoch: int, start_batch: int, batch_size: int) -> None:
        self.epoch, self.start = epoch, start_batch * batch_size

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        per_rank = math.ceil(self.length / self.size)
        order += order[: per_rank * self.size - len(order)]  # pad so every rank gets as many
        return order[self.rank::self.size]

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return max(0, math.ceil(self.length / self.size) - self.start)


def loader(dataset, batch_size: int, sampler=None, workers: int = 0) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=collate, persistent_workers=False)


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
