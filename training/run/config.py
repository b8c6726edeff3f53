"""Run configuration: one dataclass of plain values, presets over it, files and flags on top.

Resolution order: the preset's values, then a config file (``--config run.json``), then
flags.  Every field carries its help text and its real type; flags and config files are
checked against that type and range at start-up, and an error names the field.  Every run
writes the fully resolved config beside its results.  What depends on other fields (the
method's default beta, the monitor from the objective, what a dataset supports) is checked
by :func:`validate`, before any data is read.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from emktd.losses import KERNELS
from emktd.monitor import TASKS

from .datasets import DATASET_ENTRIES, OBJECTIVES
from .methods import names as method_names
from .methods import parse as parse_method

REPO = Path(__file__).resolve().parents[2]


def _f(default, help: str, *, minimum: float | None = None, choices=None):
    """A config field: its default, its help text, the least value it takes and its allowed values
    (a tuple, or a function returning one, for choices a registry holds)."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "choices": choices})


@dataclass
class RunConfig:
    # what to run
    task: str = _f("distill", "'distill' a student from a teacher, or train a 'teacher' from scratch",
                   choices=("distill", "teacher"))
    dataset: str = _f("embedded", "the dataset (see training/run/datasets.py)", choices=lambda: tuple(DATASET_ENTRIES))
    objective: str = _f("multitask", "multitask (classes and masks), classification or segmentation",
                        choices=OBJECTIVES)
    data_root: str = _f("data/emktd-bench", "embedded: the benchmark's folder; avsbench-*: the S4 or MS3 folder "
                        "(a relative path that does not exist under the working directory is taken from the "
                        "repository root)")
    vggsound_csv: str | None = _f(None, "vggsound: the metadata csv")
    clip_dir: str | None = _f(None, "vggsound: the folder of <ytid>_<start>.mp4 clips")
    train_json: str | None = _f(None, "cavmae-json: the training json")
    eval_json: str | None = _f(None, "cavmae-json: the evaluation json")
    label_csv: str | None = _f(None, "cavmae-json: the label csv (index,mid,display_name)")
    eval_split: str = _f("test", "the split evaluated after training (val for model selection)",
                         choices=("train", "val", "test"))
    # models
    teacher: str = _f("weights/teacher", "teacher: a model folder, a Hub repo id, or an official CAV-MAE "
                      "fine-tuned .pth")
    teacher_preset: str = _f("bench-teacher", "the model preset --task teacher trains")
    student: str = _f("bench-student", "the student's model preset")
    student_image_size: int | None = _f(None, "student input resolution (default: the preset's); the teacher's "
                                        "token grid is pooled to it", minimum=16)
    seg_decoder_dim: int | None = _f(None, "mask decoder width (default: the preset's; 0: no decoder)", minimum=0)
    seg_skip_channels: int | None = _f(None, "width of the mask decoder's shallow features: of the frame's pixels at "
                                       "1/2 and 1/4 resolution, or of a visual backbone's maps at strides 8, 4 and 2 "
                                       "(default: the preset's; 0: none)", minimum=0)
    seg_visual_taps: int | None = _f(None, "how many visual blocks' tokens the mask decoder reads besides the fused "
                                     "ones, evenly spaced, the visual stack's output last (default: the preset's; "
                                     "0: none)", minimum=0)
    seg_object_logits: bool | None = _f(None, "also read the class from the fused visual tokens pooled over the "
                                        "predicted mask (default: the preset's)")
    imagenet_prior: bool = _f(False, "a teacher with a visual backbone also reads its ImageNet classifier: each class's "
                                     "logit gains w_c * log P(its ImageNet classes), by the map in "
                                     "training/embedded/imagenet.py")
    # method
    method: str = _f("emktd+kd", "the distillation method (see training/run/methods.py)")
    kernel: str = _f("rbf", "KTD kernel", choices=KERNELS)
    gamma: float = _f(0.5, "RBF kernel width", minimum=0.0)
    degree: int = _f(2, "polynomial kernel degree", minimum=1)
    coef0: float = _f(1.0, "polynomial kernel offset")
    lam: float = _f(1.0, "entropy sharpness of the EM weights exp(-lam * H)", minimum=0.0)
    beta: float | None = _f(None, "distillation weight (default: the method's, see training/run/methods.py)",
                            minimum=0.0)
    kd_temperature: float = _f(4.0, "KD temperature", minimum=1e-6)
    kd_weight: float = _f(1.0, "KD weight", minimum=0.0)
    monitor: str | None = _f(None, "the entropy probes' task (default: segmentation for the segmentation "
                             "objective, else classification)", choices=TASKS)
    monitor_folds: int = _f(0, "cross-fit the entropy monitor: this many folds of the training clips, each clip "
                            "weighted by probes fitted on the other folds (0: one monitor fitted on every clip)",
                            minimum=0)
    probe_epochs: int = _f(100, "most epochs of entropy-probe training (cosine schedule over them); training "
                           "stops earlier once the held-out loss has not improved for --probe-patience epochs",
                           minimum=1)
    probe_patience: int = _f(10, "epochs without a better held-out loss before the probes stop", minimum=1)
    probe_holdout: float = _f(0.1, "fraction of the training clips held out to stop the probes on", minimum=0.0)
    probe_lr: float = _f(1e-3, "entropy-probe learning rate", minimum=0.0)
    # optimisation
    epochs: int = _f(8, "training epochs", minimum=1)
    batch_size: int = _f(32, "samples per step (per process)", minimum=1)
    lr: float = _f(5e-4, "peak learning rate (AdamW)", minimum=0.0)
    min_lr: float = _f(1e-5, "learning rate at the end of the cosine schedule", minimum=0.0)
    warmup_epochs: float = _f(0.5, "linear warm-up, in epochs", minimum=0.0)
    weight_decay: float = _f(0.05, "AdamW weight decay", minimum=0.0)
    label_smoothing: float = _f(0.0, "label smoothing of the class loss (CAV-MAE: 0.1)", minimum=0.0)
    mixup: float = _f(0.0, "probability of mixing a batch (CAV-MAE: 0.5)", minimum=0.0)
    freqm: int = _f(0, "SpecAugment frequency mask width (CAV-MAE: 48)", minimum=0)
    timem: int = _f(0, "SpecAugment time mask width (CAV-MAE: 192)", minimum=0)
    audio_augment: float = _f(0.0, "probability of each audio augmentation per sample: gain, filtering, speed and "
                              "pitch, reverberation, mixing (see training/run/augment.py)", minimum=0.0)
    image_augment: float = _f(0.0, "probability of each image augmentation per sample: colour, scale and crop, "
                              "blur", minimum=0.0)
    modality_dropout: float = _f(0.0, "probability that a training sample loses its audio or (as often) its "
                                 "picture", minimum=0.0)
    train_source: str = _f("fixed", "train on the dataset's fixed train split, or on a 'stream' of freshly "
                           "composed clips from the embedded benchmark's train-side material",
                           choices=("fixed", "stream"))
    stream_clips: int = _f(2400, "stream: clips per epoch (each epoch composes new ones)", minimum=1)
    contrastive: float = _f(0.0, "weight of CAV-MAE's audio-visual contrastive term: InfoNCE between each clip's "
                                 "mean-pooled audio tokens and its visual tokens against the batch's other clips "
                                 "(temperature 0.05); it needs no label, so it also reads transfer-pool clips",
                            minimum=0.0)
    transfer_pool: int = _f(0, "distill: also train on this many unlabelled clips per epoch, composed afresh from the "
                            "transfer pool (training/embedded/pool.py), with the teacher's targets only (KD and the "
                            "method's token term); 0: the labelled training clips only (the paper's protocol)",
                            minimum=0)
    init_from: str | None = _f(None, "teacher: a model folder whose weights start the training (fine-tuning)")
    frames_per_clip: int = _f(5, "annotated frames each training clip offers (one drawn per visit)", minimum=1)
    max_train_clips: int | None = _f(None, "use at most this many clips of each training part (quick runs)",
                                     minimum=1)
    max_eval_clips: int | None = _f(None, "use at most this many clips of each evaluation part", minimum=1)
    eval_teacher: bool = _f(True, "evaluate the teacher too (its metrics and the entropy monitor's weights by mode)")
    # machinery
    seed: int = _f(0, "seed of initialisation, data order and augmentation", minimum=0)
    workers: int = _f(1, "data-loading processes", minimum=0)
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    bf16: bool = _f(True, "bf16 autocast on CUDA")
    compile: bool = _f(False, "torch.compile the student")
    cache_teacher_gb: float = _f(2.0, "in-memory cache of teacher outputs for unaugmented inputs, in GB",
                                 minimum=0.0)
    teacher_cache_dir: str | None = _f(None, "a folder where teacher outputs are kept on disk (float16, about "
                                       "0.35 MB per clip and frame for bench-teacher) and reused by later runs "
                                       "with the same teacher and data")
    fill_teacher_cache: bool = _f(False, "before training, run the teacher once over every training clip and "
                                  "frame into --teacher-cache-dir (later runs then skip the teacher)")
    clip_cache_dir: str | None = _f(None, "a folder where decoded clips (pictures, masks, audio features) are kept "
                                    "on disk and read back instead of decoding their files again (AVSBench "
                                    "layouts, so the embedded benchmark; about 1 MB per clip)")
    checkpoint_every: int = _f(200, "steps between checkpoints (0: at the end of each epoch only)", minimum=0)
    log_every: int = _f(20, "steps between log records", minimum=1)
    out: str | None = _f(None, "the run folder (default runs/<time>-<task>-<method>)")
    resume: bool = _f(False, "continue the run in --out from its last checkpoint")
    stop_after_steps: int | None = _f(None, "end the run after this many steps (tests and benchmarks)", minimum=1)
    build_benchmark: bool = _f(True, "build the embedded benchmark when it is missing")

    def distill_method(self) -> tuple[str, bool]:
        """('emktd', True) for 'emktd+kd'."""
        method, with_kd = parse_method(self.method)
        return method.name, with_kd

    def resolved_beta(self) -> float:
        return self.beta if self.beta is not None else parse_method(self.method)[0].default_beta

    def resolved_monitor(self) -> str:
        return self.monitor or ("segmentation" if self.objective == "segmentation" else "classification")

    def decoder_overrides(self) -> dict:
        """The mask decoder's settings this config sets (the rest stay the model preset's)."""
        return {name: getattr(self, name) for name in ("seg_decoder_dim", "seg_skip_channels", "seg_visual_taps",
                                                       "seg_object_logits") if getattr(self, name) is not None}

    def path(self, value: str) -> Path:
        """A path of this config: a relative one names what exists under the working directory, else
        the place under the repository root (where the defaults, weights/ and data/, live)."""
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        return Path.cwd() / path if path.exists() else REPO / path


