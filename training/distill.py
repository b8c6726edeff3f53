"""Distil an audio-visual student (EM-KTD by default), or train a teacher.

    python training/distill.py                      # the embedded default (see --help)
    python training/distill.py --task teacher       # train the embedded benchmark's teacher
    python training/distill.py --method kd --seed 1 # a baseline
    python training/distill.py --preset vggsound-paper --vggsound-csv ... --clip-dir ... --teacher vgg_65.5.pth
    torchrun --nproc-per-node 8 training/distill.py ...   # multi-GPU / multi-node
    python training/distill.py --out runs/x --resume      # continue an interrupted run

A run folder holds: config.json (fully resolved), log.jsonl (every logged step),
metrics.json (teacher and student on the evaluation split, clip counts, hardware,
wall time), student/ (a model folder: config.json + model.safetensors), probes.safetensors,
checkpoints/last.pt, manifest.json (clips used, missing, unreadable) and plots.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import config as cfg  # noqa: E402
import data  # noqa: E402
import engine  # noqa: E402
from data_formats import FormatError  # noqa: E402
from emktd import distill as D  # noqa: E402
from emktd.hub import ModelLoadError, load_pretrained  # noqa: E402
from emktd.models import PRESETS, AVTransformer, create_model, load_cavmae_checkpoint  # noqa: E402

REPO = HERE.parent


def setup_distributed(config: cfg.RunConfig) -> torch.device:
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_teacher(config: cfg.RunConfig, device) -> AVTransformer:
    source = config.teacher
    path = Path(source)
    if not path.is_absolute() and not path.exists() and (REPO / path).exists():
        path = REPO / path
    if source == cfg.RunConfig.teacher and not path.exists():
        raise SystemExit(
            f"no teacher at {path}. Train one with `python training/distill.py --task teacher --out runs/teacher` "
            "(about an hour on 2 CPU cores) and copy runs/teacher/student to weights/teacher, or pass "
            "--teacher with a model folder, a Hub repo id or an official CAV-MAE .pth")
    try:
        if path.suffix in (".pth", ".pt") or (path.is_file() and path.suffix == ".safetensors"):
            if not path.is_file():
                raise SystemExit(f"{path}: no such CAV-MAE checkpoint")
            overrides = {} if config.seg_decoder_dim < 0 else {"seg_decoder_dim": config.seg_decoder_dim}
            teacher = load_cavmae_checkpoint(path, **overrides)
        else:
            teacher = load_pretrained(path if path.exists() else source)
    except (ModelLoadError, ValueError) as exc:
        raise SystemExit(f"teacher: {exc}") from None
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_student(config: cfg.RunConfig, labels: list[str], reference: AVTransformer | None) -> AVTransformer:
    if config.student not in PRESETS:
        raise SystemExit(f"student preset {config.student!r}: expected one of {', '.join(PRESETS)}")
    overrides = {"num_classes": len(labels), "labels": tuple(labels)}
    if reference is not None:  # the student hears what the teacher hears
        overrides.update(audio_frames=reference.config.audio_frames, num_mel_bins=reference.config.num_mel_bins)
    if config.student_image_size:
        overrides["image_size"] = config.student_image_size
    if config.seg_decoder_dim >= 0:
        overrides["seg_decoder_dim"] = config.seg_decoder_dim
    try:
        return create_model(config.student, **overrides)
    except ValueError as exc:
        raise SystemExit(f"student: {exc}") from None


def check_compatible(teacher: AVTransformer, student: AVTransformer, config: cfg.RunConfig) -> engine.Grids:
    """Fail before any compute when the teacher's token grids cannot be pooled to the student's."""
    t, s = teacher.config, student.config
    problems = []
    if teacher.config.num_classes != student.config.num_classes and config.objective != "segmentation":
        problems.append(f"the teacher has {t.num_classes} classes, the dataset {s.num_classes}")
    for name in ("audio_grid", "visual_grid"):
        (th, tw), (sh, sw) = getattr(t, name), getattr(s, name)
        if th % sh or tw % sw:
            problems.append(f"teacher {name} {th}x{tw} cannot be average-pooled to the student's {sh}x{sw}")
    if config.objective != "classification" and (t.seg_decoder_dim == 0 or s.seg_decoder_dim == 0):
        problems.append("segmentation needs a mask decoder in both models (set --seg-decoder-dim)")
    if problems:
        raise SystemExit("teacher and student do not fit together:\n  " + "\n  ".join(problems))
    return engine.Grids(t.token_grids, s.token_grids)


class Run:
    """The run folder: logging, checkpoints, results. Only rank 0 writes."""

    def __init__(self, folder: Path, rank: int):
        self.folder, self.rank = folder, rank
        if rank == 0:
            (folder / "checkpoints").mkdir(parents=True, exist_ok=True)

    def log(self, record: dict) -> None:
        if self.rank == 0:
            record = {"time": round(time.time(), 3), **record}
            with open(self.folder / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def write(self, name: str, text: str) -> None:
        if self.rank == 0:
            tmp = self.folder / (name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.folder / name)

    def save_checkpoint(self, state: dict) -> None:
        if self.rank == 0:
            path = self.folder / "checkpoints" / "last.pt"
            tmp = path.with_suffix(".pt.tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)  # atomic: a kill leaves the previous checkpoint whole


def hardware(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.machine()
    return f"{name}, {torch.get_num_threads()} threads"


def plot(folder: Path) -> None:
    """Loss terms and EM weights over training, from log.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("type") == "train"]
    if not train:
        return
    steps = [r["step"] for r in train]
    loss_keys = [k for k in ("loss", "cls", "seg", "kd", "distill", "ktd_audio", "ktd_visual", "ktd_fused", "method")
                 if k in train[-1]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in loss_keys:
        ax.plot(steps, [r.get(k, np.nan) for r in train], label=k)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("loss terms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "loss.png", dpi=110)
    plt.close(fig)
    if "w_audio" in train[-1]:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for m in engine.TOKEN_KEYS:
            ax.plot(steps, [r.get(f"w_{m}", np.nan) for r in train], label=m)
        ax.set_ylim(0, 1)
        ax.set_xlabel("step")
        ax.set_title("mean entropy weight per modality (training batches)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "em_weights.png", dpi=110)
        plt.close(fig)


def main(argv=None) -> dict | None:
    config = cfg.from_args(argv)
    if config.resume:
        if not config.out or not (Path(config.out) / "config.json").is_file():
            raise SystemExit("--resume needs --out pointing at an existing run folder")
        saved = cfg.load(Path(config.out) / "config.json")
        config = replace(saved, resume=True, out=config.out, stop_after_steps=config.stop_after_steps)
    device = setup_distributed(config)
    rank, world_size = engine.world()
    progress = rank == 0 and (sys.stderr.isatty() or os.environ.get("EMKTD_PROGRESS") == "1")
    folder = Path(config.out or REPO / "runs" / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{config.task}-"
                                                 f"{config.method if config.task == 'distill' else config.teacher_preset}")
    config = replace(config, out=str(folder))
    run = Run(folder, rank)
    started = time.time()
    seed_everything(config.seed)
    distilling = config.task == "distill"

    # --- models and data, all checked before any training step
    teacher = load_teacher(config, device) if distilling else None
    reference = teacher if teacher is not None else create_model(config.teacher_preset)
    rc = reference.config
    try:
        run_data = data.build(config, rc.audio_frames, rc.num_mel_bins, rc.image_size)
    except FormatError as exc:
        raise SystemExit(f"dataset: {exc}") from None
    for line in run_data.report():
        print(line, flush=True)
    if distilling:
        student = build_student(config, run_data.labels, teacher)
        grids = check_compatible(teacher, student, config)
    else:
        student = create_model(config.teacher_preset, num_classes=len(run_data.labels), labels=tuple(run_data.labels))
        grids = None
    if config.objective != "classification" and student.config.seg_decoder_dim == 0:
        raise SystemExit("the objective needs masks but the model has no mask decoder (set --seg-decoder-dim)")
    base, _ = config.distill_method()
    if distilling and base == "emktd" and not data.clip_modes(config) and config.dataset == "embedded":
        raise SystemExit(f"{config.data_root}: clips.jsonl is missing")
    trainee = engine.Trainee(student, teacher.config.embed_dim if teacher is not None else None,
                             fitnets=distilling and base == "fitnets").to(device)
    run.write("config.json", cfg.to_json(config))

    cache = None
    if distilling and (config.cache_teacher_gb > 0 or config.teacher_cache_dir):
        folder_cache = None
        if config.teacher_cache_dir:
            folder_cache = engine.cache_folder(config.teacher_cache_dir, teacher, config, {
                "audio_frames": rc.audio_frames, "num_mel_bins": rc.num_mel_bins, "image_size": rc.image_size})
        cache = engine.TeacherCache(config.cache_teacher_gb, folder_cache)
        if folder_cache is not None and config.fill_teacher_cache and rank == 0:
            pairs = data.AllFrames(run_data.train.clips, config.frames_per_clip, lambda key: not cache.has(key))
            if len(pairs):
                started_fill = time.time()
                count = engine.fill_cache(config, teacher, pairs, cache, device, progress)
                run.log({"type": "teacher_cache", "filled": count, "seconds": round(time.time() - started_fill, 1)})
                print(f"{folder_cache}: teacher outputs of {count} clip frames cached in "
                      f"{time.time() - started_fill:.0f} s", flush=True)
            cache.drop_memory()
        if world_size > 1:
            dist.barrier()

    # --- entropy monitor: trained once per run, then frozen
    monitor = None
    if distilling and base == "emktd":
        monitor = D.EntropyMonitor(teacher.config.embed_dim, num_classes=len(run_data.labels),
                                   task=config.resolved_monitor(), visual_grid=teacher.config.visual_grid,
                                   image_size=teacher.config.image_size).to(device)
        probe_path = folder / "probes.safetensors"
        from safetensors.torch import load_file, save_file

        if not probe_path.is_file():
            if rank == 0:
                # Segmentation probes need masks: the first annotated frame has one in every layout.
                visits = data.FrameVisits(run_data.train.clips, 1 if monitor.task == "segmentation"
                                          else config.frames_per_clip, config.seed)
                losses = engine.train_probes(config, teacher, monitor, visits, device, progress, cache)
                run.log({"type": "probes", "epoch_losses": losses})
                save_file({k: v.contiguous() for k, v in monitor.state_dict().items()}, str(probe_path) + ".tmp")
                os.replace(str(probe_path) + ".tmp", probe_path)
            if world_size > 1:
                dist.barrier()
        monitor.load_state_dict(load_file(str(probe_path), device=str(device)))
        monitor.eval().requires_grad_(False)

    # --- optimisation state, possibly resumed
    optimizer = torch.optim.AdamW([p for p in trainee.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    state = engine.State()
    generator = torch.Generator().manual_seed(config.seed + 7)
    checkpoint_path = folder / "checkpoints" / "last.pt"
    if config.resume and checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if saved["architecture"] != student.config.to_dict():
            raise SystemExit(f"{checkpoint_path}: the checkpoint is of another architecture "
                             f"({saved['architecture']}) than this run's student ({student.config.to_dict()})")
        trainee.load_state_dict(saved["trainee"])
        optimizer.load_state_dict(saved["optimizer"])
        state = engine.State(**saved["state"])
        generator.set_state(saved["generator"])
        print(f"resumed from step {state.global_step} (epoch {state.epoch}, batch {state.step_in_epoch})", flush=True)
    model = trainee
    if world_size > 1:
        # The single-modality norms of each block sit idle in joint forwards: DDP must expect that.
        model = torch.nn.parallel.DistributedDataParallel(
            trainee, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    if config.compile:
        model = torch.compile(model)

    def checkpoint():
        run.save_checkpoint({"trainee": trainee.state_dict(), "optimizer": optimizer.state_dict(),
                             "state": asdict(state), "generator": generator.get_state(),
                             "architecture": student.config.to_dict()})

    # --- training
    from tqdm import tqdm

    sampler = engine.ResumableSampler(len(run_data.train), config.seed)
    steps_per_epoch = math.ceil(len(sampler.indices()) / config.batch_size)
    bar = tqdm(total=steps_per_epoch * config.epochs, initial=state.global_step,
               desc=f"distill {config.method}" if distilling else "train teacher",
               disable=not progress, smoothing=0.05)
    run.log({"type": "start", "resumed_at": state.global_step if config.resume else None, "world_size": world_size,
             "device": hardware(device), "train_clips": len(run_data.train), "eval_clips": len(run_data.eval),
             "steps_per_epoch": steps_per_epoch})
    finished = True
    train_started = time.time()
    while state.epoch < config.epochs:
        run_data.train.set_epoch(state.epoch)
        sampler.set_position(state.epoch, state.step_in_epoch, config.batch_size)
        data_loader = engine.loader(run_data.train, config.batch_size, sampler, config.workers)
        finished = engine.train_one_epoch(config, model, teacher, monitor, grids, data_loader, optimizer,
                                          state, generator, device, cache, run.log, checkpoint, bar)
        if not finished:
            break
        state.epoch += 1
        state.step_in_epoch = 0
        checkpoint()
    bar.close()
    train_seconds = time.time() - train_started
    checkpoint()
    if rank == 0:
        (folder / "final_student_sha256.txt").write_text(engine.state_digest(student) + "\n")
    if world_size > 1:
        (folder / f"final_student_rank{rank}.sha256").write_text(engine.state_digest(student) + "\n")
        dist.barrier()
    if not finished:
        print(f"stopped after step {state.global_step} as asked (--stop-after-steps); resume with --resume", flush=True)
        return None

    # --- results (rank 0)
    result = None
    if rank == 0:
        student.save_pretrained(folder / "student")
        modes = data.clip_modes(config)
        result = {"task": config.task, "method": config.method, "dataset": config.dataset,
                  "hardware": hardware(device), "world_size": world_size,
                  "train_seconds": round(train_seconds, 1), "labels": len(run_data.labels),
                  "train_clips": len(run_data.train), "student_parameters": student.num_parameters()}
        if teacher is not None:
            result["teacher_parameters"] = teacher.num_parameters()
        if teacher is not None and config.eval_teacher:
            result["teacher"] = engine.evaluate(config, teacher, run_data.eval, device, modes, monitor, progress,
                                                "eval teacher")
        result["student"] = engine.evaluate(config, student, run_data.eval, device, modes, None, progress,
                                            "eval student")
        if cache is not None:
            result["teacher_cache"] = {"hits": cache.hits, "misses": cache.misses, "gb": round(cache.used / 2**30, 2)}
        result["manifest"] = [b.manifest.report() for b in run_data.bases]
        result["wall_seconds"] = round(time.time() - started, 1)
        run.write("metrics.json", json.dumps(result, indent=1) + "\n")
        run.write("manifest.json", json.dumps({b.manifest.name: {"rows": b.manifest.rows, "missing": b.manifest.missing,
                                                                  "corrupt": b.manifest.corrupt}
                                               for b in run_data.bases}, indent=1) + "\n")
        plot(folder)
        summary = {k: result["student"].get(k) for k in ("top1", "mAP", "mIoU", "legacy_fscore") if k in result["student"]}
        print(f"{folder}: student {json.dumps(summary)}", flush=True)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
