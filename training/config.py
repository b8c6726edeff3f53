"""Run configuration: one dataclass of plain values, presets over it, files and flags on top.

Resolution order: the preset's values, then a config file (``--config run.json``), then
flags.  Every run writes the fully resolved config beside its results.  Errors a user
can make (an unknown method, a student grid the teacher grid cannot be pooled to, a
dataset folder in another layout) are found by :func:`validate` and by building the
datasets, before any training step runs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

BASE_METHODS = ("none", "kd", "at", "spkd", "mtst", "fitnets", "ktd", "emktd")
METHODS = BASE_METHODS + tuple(f"{m}+kd" for m in BASE_METHODS if m not in ("none", "kd"))
DATASETS = ("embedded", "vggsound", "cavmae-json", "avsbench-s4", "avsbench-ms3")
OBJECTIVES = ("multitask", "classification", "segmentation")

# Distillation weight per method when --beta is not given. KTD and EM-KTD: the values one
# digest of the paper reports (333, 666); the baselines: their papers' usual weights.
DEFAULT_BETA = {"ktd": 333.0, "emktd": 666.0, "at": 1000.0, "spkd": 3000.0, "mtst": 1.0, "fitnets": 1.0}


@dataclass
class RunConfig:
    # what to run
    task: str = "distill"  # "distill" or "teacher" (train a teacher from scratch)
    dataset: str = "embedded"
    objective: str = "multitask"
    data_root: str = "data/emktd-bench"  # embedded: the benchmark root; avsbench-*: the S4/MS3 folder
    vggsound_csv: str = ""
    clip_dir: str = ""
    train_json: str = ""  # cavmae-json
    eval_json: str = ""
    label_csv: str = ""
    eval_split: str = "test"
    # models
    teacher: str = "weights/teacher"  # model folder, Hub id, or an official CAV-MAE .pth
    teacher_preset: str = "bench-teacher"  # for --task teacher
    student: str = "bench-student"  # preset name
    student_image_size: int = 0  # 0: the preset's; e.g. 112 against a 224 px teacher
    seg_decoder_dim: int = -1  # -1: the preset's
    # method
    method: str = "emktd+kd"
    kernel: str = "rbf"
    gamma: float = 0.5
    degree: int = 2
    coef0: float = 1.0
    lam: float = 1.0
    beta: float = -1.0  # -1: DEFAULT_BETA[method]
    kd_temperature: float = 4.0
    kd_weight: float = 1.0
    monitor: str = ""  # "classification" or "segmentation"; "": from the objective
    probe_epochs: int = 10
    probe_lr: float = 1e-3
    # optimisation
    epochs: int = 8
    batch_size: int = 32
    lr: float = 5e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 0.5
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    mixup: float = 0.0  # probability of mixing a batch (CAV-MAE: 0.5)
    freqm: int = 0  # SpecAugment frequency mask width (CAV-MAE: 48)
    timem: int = 0  # SpecAugment time mask width (CAV-MAE: 192)
    frames_per_clip: int = 5  # annotated frames each training clip offers (one drawn per visit)
    max_train_clips: int = 0  # 0: all; a cap for quick runs
    max_eval_clips: int = 0
    eval_teacher: bool = True  # also evaluate the teacher (and the monitor's weights by mode) after training
    # machinery
    seed: int = 0
    workers: int = 1
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA
    compile: bool = False
    cache_teacher_gb: float = 2.0  # in-memory cache of teacher outputs for unaugmented inputs
    teacher_cache_dir: str = ""  # also keep them on disk here, for later runs with the same teacher and data
    fill_teacher_cache: bool = False  # before training, cache every training clip and frame (needs the dir)
    checkpoint_every: int = 200  # steps
    log_every: int = 20
    out: str = ""  # run folder; default runs/<time>-<method>
    resume: bool = False
    stop_after_steps: int = 0  # end the run early (for tests and benchmarks); 0: never
    build_benchmark: bool = True  # build the embedded benchmark when it is missing

    def distill_method(self) -> tuple[str, bool]:
        """('emktd', True) for 'emktd+kd'."""
        base, _, kd = self.method.partition("+")
        return base, bool(kd) or base == "kd"

    def resolved_beta(self) -> float:
        base, _ = self.distill_method()
        return self.beta if self.beta >= 0 else DEFAULT_BETA.get(base, 0.0)

    def resolved_monitor(self) -> str:
        return self.monitor or ("segmentation" if self.objective == "segmentation" else "classification")


PRESETS: dict[str, dict] = {
    # The embedded benchmark, both tasks at once (what `python training/distill.py` runs).
    "embedded": {},
    # The paper's VGGSound setup: CAV-MAE teacher, cavmae-tiny student, CAV-MAE's augmentation.
    "vggsound-paper": dict(dataset="vggsound", objective="classification", teacher="vgg_65.5.pth",
                           student="cavmae-tiny", lr=2e-4, min_lr=1e-6, epochs=10, batch_size=48,
                           mixup=0.5, freqm=48, timem=192, label_smoothing=0.1, frames_per_clip=10,
                           checkpoint_every=1000),
    # S4 training clips carry one mask (the first frame's), as in AVSBench: train on that frame.
    "avsbench-s4": dict(dataset="avsbench-s4", objective="segmentation", lr=2.5e-5, epochs=15, batch_size=4,
                        frames_per_clip=1, method="emktd"),
    "avsbench-ms3": dict(dataset="avsbench-ms3", objective="segmentation", lr=2.5e-5, epochs=30, batch_size=4,
                         frames_per_clip=5, method="emktd"),
}

HELP = {
    "task": "'distill' a student from a teacher, or train a 'teacher' from scratch",
    "dataset": f"one of {', '.join(DATASETS)}",
    "objective": f"one of {', '.join(OBJECTIVES)} (multitask = classes and masks)",
    "teacher": "teacher: a model folder, a Hub repo id, or an official CAV-MAE fine-tuned .pth",
    "method": f"one of {', '.join(METHODS)}",
    "kernel": "KTD kernel: linear, poly or rbf",
    "lam": "entropy sharpness of the EM weights exp(-lam * H)",
    "beta": "distillation weight (-1: the method's default, see DEFAULT_BETA)",
    "student_image_size": "student input resolution (0: the preset's); the teacher grid is pooled to it",
    "eval_teacher": "evaluate the teacher too (its metrics and the entropy monitor's weights by mode)",
    "teacher_cache_dir": "a folder where teacher outputs are kept on disk (float16, about 0.35 MB per clip and "
                         "frame for bench-teacher) and reused by later runs with the same teacher and data",
    "fill_teacher_cache": "before training, run the teacher once over every training clip and frame into "
                          "--teacher-cache-dir (later runs then skip the teacher)",
    "resume": "continue the run in --out from its last checkpoint",
}


def validate(config: RunConfig) -> None:
    problems = []
    if config.task not in ("distill", "teacher"):
        problems.append(f"task {config.task!r}: expected 'distill' or 'teacher'")
    if config.method not in METHODS:
        problems.append(f"method {config.method!r}: expected one of {', '.join(METHODS)}")
    if config.dataset not in DATASETS:
        problems.append(f"dataset {config.dataset!r}: expected one of {', '.join(DATASETS)}")
    if config.objective not in OBJECTIVES:
        problems.append(f"objective {config.objective!r}: expected one of {', '.join(OBJECTIVES)}")
    if config.kernel not in ("linear", "poly", "rbf"):
        problems.append(f"kernel {config.kernel!r}: expected linear, poly or rbf")
    if config.resolved_monitor() not in ("classification", "segmentation"):
        problems.append(f"monitor {config.monitor!r}: expected classification or segmentation")
    if config.dataset.startswith("avsbench") and config.objective != "segmentation":
        problems.append(f"{config.dataset} has masks but no classification protocol: use --objective segmentation")
    if config.dataset in ("vggsound", "cavmae-json") and config.objective != "classification":
        problems.append(f"{config.dataset} has no masks: use --objective classification")
    if config.mixup and config.objective != "classification":
        problems.append("mixup mixes class targets, not masks: use it with --objective classification only")
    if config.epochs < 1 or config.batch_size < 1:
        problems.append("epochs and batch_size must be at least 1")
    if problems:
        raise SystemExit("invalid configuration:\n  " + "\n  ".join(problems))


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python training/distill.py",
        description="Distil an audio-visual student with EM-KTD (or a baseline), or train a teacher. "
                    "With no arguments: the embedded benchmark, the bundled teacher, EM-KTD + KD.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="embedded", help="starting values")
    p.add_argument("--config", type=Path, help="a JSON file of config values (applied after the preset)")
    defaults = RunConfig()
    for f in fields(RunConfig):
        kind = _parse_bool if f.type in ("bool", bool) else {"int": int, "float": float}.get(str(f.type), str)
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None,
                       help=HELP.get(f.name, "") + f" (default {getattr(defaults, f.name)!r})")
    return p


def from_args(argv=None) -> RunConfig:
    args = parser().parse_args(argv)
    config = replace(RunConfig(), **PRESETS[args.preset])
    if args.config is not None:
        try:
            values = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{args.config}: cannot read the config file ({exc})") from None
        unknown = sorted(set(values) - {f.name for f in fields(RunConfig)})
        if unknown:
            raise SystemExit(f"{args.config}: unknown config key(s) {unknown}")
        config = replace(config, **values)
    overrides = {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not None}
    config = replace(config, **overrides)
    validate(config)
    return config


def to_json(config: RunConfig) -> str:
    base, with_kd = config.distill_method()
    resolved = {**asdict(config), "resolved": {"beta": config.resolved_beta(), "monitor": config.resolved_monitor(),
                                               "distill": base, "kd": with_kd}}
    return json.dumps(resolved, indent=1) + "\n"


def load(path: Path) -> RunConfig:
    data = json.loads(Path(path).read_text())
    data.pop("resolved", None)
    return RunConfig(**data)


__all__ = ["RunConfig", "PRESETS", "METHODS", "DEFAULT_BETA", "validate", "from_args", "to_json", "load", "parser"]
