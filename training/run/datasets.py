"""The datasets a run can use, one registry entry each.

An entry builds a run's training and evaluation parts and its label list from the config,
and says which objectives it supports, which config fields it needs, which evaluation parts
are reported apart (S4 and MS3 of the embedded benchmark) and, where the data records them,
each clip's informativeness mode and group (seen or new instances).  ``--dataset``, :func:`config.validate`, the data builder
and the results tables ask the entry.

Adding a dataset: a reader in ``training/readers/`` (with tests on files the test writes),
then one :func:`register` call below (with a test that a run takes a step on it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

OBJECTIVES = ("multitask", "classification", "segmentation")


@dataclass
class Parts:
    """What an entry builds: the label list and named readers (one name per evaluation part)."""

    labels: list[str]
    train: list[tuple[str, object]]
    eval: list[tuple[str, object]]
    pool: object | None = None  # unlabelled clips trained on with teacher targets only (--transfer-pool)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    summary: str
    objectives: tuple[str, ...]
    build: Callable[..., Parts]  # (run config, emktd.features.FbankConfig, image size) -> Parts
    required: tuple[str, ...] = ()  # config fields the dataset needs
    parts: tuple[str, ...] = ()  # evaluation parts reported apart in the results tables
    modes: Callable[..., dict[str, str]] = field(default=lambda config: {})  # run config -> {clip id: mode}
    groups: tuple[str, ...] = ()  # groups of evaluation clips reported apart (seen and new instances)
    group_of: Callable[..., dict[str, str]] = field(default=lambda config: {})  # run config -> {clip id: group}

    def problems(self, config) -> list[str]:
        """What keeps this dataset from serving the run config ``config``."""
        found = [f"{self.name} needs --{name.replace('_', '-')}" for name in self.required
                 if getattr(config, name) is None]
        if config.objective not in self.objectives:
            found.append(f"{self.name} supports --objective {' or '.join(self.objectives)}, "
                         f"not {config.objective}")
        return found


DATASET_ENTRIES: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    if entry.name in DATASET_ENTRIES:
        raise ValueError(f"dataset {entry.name!r} is registered already")
    DATASET_ENTRIES[entry.name] = entry
    return entry


def _capped(reader, cap: int | None):
    if cap and len(reader.items) > cap:
        reader.items = reader.items[:cap]
    return reader


# ---------------------------------------------------------------- the entries

def _embedded(config, fbank, image_size) -> Parts:
    from training.embedded.build import ensure_built
    from training.embedded.clips import read_classes
    from training.readers import avsbench

    root = ensure_built(config.path(config.data_root), config.build_benchmark)
    labels = read_classes(root)
    s4, ms3 = root / "avsbench" / "Single-source", root / "avsbench" / "Multi-sources"

    def split(name, cap):
        return [("S4", _capped(avsbench.S4Dataset(s4, name, labels, fbank, image_size), cap)),
                ("MS3", _capped(avsbench.MS3Dataset(ms3, name, labels, fbank, image_size), cap))]

    train = split("train", config.max_train_clips)
    if config.train_source == "stream":
        from training.embedded.stream import StreamReader

        train = [("stream", StreamReader(root, labels, fbank, image_size, config.stream_clips, config.seed))]
    pool = None
    if config.transfer_pool:
        from training.embedded.stream import PoolReader

        pool = PoolReader(root, labels, fbank, image_size, config.transfer_pool, config.seed)
    return Parts(labels, train, split(config.eval_split, config.max_eval_clips), pool)


def _embedded_field(name: str, default: str | None = None):
    def read(config) -> dict[str, str]:
        from training.embedded.clips import read_clips

        root = config.path(config.data_root)
        if not (root / "clips.jsonl").is_file():
            return {}
        return {r["id"]: r.get(name, default) for r in read_clips(root)}

    return read


def _avsbench(kind: str):
    def build(config, fbank, image_size) -> Parts:
        from training.readers import avsbench

        reader = avsbench.S4Dataset if kind == "S4" else avsbench.MS3Dataset
        root = config.path(config.data_root)
        train = _capped(reader(root, "train", None, fbank, image_size), config.max_train_clips)
        evaluation = _capped(reader(root, config.eval_split, train.labels, fbank, image_size), config.max_eval_clips)
        return Parts(train.labels, [(kind, train)], [(kind, evaluation)])

    return build


def _vggsound(config, fbank, image_size) -> Parts:
    from training.readers import vggsound

    csv = config.path(config.vggsound_csv)
    labels = sorted({row[2] for row in vggsound.read_vggsound_csv(csv)})
    common = dict(labels=labels, fbank=fbank, image_size=image_size, num_frames=config.frames_per_clip)
    clips = config.path(config.clip_dir)
    return Parts(labels, [("vggsound", _capped(vggsound.VGGSoundDataset(csv, clips, "train", **common),
                                          config.max_train_clips))],
                 [("vggsound", _capped(vggsound.VGGSoundDataset(csv, clips, config.eval_split, **common),
                                  config.max_eval_clips))])


def _cavmae_json(config, fbank, image_size) -> Parts:
    from training.readers import cavmae

    common = dict(fbank=fbank, image_size=image_size, num_frames=config.frames_per_clip)
    labels_csv = config.path(config.label_csv)
    train = _capped(cavmae.CavMaeJsonDataset(config.path(config.train_json), labels_csv, **common),
                    config.max_train_clips)
    evaluation = _capped(cavmae.CavMaeJsonDataset(config.path(config.eval_json), labels_csv, **common),
                         config.max_eval_clips)
    return Parts(train.labels, [("cavmae", train)], [("cavmae", evaluation)])


register(DatasetEntry("embedded", "the embedded benchmark: every clip in the S4 or MS3 layout, classes and masks",
                      OBJECTIVES, _embedded, parts=("S4", "MS3"), modes=_embedded_field("mode"),
                      groups=("seen", "new"), group_of=_embedded_field("part", "seen")))
register(DatasetEntry("vggsound", "VGGSound: vggsound.csv and a folder of clips", ("classification",), _vggsound,
                      required=("vggsound_csv", "clip_dir")))
register(DatasetEntry("cavmae-json", "CAV-MAE's json data files with pre-extracted frames", ("classification",),
                      _cavmae_json, required=("train_json", "eval_json", "label_csv")))
register(DatasetEntry("avsbench-s4", "AVSBench-object, single source (S4)", ("segmentation",), _avsbench("S4"),
                      parts=("S4",)))
register(DatasetEntry("avsbench-ms3", "AVSBench-object, multiple sources (MS3)", ("segmentation",),
                      _avsbench("MS3"), parts=("MS3",)))

DATASETS = tuple(DATASET_ENTRIES)
