"""A run from start to finish, as a sequence of named stages:

1. :func:`resolve_config`: flags, file and preset (or the saved config of a run to resume);
2. :func:`build_models_and_data`: the teacher, the datasets, the student, all checked before any step;
3. :func:`teacher_cache`: the teacher's outputs kept in memory and on disk (optionally filled first);
4. :func:`entropy_monitor`: probes fitted on the frozen teacher (methods that use the monitor);
5. :func:`optimiser_and_resume`: AdamW, the step counters and the generator, from the checkpoint if any;
6. :func:`fit`: the epochs, with checkpoints;
7. :func:`evaluate_and_write`: teacher and student on the evaluation split, the results and the student.

``python training/distill.py`` calls :func:`main`.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from emktd.bench import hardware
from emktd.files import atomic_path
from emktd.hub import ModelLoadError, load_pretrained, save_pretrained
from emktd.models import PRESETS, AVConfig, AVTransformer, create_model
from emktd.monitor import MONITOR_CONFIG, MONITOR_WEIGHTS, EntropyMonitor, save_monitor
from training.readers.common import FormatError

from . import config as cfg
from . import data, distributed
from .distributed import backend, barrier, world
from .evaluate import evaluate
from .folder import RunFolder
from .loop import Fit, State, train_one_epoch
from .objective import Grids, Trainee
from .methods import parse
from .probes import RunMonitor, train_probes
from .teacher import TeacherCache, cache_folder, fill_cache, filling, load_teacher, state_digest


@dataclass
class Setup:
    """The run's models and data, once checked."""

    teacher: AVTransformer | None
    student: AVTransformer
    trainee: Trainee
    grids: Grids | None
    data: data.RunData


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_config(argv=None) -> cfg.RunConfig:
    config = cfg.from_args(argv)
    if config.resume:
        if not config.out or not (Path(config.out) / "config.json").is_file():
            raise SystemExit("--resume needs --out pointing at an existing run folder")
        saved = cfg.load(Path(config.out) / "config.json")
        config = replace(saved, resume=True, out=config.out, stop_after_steps=config.stop_after_steps)
    if not config.out:
        name = config.method if config.task == "distill" else config.teacher_preset
        config = replace(config, out=str(cfg.REPO / "runs" / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-"
                                                                  f"{config.task}-{name}"))
    return config


def build_student(config: cfg.RunConfig, labels: list[str], reference: AVTransformer | None) -> AVTransformer:
    if config.student not in PRESETS:
        raise SystemExit(f"student preset {config.student!r}: expected one of {', '.join(PRESETS)}")
    overrides = {"num_classes": len(labels), "labels": tuple(labels)}
    if reference is not None:  # the student hears what the teacher hears
        overrides.update(audio_frames=reference.config.audio_frames, num_mel_bins=reference.config.num_mel_bins)
    if config.student_image_size is not None:
        overrides["image_size"] = config.student_image_size
    overrides.update(config.decoder_overrides())
    try:
        return create_model(config.student, **overrides)
    except ValueError as exc:
        raise SystemExit(f"student: {exc}") from None


def benchmark_build(config: cfg.RunConfig) -> dict | None:
    """The embedded benchmark's build a run reads (its source pack's recipe and digest), or None for
    another dataset or a folder without benchmark.json."""
    path = config.path(config.data_root) / "benchmark.json"
    if config.dataset != "embedded" or not path.is_file():
        return None
    info = json.loads(path.read_text())
    return {key: info.get(key) for key in ("pack_recipe", "pack_sha256", "seed")}


def imagenet_prior(config: cfg.RunConfig, labels: list[str]) -> dict:
    """The ``imagenet_prior`` override of a teacher built with --imagenet-prior: each label's
    ImageNet-1k classes, by the embedded benchmark's map (a label is a class name, ``_`` for spaces)."""
    if not config.imagenet_prior:
        return {}
    from training.embedded.imagenet import imagenet_indices

    try:
        return {"imagenet_prior": tuple(imagenet_indices(label.replace("_", " ")) for label in labels)}
    except KeyError as exc:
        raise SystemExit(f"--imagenet-prior: {exc.args[0]}; add it to training/embedded/imagenet.py "
                         "(IMAGENET_CLASSES or NO_IMAGENET_CLASS)") from None