PRESETS: dict[str, dict] = {
    # The embedded benchmark, both tasks at once (what `python training/distill.py` runs): the settings
    # the bundled student (weights/student) was trained with, learning rate and lambda chosen on val.
    "embedded": dict(lr=2e-3, epochs=30, lam=1.0),
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

# Older run folders wrote "no value" as a sentinel; they still resume.
_LEGACY_NONE = {"beta": -1.0, "seg_decoder_dim": -1, "student_image_size": 0, "monitor": "", "max_train_clips": 0,
                "max_eval_clips": 0, "stop_after_steps": 0, "teacher_cache_dir": "", "out": "", "vggsound_csv": "",
                "clip_dir": "", "train_json": "", "eval_json": "", "label_csv": ""}


class ConfigError(ValueError):
    """A value that does not fit its field; the message names the field."""


def _types() -> dict[str, tuple[type, bool]]:
    """field name -> (its type, whether it may be None)."""
    hints = typing.get_type_hints(RunConfig)
    out = {}
    for name, hint in hints.items():
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        out[name] = (next(a for a in args if a is not type(None)) if optional else hint, optional)
    return out


TYPES = _types()
META = {f.name: f.metadata for f in fields(RunConfig)}  # help, minimum and choices of each field
_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def check_value(name: str, value, source: str = ""):
    """``value`` for field ``name``, converted where lossless (an int for a float); raises ConfigError."""
    where = f"{source}: " if source else ""
    kind, optional = TYPES[name]
    meta = META[name]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}{name}: expected {_TYPE_NAMES[kind]}, got null")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{name}: expected {_TYPE_NAMES[kind]}{' or null' if optional else ''}, "
                          f"got {json.dumps(value)}")
    if kind is float and value != value:
        raise ConfigError(f"{where}{name}: expected a number, got NaN")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise ConfigError(f"{where}{name}: expected at least {meta['minimum']:g}, got {value}")
    choices = _choices(name)
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}{name}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _choices(name: str) -> tuple | None:
    choices = META[name]["choices"]
    return choices() if callable(choices) else choices


