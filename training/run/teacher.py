"""The frozen teacher: loading it, its outputs (cached, since it never changes), and the cache.

The teacher is in eval mode with gradients off throughout.  Its outputs for unaugmented
inputs are kept by :class:`TeacherCache`, in memory and optionally on disk across runs.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn

from emktd.files import atomic_path
from emktd.hub import ModelLoadError, load_pretrained
from emktd.models import MODALITIES, AVTransformer, load_cavmae_checkpoint

from .config import RunConfig
from .data import ResumableSampler, loader, to_device


def load_teacher(config: RunConfig, device) -> AVTransformer:
    """The teacher of ``config`` (a model folder, a Hub repo id or a CAV-MAE .pth), frozen, on ``device``."""
    path = config.path(config.teacher)
    if config.teacher == RunConfig.teacher and not path.exists():
        raise SystemExit(
            f"no teacher at {path}. Train one with `python training/distill.py --task teacher --out runs/teacher` "
            "(about an hour on 2 CPU cores) and copy runs/teacher/student to weights/teacher, or pass "
            "--teacher with a model folder, a Hub repo id or an official CAV-MAE .pth")
    try:
        if path.suffix in (".pth", ".pt") or (path.is_file() and path.suffix == ".safetensors"):
            if not path.is_file():
                raise SystemExit(f"{path}: no such CAV-MAE checkpoint")
            teacher = load_cavmae_checkpoint(path, **config.decoder_overrides())
        else:
            teacher = load_pretrained(path if path.exists() else config.teacher)
    except (ModelLoadError, ValueError) as exc:
        raise SystemExit(f"teacher: {exc}") from None
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class TeacherCache:
    """Teacher outputs (logits and tokens) for unaugmented inputs, in float16.

    In memory up to ``max_gb`` (later keys are not kept there); with a ``folder``, also one
    safetensors file per key on disk, which later runs with the same teacher and data reuse
    (the folder's name must identify both: :func:`cache_folder`).  A resumed run recomputes in
    other batches what the interrupted run had not written; batched matmuls can differ in the
    last bit with the batch, so with the cache on, a resumed run matches an uninterrupted one
    to rounding, not bit for bit.
    """

    def __init__(self, max_gb: float, folder: str | Path | None = None):
        self.budget, self.used = int(max_gb * 2**30), 0
        self.store: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = self.misses = 0
        self.folder = Path(folder) if folder else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / (key.replace("/", "_").replace("#", "_") + ".safetensors")

    def _keep(self, key: str, entry: dict[str, torch.Tensor]) -> None:
        size = sum(t.numel() * 2 for t in entry.values())
        if self.used + size <= self.budget:
            self.store[key] = entry
            self.used += size

    def _load(self, key: str) -> dict[str, torch.Tensor] | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.is_file():
            return None
        try:
            entry = load_file(str(path))
        except (SafetensorError, OSError):
            return None  # a damaged file is recomputed and rewritten
        self._keep(key, entry)
        return entry

    def drop_memory(self) -> None:
        """Forget the in-memory copies (the disk keeps them); memory is then kept for what is read back."""
        self.store.clear()
        self.used = 0

    def has(self, key: str) -> bool:
        return key in self.store or (self.folder is not None and self._path(key).is_file())

    def get(self, keys: list[str | None]) -> list[dict[str, torch.Tensor] | None]:
        """The cached outputs of ``keys``; None for a key not cached, and for a None key (a sample
        that is never cached: a transfer-pool clip, new every epoch)."""
        found = [self.store.get(k) if k is not None else None for k in keys]
        if self.folder is not None:
            found = [f if f is not None or k is None else self._load(k) for f, k in zip(found, keys)]
        hits = sum(f is not None for f in found)
        self.hits, self.misses = self.hits + hits, self.misses + sum(k is not None for k in keys) - hits
        return found

    def put(self, keys: list[str | None], values: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        for i, key in enumerate(keys):
            if key is None:
                continue
            entry = {name: v[i].detach().to("cpu", torch.float16).contiguous() for name, v in values.items()}
            if self.folder is not None:
                path = self._path(key)
                with atomic_path(path) as tmp:  # readers see a whole file or none
                    save_file(entry, str(tmp))
            self._keep(key, entry)


def state_digest(model: nn.Module, extra: bytes = b"") -> str:
    """sha256 over a model's parameter names and values (and ``extra``)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(extra)
    return digest.hexdigest()


def cache_folder(root: str | Path, teacher: AVTransformer, config: RunConfig, identity: dict) -> Path:
    """``root/<digest>``: the digest covers the teacher's weights and everything that shapes its inputs."""
    inputs = json.dumps({"dataset": config.dataset, "data_root": str(config.path(config.data_root).resolve()),
                         **identity},
                        sort_keys=True)
    return Path(root) / state_digest(teacher, inputs.encode())[:16]


FILL_LOCK = ".filling.lock"


@contextmanager
def filling(folder: str | Path):
    """Held while a run fills the cache ``folder``: runs that share it (a runner's parallel runs)
    fill it one at a time, so each computes only what the runs before it left missing, instead
    of all of them computing every output at once.  Without advisory file locks (Windows) runs
    are not kept apart; the cache stays whole (each file is written atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / FILL_LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{folder}: another run is filling this teacher cache; waiting for it", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fill_cache(config: RunConfig, teacher: AVTransformer, dataset, cache: TeacherCache, device,
               progress: bool) -> int:
    """Run the teacher once over every pair of ``dataset`` (data.AllFrames) into the cache; returns the count."""
    from tqdm import tqdm

    teacher.eval()
    data_loader = loader(dataset, config.batch_size, ResumableSampler(len(dataset), 0, shuffle=False),
                         config.workers)
    done = 0
    for batch, _ in tqdm(data_loader, desc="teacher cache", disable=not progress):
        if batch is None:
            continue
        batch = to_device(batch, device)
        teacher_outputs(teacher, None, batch["audio"], batch["frames"], 0.0, batch["key"], cache)
        done += len(batch["key"])
    return done


def teacher_outputs(teacher: AVTransformer, monitor, audio, frames, lam: float, keys=None,
                    cache: TeacherCache | None = None) -> dict[str, torch.Tensor]:
    """Teacher logits and tokens and (with a monitor, a probes.RunMonitor) EM weights; with a cache
    and keys, only the samples not cached yet go through the teacher.  The weights are computed
    from the tokens each time: the cache holds the teacher's outputs only, whatever monitor a run
    trains.  ``keys`` (the frames' keys) also tell a cross-fitted monitor each sample's fold."""
    use_cache = cache is not None and keys is not None
    found = cache.get(keys) if use_cache else [None] * audio.shape[0]
    missing = [i for i, f in enumerate(found) if f is None]
    fresh = {}
    if missing:
        index = torch.tensor(missing, device=audio.device)
        with torch.no_grad():
            out = teacher(audio[index], frames[index])
            fresh = {"logits": out.logits.float(), **{m: t.float() for m, t in out.tokens().items()}}
            if cache is not None:
                # Fresh outputs are rounded as cached ones are, so a batch mixes alike values.
                fresh = {k: v.half().float() for k, v in fresh.items()}
        if use_cache:
            cache.put([keys[i] for i in missing], fresh)
    if len(missing) == len(found):
        result = fresh
    else:
        names = fresh.keys() if fresh else found[0].keys()
        position = {i: j for j, i in enumerate(missing)}
        result = {name: torch.stack([fresh[name][position[i]] if f is None
                                     else f[name].to(audio.device, torch.float32)
                                     for i, f in enumerate(found)]) for name in names}
    if monitor is not None:
        for m, w in monitor.weights({m: result[m] for m in MODALITIES}, lam, keys).items():
            result[f"w_{m}"] = w
    return result