def check_compatible(teacher: AVTransformer, student: AVTransformer, config: cfg.RunConfig) -> Grids:
    """Fail before any compute when the teacher's token grids cannot be pooled to the student's."""
    t, s = teacher.config, student.config
    problems = []
    if t.num_classes != s.num_classes and config.objective != "segmentation":
        problems.append(f"the teacher has {t.num_classes} classes, the dataset {s.num_classes}")
    for name in ("audio_grid", "visual_grid"):
        (th, tw), (sh, sw) = getattr(t, name), getattr(s, name)
        if th % sh or tw % sw:
            problems.append(f"teacher {name} {th}x{tw} cannot be average-pooled to the student's {sh}x{sw}")
    if config.objective != "classification" and (t.seg_decoder_dim == 0 or s.seg_decoder_dim == 0):
        problems.append("segmentation needs a mask decoder in both models (set --seg-decoder-dim)")
    if problems:
        raise SystemExit("teacher and student do not fit together:\n  " + "\n  ".join(problems))
    return Grids(t.token_grids, s.token_grids)


def with_decoder(model: AVTransformer, overrides: dict) -> AVTransformer:
    """``model`` with the mask decoder that ``overrides`` asks for (fine-tuning saved weights with
    another decoder): every weight outside the decoder is kept, and so are the decoder's where
    its shape did not change; the rest start as a new model's.  The same model when nothing
    changes."""
    config = replace(model.config, **overrides)
    if config == model.config:
        return model
    grown = AVTransformer(config)
    state, kept = grown.state_dict(), model.state_dict()
    fresh = [k for k, v in state.items() if k not in kept or kept[k].shape != v.shape]
    outside = [k for k in fresh if not k.startswith("mask_decoder.")]
    if outside:
        raise ValueError(f"a new decoder cannot change weights outside it: {', '.join(outside[:3])}")
    grown.load_state_dict({**state, **{k: v for k, v in kept.items() if k in state and k not in fresh}})
    changed = ", ".join(f"{k} {getattr(model.config, k)} -> {v}" for k, v in overrides.items()
                        if getattr(model.config, k) != v)
    print(f"mask decoder changed ({changed}): {len(fresh)} of its tensors start untrained", flush=True)
    return grown


def build_models_and_data(config: cfg.RunConfig, device) -> Setup:
    distilling = config.task == "distill"
    teacher = load_teacher(config, device) if distilling else None
    if teacher is None and config.teacher_preset not in PRESETS:
        raise SystemExit(f"--teacher-preset {config.teacher_preset!r}: expected one of {', '.join(PRESETS)}")
    rc = teacher.config if teacher is not None else PRESETS[config.teacher_preset]
    try:
        run_data = data.build(config, rc.audio_frames, rc.num_mel_bins, rc.image_size)
    except FormatError as exc:
        raise SystemExit(f"dataset: {exc}") from None
    for line in run_data.report():
        print(line, flush=True)
    if distilling:
        student = build_student(config, run_data.labels, teacher)
        grids = check_compatible(teacher, student, config)
    elif config.init_from:
        try:
            student = with_decoder(load_pretrained(config.path(config.init_from)).float(), config.decoder_overrides())
        except (ModelLoadError, ValueError) as exc:
            raise SystemExit(f"--init-from: {exc}") from None
        if list(student.config.labels) != list(run_data.labels):
            raise SystemExit(f"--init-from {config.init_from}: its labels are not the dataset's "
                             f"({len(student.config.labels)} against {len(run_data.labels)})")
        grids = None
    else:
        try:
            student = create_model(config.teacher_preset, num_classes=len(run_data.labels),
                                   labels=tuple(run_data.labels), **config.decoder_overrides(),
                                   **imagenet_prior(config, run_data.labels))
        except ValueError as exc:
            raise SystemExit(f"teacher: {exc}") from None
        grids = None
    if config.objective != "classification" and student.config.seg_decoder_dim == 0:
        raise SystemExit("the objective needs masks but the model has no mask decoder (set --seg-decoder-dim)")
    method = parse(config.method)[0] if distilling else None
    trainee = Trainee(student, teacher.config.embed_dim if teacher is not None else None, method).to(device)
    return Setup(teacher, student, trainee, grids, run_data)


