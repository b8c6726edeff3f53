"""One epoch of training, evaluation, probe training: the loops, and the losses they sum.

The teacher is frozen and in eval mode throughout; its outputs for unaugmented
inputs are cached (it never changes).  Every distillation method is a term
computed by :class:`Distiller` from teacher and student outputs, selected by name.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from config import RunConfig
from data_formats import collate
from emktd import distill as D
from emktd.models import AVTransformer
from metrics import SegmentationMeter, classification_metrics


# ---------------------------------------------------------------- distributed helpers

def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def reduce_mean(values: dict[str, float], device) -> dict[str, float]:
    """Average scalars over ranks (a no-op on one process)."""
    rank, size = world()
    if size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / size for k, v in zip(keys, t.tolist())}


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") else module


# ---------------------------------------------------------------- data order

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


# ---------------------------------------------------------------- teacher outputs

TOKEN_KEYS = ("audio", "visual", "fused")


def outputs(out) -> dict[str, torch.Tensor]:
    d = {"logits": out.logits, **out.tokens()}
    if out.mask_logits is not None:
        d["masks"] = out.mask_logits
    return d


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

    def get(self, keys: list[str]) -> list[dict[str, torch.Tensor] | None]:
        found = [self.store.get(k) for k in keys]
        if self.folder is not None:
            found = [f if f is not None else self._load(k) for f, k in zip(found, keys)]
        hits = sum(f is not None for f in found)
        self.hits, self.misses = self.hits + hits, self.misses + len(keys) - hits
        return found

    def put(self, keys: list[str], values: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        for i, key in enumerate(keys):
            entry = {name: v[i].detach().to("cpu", torch.float16).contiguous() for name, v in values.items()}
            if self.folder is not None:
                path = self._path(key)
                tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
                save_file(entry, str(tmp))
                os.replace(tmp, path)  # atomic: readers see a whole file or none
            self._keep(key, entry)


def state_digest(model: nn.Module, extra: bytes = b"") -> str:
    """sha256 over a model's parameter names and values (and ``extra``)."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(extra)
    return digest.hexdigest()


def cache_folder(root: str | Path, teacher: AVTransformer, config: RunConfig, identity: dict) -> Path:
    """``root/<digest>``: the digest covers the teacher's weights and everything that shapes its inputs."""
    inputs = json.dumps({"dataset": config.dataset, "data_root": str(Path(config.data_root).resolve()), **identity},
                        sort_keys=True)
    return Path(root) / state_digest(teacher, inputs.encode())[:16]


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
    """Teacher logits and tokens and (with a monitor) EM weights; with a cache and keys, only the
    samples not cached yet go through the teacher.  The weights are computed from the tokens
    each time: the cache holds the teacher's outputs only, whatever monitor a run trains."""
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
        for m, w in monitor.weights({m: result[m] for m in TOKEN_KEYS}, lam).items():
            result[f"w_{m}"] = w
    return result


# ---------------------------------------------------------------- the trained module and the losses

class Trainee(nn.Module):
    """The student plus what a method trains beside it (FitNets' projections), so DDP sees one module."""

    def __init__(self, student: AVTransformer, teacher_dim: int | None, fitnets: bool):
        super().__init__()
        self.student = student
        dim = student.config.embed_dim
        self.projections = nn.ModuleDict({m: D.FitNetsProjection(dim, teacher_dim) for m in TOKEN_KEYS}) \
            if fitnets and teacher_dim else None

    def forward(self, audio, frames) -> dict[str, torch.Tensor]:
        out = outputs(self.student(audio, frames))
        if self.projections is not None:
            for m in TOKEN_KEYS:
                out[f"proj_{m}"] = self.projections[m](out[m])
        return out


@dataclass
class Grids:
    teacher: dict
    student: dict