def _flag_value(name: str):
    """argparse's type for field ``name``: text -> the field's type, checked."""
    kind, optional = TYPES[name]

    def convert(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            if kind is bool:
                if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError
                value = text.lower() in ("1", "true", "yes", "on")
            else:
                value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {_TYPE_NAMES[kind]}, got {text!r}") from None
        try:
            return check_value(name, value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None

    convert.__name__ = _TYPE_NAMES[kind]  # argparse names the type in its error
    return convert


def validate(config: RunConfig) -> None:
    """What depends on more than one field; raises SystemExit listing every problem."""
    problems = []
    try:
        method, _ = parse_method(config.method)
    except ValueError as exc:
        problems.append(str(exc))
    entry = DATASET_ENTRIES[config.dataset]
    problems += entry.problems(config)
    if config.mixup and config.objective != "classification":
        problems.append("mixup mixes class targets, not masks: use it with --objective classification only")
    if config.monitor_folds == 1:
        problems.append("monitor_folds 1: cross-fitting needs at least 2 folds (0 turns it off)")
    if config.probe_holdout >= 0.5:
        problems.append(f"probe_holdout {config.probe_holdout}: hold out less than half of the training clips")
    for name in ("audio_augment", "image_augment", "modality_dropout"):
        if getattr(config, name) > 1:
            problems.append(f"{name} {getattr(config, name)}: a probability, at most 1")
    if config.train_source == "stream" and (config.dataset != "embedded" or config.task != "teacher"):
        problems.append("train_source stream composes clips of the embedded benchmark to pretrain a teacher: use it "
                        "with --dataset embedded --task teacher (students learn from the fixed train split)")
    taught = (config.task == "distill" and config.method != "none") or (config.task == "teacher" and config.contrastive)
    if config.transfer_pool and (config.dataset != "embedded" or not taught):
        problems.append("transfer_pool composes unlabelled clips of the embedded benchmark's pool, which only a "
                        "teacher's targets (--task distill, a method other than none) or the contrastive term "
                        "(--task teacher --contrastive W) can teach: use it with --dataset embedded and one of them")
    if config.transfer_pool and config.mixup:
        problems.append("mixup mixes class targets, which transfer-pool clips do not have: use one or the other")
    if config.init_from and config.task != "teacher":
        problems.append("init_from starts a teacher's training from saved weights: use it with --task teacher")
    if config.fill_teacher_cache and not config.teacher_cache_dir:
        problems.append("fill_teacher_cache needs teacher_cache_dir")
    if problems:
        raise SystemExit("invalid configuration:\n  " + "\n  ".join(problems))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python training/distill.py",
        description="Distil an audio-visual student with EM-KTD (or a baseline), or train a teacher. "
                    "With no arguments: the embedded benchmark, the bundled teacher, EM-KTD + KD.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="embedded", help="starting values (default embedded)")
    p.add_argument("--config", type=Path, help="a JSON object of config values (applied after the preset)")
    for f in fields(RunConfig):
        meta, default = f.metadata, f.default if f.default is not MISSING else None
        choices = method_names() if f.name == "method" else _choices(f.name)
        extra = f"; one of {', '.join(map(str, choices))}" if choices else ""
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_flag_value(f.name), default=None,
                       metavar=TYPES[f.name][0].__name__.upper(),
                       help=f"{meta['help']}{extra}" + ("" if default is None else f" (default {default!r})"))
    return p


def read_file(path: Path) -> dict:
    """A config file's values, each checked against its field."""
    try:
        values = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        raise SystemExit(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SystemExit(f"{path}: the config file is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(values, dict):
        raise SystemExit(f"{path}: expected a JSON object of config values, got a {type(values).__name__}")
    unknown = sorted(set(values) - set(META))
    if unknown:
        raise SystemExit(f"{path}: unknown config key(s) {unknown}; see --help")
    try:
        return {k: check_value(k, v, str(path)) for k, v in values.items()}
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None


def from_args(argv=None) -> RunConfig:
    args = parser().parse_args(argv)
    config = replace(RunConfig(), **PRESETS[args.preset])
    if args.config is not None:
        config = replace(config, **read_file(args.config))
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
    """A run folder's config.json (older folders' sentinels read as None)."""
    data = json.loads(Path(path).read_text())
    data.pop("resolved", None)
    for name, sentinel in _LEGACY_NONE.items():
        if name in data and data[name] == sentinel:
            data[name] = None
    return RunConfig(**data)


__all__ = ["RunConfig", "PRESETS", "ConfigError", "validate", "from_args", "to_json", "load", "parser",
           "check_value", "read_file"]