def teacher_cache(config: cfg.RunConfig, setup: Setup, folder: RunFolder, device,
                  progress: bool) -> TeacherCache | None:
    teacher = setup.teacher
    if teacher is None or (config.cache_teacher_gb <= 0 and not config.teacher_cache_dir):
        return None
    cache_dir = None
    if config.teacher_cache_dir:
        c = teacher.config
        cache_dir = cache_folder(config.path(config.teacher_cache_dir), teacher, config, {
            "audio_frames": c.audio_frames, "num_mel_bins": c.num_mel_bins, "image_size": c.image_size})
    cache = TeacherCache(config.cache_teacher_gb, cache_dir)
    if cache_dir is not None and config.fill_teacher_cache and world()[0] == 0:
        with filling(cache_dir):  # what is missing is listed once no other run is filling
            pairs = data.AllFrames(setup.data.train.clips, config.frames_per_clip, lambda key: not cache.has(key))
            if len(pairs):
                started = time.time()
                count = fill_cache(config, teacher, pairs, cache, device, progress)
                folder.log({"type": "teacher_cache", "filled": count, "seconds": round(time.time() - started, 1)})
                print(f"{cache_dir}: teacher outputs of {count} clip frames cached in {time.time() - started:.0f} s",
                      flush=True)
        cache.drop_memory()
    barrier()
    return cache


FOLDS_WEIGHTS = "monitor-folds.safetensors"


def entropy_monitor(config: cfg.RunConfig, setup: Setup, folder: RunFolder, cache, device,
                    progress: bool) -> RunMonitor | None:
    """The run's monitor: fitted once (and saved in the run folder: the probes in the monitor
    files, the cross-fitted folds' beside them), then read back frozen."""
    method = parse(config.method)[0] if setup.teacher is not None else None
    if method is None or not method.uses_monitor:
        return None
    teacher = setup.teacher

    def new_monitor():
        return EntropyMonitor.for_model(teacher.config, config.resolved_monitor(), len(setup.data.labels)).to(device)

    monitor = new_monitor()
    saved = [folder.path / MONITOR_WEIGHTS, folder.path / MONITOR_CONFIG]
    if config.monitor_folds:
        saved.append(folder.path / FOLDS_WEIGHTS)
    if not all(p.is_file() for p in saved) and world()[0] == 0:
        # Segmentation probes need masks: the first annotated frame has one in every layout.
        visits = data.FrameVisits(setup.data.train.clips, 1 if monitor.task == "segmentation"
                                  else config.frames_per_clip, config.seed)
        report, folds = train_probes(config, teacher, monitor, visits, device, progress, cache, config.monitor_folds)
        folder.log({"type": "probes", **report})
        held = report["held_out"]
        print("entropy probes (held-out accuracy, mean entropy in nats): " + ", ".join(
            f"{m} {100 * r['accuracy']:.1f} %, {r['entropy']:.2f}" for m, r in held.items())
            + f"; best of {len(report['epoch_losses'])} epochs: {report['best_epoch']}", flush=True)
        if folds:
            from safetensors.torch import save_file

            print(f"cross-fitted monitor, {len(folds)} folds (accuracy, entropy on the fold each never saw): "
                  + ", ".join(f"{m} {100 * r['accuracy']:.1f} %, {r['entropy']:.2f}"
                              for m, r in report["out_of_fold"].items()), flush=True)
            with atomic_path(folder.path / FOLDS_WEIGHTS) as tmp:  # keys <fold>.<probe tensor>
                save_file({k: v.detach().cpu().contiguous() for k, v in nn.ModuleList(folds).state_dict().items()},
                          str(tmp))
        save_monitor(monitor, folder.path, config.lam, train_mean_weights=report["mean_weights"])
    barrier()
    monitor.load_state_dict(load_file(str(saved[0]), device=str(device)))  # every rank reads rank 0's probes
    folds = nn.ModuleList(new_monitor() for _ in range(config.monitor_folds))
    if config.monitor_folds:
        folds.load_state_dict(load_file(str(folder.path / FOLDS_WEIGHTS), device=str(device)))
    static = None
    if method.static_weights:
        static = json.loads((folder.path / MONITOR_CONFIG).read_text())["train_mean_weights"]
        print("static EM weights (the monitor's means on the training frames): "
              + ", ".join(f"{m} {w:.3f}" for m, w in static.items()), flush=True)
    return RunMonitor(monitor, folds, static).eval().requires_grad_(False)