def soft_cross_entropy(logits, target, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against the multi-hot target normalised to a distribution (with label smoothing)."""
    p = target / target.sum(dim=1, keepdim=True).clamp_min(1e-8)
    if smoothing:
        p = p * (1 - smoothing) + smoothing / p.shape[1]
    return -(p * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def task_losses(config: RunConfig, s: dict, batch: dict) -> dict[str, torch.Tensor]:
    terms = {}
    if config.objective in ("multitask", "classification"):
        terms["cls"] = soft_cross_entropy(s["logits"], batch["target"], config.label_smoothing)
    if config.objective in ("multitask", "segmentation") and "masks" in s and "masks" in batch:
        valid = batch["mask_valid"]
        if valid.any():
            pred = F.interpolate(s["masks"][valid].float(), size=batch["masks"].shape[-2:], mode="bilinear",
                                 align_corners=False)
            terms["seg"] = F.binary_cross_entropy_with_logits(pred, batch["masks"][valid])
        else:
            terms["seg"] = s["masks"].sum() * 0.0
    return terms


def distill_terms(config: RunConfig, t: dict, s: dict, grids: Grids) -> dict[str, torch.Tensor]:
    """The method's terms, unweighted, plus 'distill' = beta * (the method's term)."""
    base, with_kd = config.distill_method()
    terms = {}
    if with_kd and config.objective != "segmentation":
        terms["kd"] = D.kd_loss(t["logits"], s["logits"], config.kd_temperature)
    tg, sg = grids.teacher, grids.student
    if base in ("ktd", "emktd"):
        weights = {m: t[f"w_{m}"] for m in TOKEN_KEYS} if base == "emktd" else None
        total, per = D.em_ktd_loss({m: t[m] for m in TOKEN_KEYS}, {m: s[m] for m in TOKEN_KEYS}, weights,
                                   kernel=config.kernel, gamma=config.gamma, teacher_grids=tg, student_grids=sg,
                                   degree=config.degree, coef0=config.coef0)
        terms.update({f"ktd_{m}": v for m, v in per.items()})
        method_term = total
    elif base == "at":
        method_term = sum(D.at_loss(t[m], s[m], tg[m], sg[m]) for m in TOKEN_KEYS)
    elif base == "spkd":
        method_term = sum(D.spkd_loss(t[m], s[m]) for m in TOKEN_KEYS)
    elif base == "mtst":
        method_term = sum(D.mtst_loss(D.pool_tokens(t[m], tg[m], sg[m]), s[m]) for m in TOKEN_KEYS)
    elif base == "fitnets":
        method_term = sum(D.fitnets_loss(D.pool_tokens(t[m], tg[m], sg[m]), s[f"proj_{m}"]) for m in TOKEN_KEYS)
    else:
        method_term = None
    if method_term is not None:
        terms["method"] = method_term
        terms["distill"] = config.resolved_beta() * method_term
    return terms


def total_loss(config: RunConfig, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    total = sum(terms[k] for k in ("cls", "seg", "distill") if k in terms)
    if "kd" in terms:
        total = total + config.kd_weight * terms["kd"]
    return total


# ---------------------------------------------------------------- augmentation

def augment(config: RunConfig, batch: dict, generator: torch.Generator) -> bool:
    """SpecAugment and mixup in place (CAV-MAE's recipe); returns whether the inputs changed."""
    changed = False
    audio = batch["audio"]
    b, frames_t, mels = audio.shape
    for width, axis, size in ((config.freqm, 2, mels), (config.timem, 1, frames_t)):
        if width:
            span = torch.randint(0, width + 1, (b,), generator=generator)
            start = (torch.rand(b, generator=generator) * (size - span).clamp_min(0)).long()
            pos = torch.arange(size)
            mask = (pos[None] >= start[:, None]) & (pos[None] < (start + span)[:, None])
            shape = (b, 1, size) if axis == 2 else (b, size, 1)
            audio.masked_fill_(mask.view(shape).to(audio.device), 0.0)
            changed = True
    if config.mixup and float(torch.rand(1, generator=generator)) < config.mixup:
        perm = torch.randperm(b, generator=generator).to(audio.device)
        lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator))).beta(10, 10))
        for key in ("audio", "frames", "target"):
            batch[key] = lam * batch[key] + (1 - lam) * batch[key][perm]
        changed = True
    return changed


# ---------------------------------------------------------------- training

def lr_at(config: RunConfig, step: float, steps_per_epoch: int) -> float:
    """Linear warm-up, then half-cosine from lr to min_lr over the run (set every step, as MAE does)."""
    epoch = step / max(1, steps_per_epoch)
    if epoch < config.warmup_epochs:
        return config.lr * epoch / config.warmup_epochs
    progress = (epoch - config.warmup_epochs) / max(1e-8, config.epochs - config.warmup_epochs)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def student_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    if frames.shape[-1] == size:
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@dataclass
class State:
    epoch: int = 0
    step_in_epoch: int = 0  # batches of the current epoch already done
    global_step: int = 0


