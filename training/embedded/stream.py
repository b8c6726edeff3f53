"""The pretraining stream: freshly composed clips from the benchmark's train-side material.

The benchmark's analogue of CAV-MAE's AudioSet pretraining: where CAV-MAE first
sees two million clips of other material, a teacher here first sees clips that
no split holds, composed on the fly by the same synthesis as the benchmark
(:func:`.synth.synthesize`) from the training instances, the training
backgrounds and the training noises only, so it never meets a held-out
recording, picture, background or noise.  Every epoch composes new clips: clip
``i`` of epoch ``e`` is drawn from a generator seeded by (seed, e, i), so an
epoch is reproducible and a resumed run sees what an uninterrupted one would.
Only the annotated frame a visit asks for is rendered, and nothing goes through
an mp4: the reader hands the loader what the AVSBench readers hand it (fbank,
frame, mask, target).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from emktd.features import FbankConfig, audio_fbank, frames_to_tensor
from training.readers.common import FormatError, Manifest, Reader, category_dir, multi_hot

from . import sources
from .synth import MODE_WEIGHTS, MODES, SynthConfig, synthesize

STREAM_KEY = 0x5EED  # keeps the stream's generators apart from the fixed splits'


def synth_config(settings: dict) -> SynthConfig:
    """The benchmark's synthesis settings from its benchmark.json (lists back to tuples)."""
    kinds = {f.name: f.type for f in fields(SynthConfig)}
    return SynthConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in kinds})


class StreamReader(Reader):
    """``clips`` freshly composed training clips per epoch, with the benchmark's labels."""

    def __init__(self, root: Path, labels: list[str], fbank: FbankConfig, image_size: int, clips: int, seed: int,
                 pack_path: Path | None = None):
        from .build import eligible_classes, ensure_pack

        root = Path(root)
        summary_path = root / "benchmark.json"
        if not summary_path.is_file():
            raise FormatError(f"{summary_path}: missing; the stream composes clips of a built embedded benchmark")
        summary = json.loads(summary_path.read_text())
        if pack_path is None and summary.get("pack") and Path(summary["pack"]).is_file():
            pack_path = Path(summary["pack"])  # the pack the benchmark was built from, where it still is
        self.pack_path = pack_path = ensure_pack(pack_path)
        self.pack = sources.load_pack(pack_path)
        # A pack rebuilt from the same packages with the same recipe holds the same material
        # (its file differs only in the zip's timestamps), so the recipe and the classes are compared.
        recipe = summary.get("pack_recipe", self.pack.meta.get("recipe"))
        if ([category_dir(c) for c in self.pack.classes[:len(labels)]] != list(labels)
                or self.pack.meta.get("recipe") != recipe):
            raise FormatError(f"{pack_path}: not a source pack of the recipe and classes {root} was built with; "
                              "rebuild the benchmark (python -m training.embedded.build build)")
        self.labels, self.fbank, self.image_size, self.seed = list(labels), fbank, image_size, seed
        self.config = synth_config(summary.get("config", {}))
        self.eligible = eligible_classes(self.pack, "train", "seen", len(labels))
        self.items = [{"id": f"stream{i:06d}", "index": i} for i in range(clips)]
        self.manifest = Manifest("stream", rows=clips)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clip(self, index: int, frames: list[int] | None = None):
        """Clip ``index`` of the current epoch (its annotated ``frames`` only, if given)."""
        rng = np.random.default_rng([self.seed, STREAM_KEY, self.epoch, index])
        mode = MODES[int(rng.choice(len(MODES), p=MODE_WEIGHTS))]
        classes = [self.eligible[int(c)] for c in rng.choice(len(self.eligible), size=3, replace=False)]
        return synthesize(self.pack, "train", index, self.seed, self.config, mode=mode, classes=classes,
                          part="seen", rng=rng, only=frames)

    def load(self, item, frames: list[int] | None = None) -> dict:
        ks = list(range(self.config.annotated_frames)) if frames is None else frames
        clip = self.clip(item["index"], ks)
        masks = torch.from_numpy(clip.masks).float()[:, None]
        masks = torch.nn.functional.interpolate(masks, size=(self.image_size, self.image_size), mode="nearest")
        audio = audio_fbank(torch.from_numpy(clip.audio), self.config.sample_rate_hz, self.fbank)
        return {"id": item["id"], "audio": audio, "frames": frames_to_tensor(clip.frames, self.image_size),
                "masks": masks, "mask_valid": torch.ones(len(ks), dtype=torch.bool),
                "target": multi_hot(clip.labels, len(self.labels))}