def optimiser_and_resume(config: cfg.RunConfig, setup: Setup, folder: RunFolder):
    optimizer = torch.optim.AdamW([p for p in setup.trainee.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    state = State()
    generator = torch.Generator().manual_seed(config.seed + 7)
    if config.resume and folder.checkpoint_path.is_file():
        saved = torch.load(folder.checkpoint_path, map_location="cpu", weights_only=True)
        architecture = setup.student.config.to_dict()
        # compared as configs, so that a checkpoint written before a field existed (at its default) resumes
        if AVConfig.from_dict(saved["architecture"]) != setup.student.config:
            raise SystemExit(f"{folder.checkpoint_path}: the checkpoint is of another architecture "
                             f"({saved['architecture']}) than this run's student ({architecture})")
        setup.trainee.load_state_dict(saved["trainee"])
        optimizer.load_state_dict(saved["optimizer"])
        state = State(**saved["state"])
        generator.set_state(saved["generator"])
        print(f"resumed from step {state.global_step} (epoch {state.epoch}, batch {state.step_in_epoch})", flush=True)
    return optimizer, state, generator


def fit(config: cfg.RunConfig, setup: Setup, folder: RunFolder, monitor, cache, device,
        progress: bool) -> tuple[float, float] | None:
    """Train to the last epoch; returns the training seconds of all sittings and of earlier ones alone
    (a resumed run), or None when stopped early as asked."""
    from tqdm import tqdm

    optimizer, state, generator = optimiser_and_resume(config, setup, folder)
    rank, world_size = world()
    model = setup.trainee
    if world_size > 1:
        # The single-modality norms of each block sit idle in joint forwards: DDP must expect that.
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    if config.compile:
        model = torch.compile(model)

    def checkpoint():
        saved = replace(state, earlier_seconds=state.earlier_seconds + time.time() - started)
        folder.save_checkpoint({"trainee": setup.trainee.state_dict(), "optimizer": optimizer.state_dict(),
                                "state": asdict(saved), "generator": generator.get_state(),
                                "architecture": setup.student.config.to_dict()})

    fitting = setup.data.fitting  # the labelled training clips, then the transfer pool's (if any)
    sampler = data.ResumableSampler(len(fitting), config.seed)
    steps_per_epoch = math.ceil(len(sampler.indices()) / config.batch_size)
    bar = tqdm(total=steps_per_epoch * config.epochs, initial=state.global_step, smoothing=0.05,
               desc=f"distill {config.method}" if setup.teacher is not None else "train teacher", disable=not progress)
    folder.log({"type": "start", "resumed_at": state.global_step if config.resume else None, "world_size": world_size,
                "backend": backend(), "device": hardware(device), "train_clips": len(setup.data.train),
                "pool_clips": len(setup.data.pool) if setup.data.pool is not None else 0,
                "eval_clips": len(setup.data.eval), "steps_per_epoch": steps_per_epoch})
    run = Fit(config, model, setup.teacher, monitor, setup.grids, optimizer, generator, device, cache, folder.log,
              checkpoint, bar)
    started, finished = time.time(), True
    while state.epoch < config.epochs:
        fitting.set_epoch(state.epoch)
        sampler.set_position(state.epoch, state.step_in_epoch, config.batch_size)
        finished = train_one_epoch(run, data.loader(fitting, config.batch_size, sampler, config.workers), state)
        if not finished:
            break
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
        checkpoint()
    bar.close()
    seconds = state.earlier_seconds + time.time() - started  # all sittings: a resumed run's whole training
    checkpoint()
    digest = state_digest(setup.student) + "\n"
    folder.write("final_student_sha256.txt", digest)
    if world_size > 1:
        (folder.path / f"final_student_rank{rank}.sha256").write_text(digest)
        barrier()
    if not finished:
        print(f"stopped after step {state.global_step} as asked (--stop-after-steps); resume with --resume", flush=True)
    return (seconds, state.earlier_seconds) if finished else None


def evaluate_and_write(config: cfg.RunConfig, setup: Setup, folder: RunFolder, monitor, cache, device,
                       progress: bool, train_seconds: float, started: float, earlier_seconds: float = 0.0) -> dict:
    teacher, student, run_data = setup.teacher, setup.student, setup.data
    save_pretrained(student, folder.path / "student")
    modes, groups = data.clip_modes(config), data.clip_groups(config)
    result = {"task": config.task, "method": config.method, "dataset": config.dataset,
              "hardware": hardware(device), "world_size": world()[1],
              "train_seconds": round(train_seconds, 1), "labels": len(run_data.labels),
              "train_clips": len(run_data.train), "student_parameters": student.num_parameters(),
              "pool_clips": len(run_data.pool) if run_data.pool is not None else 0}
    if teacher is not None:
        result["teacher_parameters"] = teacher.num_parameters()
        if config.eval_teacher:
            result["teacher"] = evaluate(config, teacher, run_data.eval, device, modes, monitor, progress,
                                         "eval teacher", groups)
    result["student"] = evaluate(config, student, run_data.eval, device, modes, None, progress, "eval student",
                                 groups)
    probes = folder.probes()
    if probes:  # the monitor's probes as trained (a resumed run reads them from its log)
        result["probes"] = probes
    if cache is not None:
        result["teacher_cache"] = {"hits": cache.hits, "misses": cache.misses, "gb": round(cache.used / 2**30, 2)}
    result["manifest"] = [b.manifest.report() for b in run_data.bases]
    build = benchmark_build(config)
    if build is not None:  # which build of the embedded benchmark the numbers are on
        result["benchmark"] = build
    # this sitting, and the training of earlier ones (a resumed run's record counts all of its compute)
    result["wall_seconds"] = round(time.time() - started + earlier_seconds, 1)
    folder.write("metrics.json", json.dumps(result, indent=1) + "\n")
    folder.write("manifest.json", json.dumps({b.manifest.name: {"rows": b.manifest.rows, "missing": b.manifest.missing,
                                                                "corrupt": b.manifest.corrupt}
                                             for b in run_data.bases}, indent=1) + "\n")
    folder.plot()
    summary = {k: result["student"].get(k) for k in ("top1", "mAP", "mIoU", "legacy_fscore") if k in result["student"]}
    print(f"{folder.path}: student {json.dumps(summary)}", flush=True)
    return result


def main(argv=None) -> dict | None:
    config = resolve_config(argv)
    device = distributed.setup(config.device)
    rank, world_size = world()
    progress = rank == 0 and (sys.stderr.isatty() or os.environ.get("EMKTD_PROGRESS") == "1")
    folder = RunFolder(Path(config.out), rank)
    started = time.time()
    seed_everything(config.seed)
    setup = build_models_and_data(config, device)
    folder.write("config.json", cfg.to_json(config))
    cache = teacher_cache(config, setup, folder, device, progress)
    monitor = entropy_monitor(config, setup, folder, cache, device, progress)
    trained = fit(config, setup, folder, monitor, cache, device, progress)
    result = None
    if trained is not None and rank == 0:
        train_seconds, earlier_seconds = trained
        result = evaluate_and_write(config, setup, folder, monitor, cache, device, progress, train_seconds, started,
                                    earlier_seconds)
    if world_size > 1:
        barrier()
        torch.distributed.destroy_process_group()
    return result