def train_one_epoch(config: RunConfig, trainee: nn.Module, teacher: AVTransformer | None, monitor, grids: Grids | None,
                    data_loader, optimizer, state: State, generator: torch.Generator,
                    device, cache: TeacherCache | None, log, checkpoint, bar=None) -> bool:
    """Train until the epoch ends (True) or ``stop_after_steps`` is reached (False)."""
    trainee.train()
    student = unwrap(trainee).student
    steps_per_epoch = math.ceil(len(data_loader.dataset) / world()[1] / config.batch_size)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.bf16)
    window: dict[str, list[float]] = defaultdict(list)
    started, samples = time.time(), 0
    for batch, errors in data_loader:
        if errors:
            log({"type": "skipped", "ids": [e["id"] for e in errors], "reasons": [e["error"] for e in errors]})
        if batch is None:
            state.step_in_epoch += 1
            continue
        lr = lr_at(config, state.global_step, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = to_device(batch, device)
        augmented = augment(config, batch, generator)
        with autocast:
            t = None
            if teacher is not None and config.method != "none":  # without distillation the teacher idles
                t = teacher_outputs(teacher, monitor, batch["audio"], batch["frames"], config.lam,
                                    None if augmented else batch["key"], cache)
            s = trainee(batch["audio"], student_frames(batch["frames"], student.config.image_size))
            terms = task_losses(config, s, batch)
            if t is not None:
                terms.update(distill_terms(config, t, s, grids))
            loss = total_loss(config, terms)
        if not torch.isfinite(loss):
            raise SystemExit(f"step {state.global_step}: the loss is {loss.item()} "
                             f"({ {k: float(v.detach()) for k, v in terms.items()} }); stopping")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.step_in_epoch += 1
        state.global_step += 1
        samples += batch["audio"].shape[0]
        loss_value = float(loss.detach())
        for k, v in terms.items():
            window[k].append(float(v.detach()))
        window["loss"].append(loss_value)
        if t is not None and "w_audio" in t:
            for m in TOKEN_KEYS:
                window[f"w_{m}"].append(float(t[f"w_{m}"].mean()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
        if state.global_step % config.log_every == 0:
            means = reduce_mean({k: float(np.mean(v)) for k, v in window.items()}, device)
            elapsed = time.time() - started
            log({"type": "train", "step": state.global_step, "epoch": state.epoch + state.step_in_epoch / steps_per_epoch,
                 "lr": lr, "samples_per_s": samples * world()[1] / max(elapsed, 1e-9), **means,
                 **({"cache_hits": cache.hits, "cache_misses": cache.misses} if cache is not None else {})})
            window.clear()
        if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
            checkpoint()
        if config.stop_after_steps and state.global_step >= config.stop_after_steps:
            return False
    return True


# ---------------------------------------------------------------- probes

def train_probes(config: RunConfig, teacher: AVTransformer, monitor: D.EntropyMonitor, dataset, device,
                 progress: bool, cache: TeacherCache | None = None) -> list[float]:
    """Fit the entropy probes on the frozen teacher's tokens (one pass to gather them, then epochs over them)."""
    from tqdm import tqdm

    seg = monitor.task == "segmentation"
    gh, gw = teacher.config.visual_grid
    feats: dict[str, list[torch.Tensor]] = defaultdict(list)
    targets: list[torch.Tensor] = []
    data_loader = loader(dataset, config.batch_size, ResumableSampler(len(dataset), config.seed, shuffle=False),
                         config.workers)
    teacher.eval()
    for batch, _ in tqdm(data_loader, desc="probe features", disable=not progress):
        if batch is None:
            continue
        keys = batch.get("key")
        if seg:
            keep = batch["mask_valid"]
            if not keep.any():
                continue
            batch = {k: (v[keep] if torch.is_tensor(v) else v) for k, v in batch.items()}
            keys = [k for k, kept in zip(keys, keep.tolist()) if kept] if keys is not None else None
        batch = to_device(batch, device)
        tokens = teacher_outputs(teacher, None, batch["audio"], batch["frames"], 0.0, keys, cache)
        for m in TOKEN_KEYS:
            x = tokens[m].float()
            if seg and m != "audio":
                feats[m].append(x[:, x.shape[1] - gh * gw:].cpu())  # the visual positions
            else:
                feats[m].append(x.mean(dim=1, keepdim=True).cpu())  # pooled: what a linear probe reads
        targets.append((batch["masks"][:, 0] if seg else batch["target"]).cpu())
    if not targets:
        raise SystemExit("no training samples reached the entropy probes")
    feats = {m: torch.cat(v) for m, v in feats.items()}
    target = torch.cat(targets)
    optimizer = torch.optim.AdamW(monitor.parameters(), lr=config.probe_lr, weight_decay=1e-4)
    n, batch_size = target.shape[0], 256
    steps = config.probe_epochs * math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    g = torch.Generator().manual_seed(config.seed)
    losses = []
    monitor.train()
    for _ in tqdm(range(config.probe_epochs), desc="probe epochs", disable=not progress):
        order = torch.randperm(n, generator=g)
        epoch_loss = []
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            loss = monitor.probe_loss({m: feats[m][idx].to(device) for m in TOKEN_KEYS}, target[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_loss.append(float(loss.detach()))
        losses.append(float(np.mean(epoch_loss)))
    monitor.eval()
    for p in monitor.parameters():
        p.requires_grad_(False)
    return losses


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(config: RunConfig, model: AVTransformer, dataset, device, modes: dict[str, str] | None = None,
             monitor=None, progress: bool = False, desc: str = "eval") -> dict:
    """Clip-level classification (logits averaged over the clip's frames) and per-frame segmentation,
    one clip per segmentation batch as AVSBench tests; with a monitor, its mean weights per clip mode."""
    from tqdm import tqdm

    model.eval()
    scores, targets, ids = [], [], []
    meter = SegmentationMeter()
    part_meters: dict[str, SegmentationMeter] = defaultdict(SegmentationMeter)  # S4 and MS3 apart
    weights: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    data_loader = loader(dataset, 1, ResumableSampler(len(dataset), 0, shuffle=False), config.workers)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.bf16)
    skipped = []
    started = time.time()
    for index, (batch, errors) in enumerate(tqdm(data_loader, desc=desc, disable=not progress)):
        skipped += [e["id"] for e in errors]
        if batch is None:
            continue
        part = dataset.locate(index)[0].short if hasattr(dataset, "locate") else getattr(dataset, "short", "all")
        frames = batch["frames"][0]
        if frames.ndim == 3:
            frames = frames[None]
        audio = batch["audio"].expand(frames.shape[0], *batch["audio"].shape[1:])
        with autocast:
            out = model(audio.to(device), student_frames(frames.to(device), model.config.image_size))
        scores.append(out.logits.float().mean(dim=0).cpu())
        targets.append(batch["target"][0])
        ids.append(batch["id"][0])
        if out.mask_logits is not None and "masks" in batch:
            valid = batch["mask_valid"][0]
            if valid.any():
                pred = F.interpolate(out.mask_logits.float(), size=batch["masks"].shape[-2:], mode="bilinear",
                                     align_corners=False)
                pred, truth = pred[valid.to(pred.device)].cpu(), batch["masks"][0][valid]
                meter.update(pred, truth)
                part_meters[part].update(pred, truth)
        if monitor is not None and modes:
            mode = modes.get(batch["id"][0], "unknown")
            for m, w in monitor.weights(out.tokens(), config.lam).items():
                weights[mode][m].append(float(w.mean()))
    result = {"clips": len(ids), "unreadable": len(skipped), "seconds": round(time.time() - started, 1)}
    if scores and config.objective != "segmentation":
        s, t = torch.stack(scores).numpy(), torch.stack(targets).numpy()
        result.update(classification_metrics(s, t))
        if modes:
            hits = (t[np.arange(len(s)), s.argmax(1)] > 0)
            by_mode = defaultdict(list)
            for clip_id, hit in zip(ids, hits):
                by_mode[modes.get(clip_id, "unknown")].append(bool(hit))
            result["top1_by_mode"] = {m: float(np.mean(v)) for m, v in sorted(by_mode.items())}
    if meter.ious:
        result.update(meter.result())
        result["segmentation_by_part"] = {name: m.result() for name, m in sorted(part_meters.items())}
    if weights:
        result["em_weights_by_mode"] = {mode: {m: float(np.mean(v)) for m, v in ws.items()}
                                        for mode, ws in sorted(weights.items())}
    return result