POOL_KEY = 0x9001  # keeps the pool's generators apart from the stream's


class PoolReader(StreamReader):
    """``clips`` freshly composed unlabelled clips per epoch from the transfer pool (:mod:`.pool`):
    the stream's synthesis, with pool pictures as the objects and pool sounds as their sounds
    (paired at random for each clip), over the benchmark's training backgrounds, distractors
    and noises.  A clip carries no target and no mask (``mask_valid`` False): a student learns
    from it through its teacher's outputs only.  Its id names the epoch, as its content changes
    with it."""

    def __init__(self, root: Path, labels: list[str], fbank: FbankConfig, image_size: int, clips: int, seed: int,
                 pack_path: Path | None = None, pool_path: Path | None = None):
        from .pool import PoolError, ensure_pool, load_pool

        super().__init__(root, labels, fbank, image_size, clips, seed, pack_path)
        try:
            pool_path = pool_path or ensure_pool(self.pack_path)
            self.pool = load_pool(pool_path)
        except PoolError as exc:
            raise FormatError(str(exc)) from None
        if self.pool.meta.get("pack_recipe") != self.pack.meta.get("recipe"):
            raise FormatError(f"{pool_path}: a pool pack of another source pack recipe; rebuild it "
                              "(python -m training.embedded.build pool)")
        if len(self.pool.pictures) < 3 or not self.pool.sounds:
            raise FormatError(f"the transfer pool holds {len(self.pool.pictures)} pictures and {len(self.pool.sounds)} "
                              "sounds; it needs at least 3 and 1")
        self.manifest = Manifest("pool", rows=clips)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.items = [{"id": f"pool-e{epoch}-{i:06d}", "index": i} for i in range(len(self.items))]

    def clip(self, index: int, frames: list[int] | None = None):
        rng = np.random.default_rng([self.seed, POOL_KEY, self.epoch, index])
        mode = MODES[int(rng.choice(len(MODES), p=MODE_WEIGHTS))]
        pictures = rng.choice(len(self.pool.pictures), size=3, replace=False)
        sounds = rng.integers(len(self.pool.sounds), size=3)
        objects = [{"name": self.pool.pictures[p]["origin"], "class": k, "split": "train",
                    "image": self.pool.pictures[p]["image"], "sound": self.pool.sounds[s]["sound"]}
                   for k, (p, s) in enumerate(zip(pictures, sounds))]
        view = sources.Pack(["pool object 1", "pool object 2", "pool object 3"], objects, self.pack.distractors,
                            self.pack.backgrounds, self.pack.noises, self.pack.meta)
        return synthesize(view, "train", index, self.seed, self.config, mode=mode, classes=[0, 1, 2], part="seen",
                          rng=rng, only=frames)

    def load(self, item, frames: list[int] | None = None) -> dict:
        ks = list(range(self.config.annotated_frames)) if frames is None else frames
        clip = self.clip(item["index"], ks)
        audio = audio_fbank(torch.from_numpy(clip.audio), self.config.sample_rate_hz, self.fbank)
        return {"id": item["id"], "audio": audio, "frames": frames_to_tensor(clip.frames, self.image_size),
                "masks": torch.zeros(len(ks), 1, self.image_size, self.image_size),
                "mask_valid": torch.zeros(len(ks), dtype=torch.bool),
                "target": torch.zeros(len(self.labels))}
