"""Run records and the results tables built from them.

    python -m training.experiments.results record runs/RUN --name emktd+kd-s0   # results/<name>.json, a few KB
    python -m training.experiments.results table                                 # the README's tables, from results/*.json
    python -m training.experiments.results figure --out docs/monitor_view.png    # the monitor's view, drawn
    python -m training.experiments.results table --only standing compute         # some of them, by name
    python -m training.experiments.results page                                  # the tables in docs/results.md and README.md, rewritten
    python -m training.experiments.results clips                                 # per-clip outcomes of older records

A record keeps what a table needs from a finished run: the resolved config, the teacher's
and the student's metrics on the evaluation split (with S4 and MS3 apart), clip counts,
parameter counts, hardware and wall time; each test clip's outcome (top-1 hit, summed IoU of
its frames) goes beside it to ``clips/<name>.json``, for intervals that resample the test clips.
Runs of one setting that differ only in the seed are one table row: mean and standard deviation
over the seeds.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from training.run.datasets import DATASET_ENTRIES
from training.run.folder import RunFolder
from training.run.methods import METHODS

RESULTS = Path(__file__).resolve().parents[2] / "results"
SETTING = ("task", "method", "kernel", "gamma", "lam", "beta", "student", "student_image_size", "epochs", "dataset",
           "eval_split", "lr", "train_source", "init_from", "audio_augment", "image_augment", "modality_dropout",
           "seg_skip_channels", "seg_visual_taps", "seg_object_logits", "imagenet_prior", "monitor", "monitor_folds",
           "teacher_preset", "transfer_pool", "contrastive")
CLASSIFICATION_COLUMNS = [("top-1", ("top1",), 100), ("mAP", ("mAP",), 100)]


def columns(datasets: list[str], present: set[str] | None = None) -> list[tuple[str, tuple[str, ...], float]]:
    """The table's columns: classification, then mIoU and legacy F of each evaluation part that the
    records' dataset entries report apart (S4 and MS3 for the embedded benchmark); where an entry
    reports groups of clips apart (seen and new instances), the first group's under the plain
    names and each further group's top-1, mAP and mIoU under its name (only the groups in
    ``present``, when given: records made before a group existed have no column for it)."""
    parts = []
    for name in datasets:
        entry = DATASET_ENTRIES.get(name)
        parts += [p for p in (entry.parts if entry else ()) if p not in parts]
    groups = _groups(datasets)
    first = ("by_group", groups[0]) if groups else ()
    found = [(label, first + keys, scale) for label, keys, scale in CLASSIFICATION_COLUMNS]
    found += [column for part in parts for column in (
        (f"{part} mIoU", first + ("segmentation_by_part", part, "mIoU"), 100),
        (f"{part} F (legacy)", first + ("segmentation_by_part", part, "legacy_fscore"), 100))]
    for group in (g for g in groups[1:] if present is None or g in present):
        found += [(f"{group} {label}", ("by_group", group) + keys, scale) for label, keys, scale in CLASSIFICATION_COLUMNS]
        found += [(f"{group} {part} mIoU", ("by_group", group, "segmentation_by_part", part, "mIoU"), 100)
                  for part in parts]
    return found


def _groups(datasets) -> list[str]:
    """The groups of evaluation clips that the datasets' entries report apart, in order."""
    groups = []
    for name in datasets:
        entry = DATASET_ENTRIES.get(name)
        groups += [g for g in (entry.groups if entry else ()) if g not in groups]
    return groups


def _summary(metrics: dict) -> dict:
    keep = ("clips", "frames", "top1", "top5", "mAP", "mAUC", "mIoU", "legacy_fscore", "fscore", "top1_by_mode",
            "em_weights_by_mode", "segmentation_by_part")
    found = {k: metrics[k] for k in keep if k in metrics}
    if "by_group" in metrics:
        found["by_group"] = {name: _summary(group) for name, group in metrics["by_group"].items()}
    return found


def trained_in(run: Path) -> str | None:
    """The run whose finished training ``run`` took over to evaluate it elsewhere (its log's
    ``trained_in`` line, written by the evidence runner), or None when ``run`` trained its own student."""
    return next((r["run"] for r in RunFolder(run, 0).records() if r.get("type") == "trained_in"), None)


def record(run: Path, name: str, out_dir: Path = RESULTS, evaluation_from: Path | None = None) -> Path:
    """Keep ``run``'s results as ``out_dir/name.json``.  ``evaluation_from``: a teacher run's record takes
    its evaluation from another run's teacher evaluation (a distillation run evaluates its teacher too)."""
    run = Path(run)
    for needed in ("config.json", "metrics.json"):
        if not (run / needed).is_file():
            raise SystemExit(f"{run}: missing {needed}; expected a finished run folder")
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    entry = {"name": name, "config": config,
             "student": _summary(metrics["student"]),
             "teacher": _summary(metrics["teacher"]) if "teacher" in metrics else None,
             **{k: metrics.get(k) for k in ("hardware", "world_size", "train_seconds", "wall_seconds", "train_clips",
                                             "student_parameters", "teacher_parameters", "manifest", "probes", "benchmark",
                                             "pool_clips")}}
    probes = RunFolder(run, 0).probes()
    if probes:  # all the log keeps of them (records before PROBE_REPORT grew kept less in metrics.json)
        entry["probes"] = probes
    adopted = trained_in(run)
    if adopted is not None:  # its wall time holds the other run's training too: see compute_summary
        entry["trained_in"] = adopted
    if evaluation_from is not None:
        other = json.loads((Path(evaluation_from) / "metrics.json").read_text())
        if config["task"] != "teacher" or "teacher" not in other:
            raise SystemExit(f"--evaluation-from: {run} must be a teacher run and {evaluation_from} a run that "
                             "evaluated its teacher")
        entry["student"] = _summary(other["teacher"])
        entry["evaluated_in"] = str(evaluation_from)
        other_config = json.loads((Path(evaluation_from) / "config.json").read_text())
        entry["config"] = {**config, "eval_split": other_config.get("eval_split", "test")}  # where it was evaluated
    out_dir.mkdir(parents=True, exist_ok=True)
    per_clip = (other["teacher"] if evaluation_from is not None else metrics["student"]).get("per_clip")
    if per_clip is not None:
        write_clips(out_dir, name, entry["config"].get("eval_split", "test"), per_clip)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(entry, indent=1) + "\n")
    return path


def write_clips(out_dir: Path, name: str, split: str, per_clip: dict) -> Path:
    """``out_dir/clips/name.json``: one record's outcome clip by clip, on one line."""
    path = Path(out_dir) / CLIPS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "split": split, **per_clip}, separators=(",", ":")) + "\n")
    return path


def backfill_clips(results_dir: Path = RESULTS, split: str = "test") -> list[Path]:
    """Per-clip outcomes for the distillation records on ``split`` written before evaluation kept
    them: the student in the record's run folder is evaluated again, and its outcomes are kept
    only if they give back the record's top-1, mAP and mIoU (the same student, the same clips)."""
    import torch

    from training.run import config as cfg
    from training.run import data
    from training.run.evaluate import evaluate
    from training.run.pipeline import build_models_and_data
    from emktd.hub import load_pretrained

    written, refused = [], []
    for entry in _entries(results_dir, split):
        c = entry["config"]
        if c["task"] != "distill" or (Path(results_dir) / CLIPS / f"{entry['name']}.json").is_file():
            continue
        run = Path(c.get("out") or "")
        if not (run / "config.json").is_file() or not (run / "student").is_dir():
            print(f"{entry['name']}: its run folder {run} is not here; left without per-clip outcomes", flush=True)
            continue
        config = cfg.load(run / "config.json")
        setup = build_models_and_data(config, torch.device("cpu"))
        student = load_pretrained(run / "student").float()
        again = evaluate(config, student, setup.data.eval, torch.device("cpu"), data.clip_modes(config), None,
                         False, "eval student", data.clip_groups(config))
        differ = [f"{key} {again.get(key)}, the record {entry['student'][key]}" for key in ("top1", "mAP", "mIoU")
                  if entry["student"].get(key) is not None
                  and (again.get(key) is None or abs(entry["student"][key] - again[key]) > 1e-6)]
        if differ:
            refused.append(f"{entry['name']}: evaluating {run / 'student'} again gives {'; '.join(differ)}; expected "
                           "the same student on the same clips")
            print(refused[-1], flush=True)
            continue
        written.append(write_clips(results_dir, entry["name"], split, again["per_clip"]))
        print(written[-1], flush=True)
    if refused:
        raise SystemExit("\n".join(refused))
    return written


CLIPS = "clips"


def _get(metrics: dict, keys: tuple[str, ...]):
    """The value at ``keys``; a record written before clips were grouped holds only seen-instance
    clips, so its metrics stand for the first group's."""
    if keys[:1] == ("by_group",) and isinstance(metrics, dict) and "by_group" not in metrics:
        first = next((e.groups[0] for e in DATASET_ENTRIES.values() if e.groups), None)
        if keys[1] != first:
            return None
        keys = keys[2:]
    for key in keys:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def _cell(values: list[float], scale: float) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _records(results_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("*.json"))]


def _entries(results_dir: Path, split: str) -> list[dict]:
    return [e for e in _records(results_dir) if e["config"].get("eval_split", "test") == split]


def table(results_dir: Path = RESULTS, split: str = "test") -> str:
    entries = _entries(results_dir, split)
    if not entries:
        raise SystemExit(f"{results_dir}: no run records on {split}; write some with "
                         "`python -m training.experiments.results record`")
    present = {g for e in entries for g in e["student"].get("by_group", {})}
    cols = columns(sorted({e["config"]["dataset"] for e in entries}), present)
    header = "| model | method | seeds | parameters | " + " | ".join(c[0] for c in cols) + " |"
    lines = [header, "|---|---|---:|---:|" + "---:|" * len(cols)]
    for _, runs in _grouped(entries):
        label, method = _labels(runs[0]["config"])
        seeds = len({r["config"]["seed"] for r in runs})
        cells = [_cell([_get(r["student"], keys) for r in runs], scale) for _, keys, scale in cols]
        lines.append(f"| {label} | {method} | {seeds} | {runs[0].get('student_parameters') or 0:,} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _grouped(entries: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """Runs of one setting (all but the seed) together; the teacher first, then longer schedules,
    then methods from the plainest to EM-KTD."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in entries:
        groups[_setting(e["config"])].append(e)
    order = list(METHODS)

    def rank(item):
        c = item[1][0]["config"]
        base = c["method"].split("+")[0]
        return (c["task"] != "teacher", -c["epochs"],
                order.index(base) if base in order else len(order),
                c.get("student_image_size") or 0, str(c.get("kernel")), str(item[0]))

    return sorted(groups.items(), key=rank)


def _beta(c: dict) -> float | None:
    """The distillation weight a run used: its own, or its method's default."""
    beta = c.get("beta")
    if beta is None or beta == -1:  # the method's default (-1: how older records say so)
        beta = (c.get("resolved") or {}).get("beta")
    return beta


def _setting(c: dict) -> tuple:
    """What makes runs one row: every SETTING value, the weight as used, and the weights a teacher
    started from by whether there were any (not by their path)."""
    return tuple(bool(c.get(k)) if k == "init_from" else _beta(c) if k == "beta" else c.get(k) for k in SETTING)


def _labels(c: dict) -> tuple[str, str]:
    """A row's model and method cells."""
    if c["task"] == "teacher":
        how = ("pretraining stream" if c.get("train_source") == "stream"
               else "fine-tuned" if c.get("init_from") else "from scratch")
        options = [f"{name} {c[key]:g}" for key, name in (("audio_augment", "audio aug"), ("image_augment", "image aug"),
                   ("modality_dropout", "modality dropout")) if c.get(key)]
        preset = c.get("teacher_preset")  # named where the run built it (records before the field: unnamed)
        model = f"teacher ({preset})" if preset and not c.get("init_from") else "teacher"
        return model, ", ".join([how, *options, *_decoder(c), *_unlabelled(c), f"lr {c['lr']:g}", f"{c['epochs']} ep"])
    label = c["student"] + (f" @{c['student_image_size']}px" if c.get("student_image_size") else "")
    kernel = {"rbf": f"rbf, γ={c.get('gamma')}", "poly": f"poly, d={c.get('degree')}, c={c.get('coef0')}",
              "linear": "linear"}.get(c.get("kernel"), c.get("kernel"))
    entry = METHODS.get(c["method"].split("+")[0])
    method = c["method"] + (f" ({kernel})" if entry is not None and entry.uses_kernel else "")
    lam = f", λ={c['lam']}" if entry is not None and entry.uses_monitor else ""
    monitor = [f"{_monitor_kind(c)} monitor"] if (entry is not None and entry.uses_monitor and (
        c.get("monitor") or c.get("monitor_folds"))) else []  # the plain monitor goes unnamed
    beta = [f"β={_beta(c):g}"] if entry is not None and entry.term is not None and _beta(c) is not None else []
    return label, ", ".join([f"{method}{lam}", *beta, *monitor, *_decoder(c), *_unlabelled(c), f"lr {c['lr']:g}",
                             f"{c['epochs']} ep"])


def _unlabelled(c: dict) -> list[str]:
    """What a run learnt without labels, as row-label parts: the contrastive term, the transfer pool."""
    return (([f"contrastive {c['contrastive']:g}"] if c.get("contrastive") else [])
            + ([f"transfer pool {c['transfer_pool']}"] if c.get("transfer_pool") else []))


def _decoder(c: dict) -> list[str]:
    """A run's mask-decoder options that differ from its preset's, as row-label parts."""
    from emktd.models import PRESETS

    preset = PRESETS.get(c.get("teacher_preset") if c["task"] == "teacher" else c.get("student"))
    skips = "backbone pyramid" if preset is not None and preset.visual_backbone else "pixel skips"
    parts = [f"{name} {c[key]}" for key, name in (("seg_skip_channels", skips), ("seg_visual_taps", "block taps"))
             if c.get(key)]
    return (parts + (["object logits"] if c.get("seg_object_logits") else [])
            + (["ImageNet prior"] if c.get("imagenet_prior") else []))


MODE_NAMES = {"clean": "both tell", "audio": "only the audio", "visual": "only the picture",
              "multi": "two sources"}


def modes_table(results_dir: Path = RESULTS, split: str = "test", task: str | None = None) -> str:
    """Top-1 by informativeness mode, for each group of clips (seen and new instances) apart
    (the runs of one ``task`` only, when given)."""
    entries = [e for e in _entries(results_dir, split) if e["student"].get("top1_by_mode")
               and (task is None or e["config"]["task"] == task)]
    if not entries:
        return "no run records with top-1 by informativeness mode"
    groups = _groups(sorted({e["config"]["dataset"] for e in entries})) or ["all"]
    lines = ["| model | method | seeds | parameters | instances | " + " | ".join(MODE_NAMES.values()) + " |",
             "|---|---|---:|---:|---|" + "---:|" * len(MODE_NAMES)]
    for _, runs in _grouped(entries):
        label, method = _labels(runs[0]["config"])
        seeds = len({r["config"]["seed"] for r in runs})
        for group in groups:
            keys = ("by_group", group, "top1_by_mode") if group != "all" else ("top1_by_mode",)
            values = [[_get(r["student"], keys + (mode,)) for r in runs] for mode in MODE_NAMES]
            if all(v is None for vs in values for v in vs):
                continue
            lines.append(f"| {label} | {method} | {seeds} | {runs[0].get('student_parameters') or 0:,} | {group} | "
                         + " | ".join(_cell(v, 100) for v in values) + " |")
    return "\n".join(lines)


def sweep_table(results_dir: Path = RESULTS) -> str:
    """The sweeps: runs evaluated on the val split (nothing is selected on test)."""
    if not _entries(results_dir, "val"):
        return "no runs evaluated on val"
    return table(results_dir, split="val")


def teacher_modes_table(results_dir: Path = RESULTS) -> str:
    """Top-1 by informativeness mode of the teacher runs on val (where only the picture tells the
    class, a teacher's prior knowledge of pictures shows)."""
    return modes_table(results_dir, "val", task="teacher")


MONITOR_MODES = {"audio": "only the audio", "visual": "only the picture", "clean": "both",
                 "multi": "both (two sources)"}


def _monitor_kind(c: dict) -> str:
    kind = c.get("monitor") or (c.get("resolved") or {}).get("monitor") or "classification"
    return kind + (f", {c['monitor_folds']}-fold cross-fitted" if c.get("monitor_folds") else "")


def monitor_view(results_dir: Path = RESULTS) -> dict[str, dict[str, dict[str, float]]]:
    """Mean EM weight per monitor kind, informativeness mode and modality, over the records whose
    run evaluated its teacher with a monitor (the teacher's tokens on the evaluation clips)."""
    rows = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for e in _records(results_dir):
        method = METHODS.get(e["config"].get("method", "").split("+")[0])
        if method is not None and method.static_weights:  # constants: nothing to see by mode
            continue
        if e.get("teacher") and e["teacher"].get("em_weights_by_mode"):
            for mode, weights in e["teacher"]["em_weights_by_mode"].items():
                for modality, w in weights.items():
                    rows[_monitor_kind(e["config"])][mode][modality].append(w)
    return {kind: {mode: {m: statistics.mean(v) for m, v in per.items()} for mode, per in modes.items()}
            for kind, modes in rows.items()}


def monitor_table(results_dir: Path = RESULTS) -> str:
    """The entropy monitor at work: mean EM weight per modality by informativeness mode (teacher tokens)."""
    view = monitor_view(results_dir)
    if not view:
        return "no EM-KTD run records"
    lines = ["| monitor | test clips where ... tells the class | audio weight | visual weight | fused weight |",
             "|---|---|---:|---:|---:|"]
    for kind in sorted(view):
        for mode, name in MONITOR_MODES.items():
            if mode in view[kind]:
                lines.append(f"| {kind} | {name} | " + " | ".join(f"{view[kind][mode][m]:.3f}"
                                                                  for m in ("audio", "visual", "fused")) + " |")
    return "\n".join(lines)


PROBE_SETS = (("train", "training clips it fitted"), ("held_out", "held-out training clips"),
              ("out_of_fold", "out of fold"))


def probes_table(results_dir: Path = RESULTS, split: str = "test") -> str:
    """What the monitor's probes can tell, per monitor kind and modality: accuracy and mean entropy
    on the training clips they were fitted on, on the training clips held out to stop them, and
    (cross-fitted) on each fold's clips by the probe that never saw them, which is what such a run
    weights its training samples with.  Means over the records on ``split`` that keep the probes'
    report (seeds apart only in which run fitted them)."""
    found = defaultdict(list)
    for e in _entries(results_dir, split):
        if e["config"]["task"] == "distill" and e.get("probes"):
            found[_monitor_kind(e["config"])].append(e["probes"])
    if not found:
        return f"no records on {split} keep their monitor's probes"
    lines = ["| monitor | records | probe on the teacher's | "
             + " | ".join(f"accuracy, {name}" for _, name in PROBE_SETS) + " | "
             + " | ".join(f"entropy, {name}" for _, name in PROBE_SETS) + " |",
             "|---|---:|---|" + "---:|" * (2 * len(PROBE_SETS))]
    for kind in sorted(found):
        reports = found[kind]
        for modality in ("audio", "visual", "fused"):
            def cell(where, key, scale, digits):
                values = [r[where][modality][key] for r in reports if modality in r.get(where, {})]
                return f"{scale * statistics.mean(values):.{digits}f}" if values else "-"
            cells = [cell(w, "accuracy", 100, 1) for w, _ in PROBE_SETS] + [cell(w, "entropy", 1, 2)
                                                                           for w, _ in PROBE_SETS]
            lines.append(f"| {kind} | {len(reports)} | {modality} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def monitor_figure(out: Path, results_dir: Path = RESULTS) -> Path:
    """The monitor's view as grouped bars: one panel per monitor kind, a group per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = monitor_view(results_dir)
    if not view:
        raise SystemExit(f"{results_dir}: no records of runs that evaluated their teacher with a monitor")
    kinds = sorted(view)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.4), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        modes = [m for m in MONITOR_MODES if m in view[kind]]
        for j, modality in enumerate(("audio", "visual", "fused")):
            ax.bar([i + (j - 1) * 0.27 for i in range(len(modes))], [view[kind][m][modality] for m in modes],
                   width=0.27, label=modality)
        ax.set_xticks(range(len(modes)), [MONITOR_MODES[m].replace("both (", "both\n(").replace("the ", "the\n")
                                                  for m in modes])
        ax.set_title(f"{kind} monitor")
        ax.set_xlabel("test clips where ... tells the class")
    axes[0][0].set_ylabel("mean EM weight exp(-λH)")
    axes[0][-1].legend(title="probe on the\nteacher's", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


REFERENCE = "emktd+kd"
SIGNIFICANCE_METRICS = (("top-1", "top1"), ("mAP", "mAP"), ("mIoU", "mIoU"))


def _is_reference(c: dict) -> bool:
    """EM-KTD + KD with the plain monitor: what every other row is compared with."""
    return (c["task"] == "distill" and c["method"] == REFERENCE and not c.get("monitor")
            and not c.get("monitor_folds"))


def _test_p(row: dict[int, float], ref: dict[int, float]) -> tuple[float | None, float | None]:
    """Two-sided p-values of row against ref: paired by seed (the seeds both have) and Welch's."""
    from scipy import stats

    def p_value(test, a, b, spread):
        scale = max(abs(v) for v in (*a, *b)) or 1.0
        if spread <= (1e-9 * scale) ** 2:  # no variation (up to rounding): the t statistic is 0/0 or infinite
            # the same values: no difference to test; a constant difference (two seeds each k clips
            # apart, say) is no evidence of a certain one: no p-value
            return 1.0 if abs(statistics.mean(a) - statistics.mean(b)) <= 1e-9 * scale else None
        with warnings.catch_warnings():  # one side constant (two seeds with the same top-1): a valid test
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            return float(test(a, b).pvalue)

    common = sorted(set(row) & set(ref))
    paired = welch = None
    if len(common) >= 2:
        a, b = [row[k] for k in common], [ref[k] for k in common]
        paired = p_value(stats.ttest_rel, a, b, statistics.pvariance([x - y for x, y in zip(a, b)]))
    if len(row) >= 2 and len(ref) >= 2:
        a, b = list(row.values()), list(ref.values())
        welch = p_value(lambda a, b: stats.ttest_ind(a, b, equal_var=False), a, b,
                        statistics.pvariance(a) + statistics.pvariance(b))
    return paired, welch


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in their order: an adjusted value below
    alpha rejects that hypothesis with the chance of any false rejection in the family at most alpha."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _comparisons(results_dir: Path, split: str, metrics) -> tuple[list[tuple[list[dict], list[dict]]] | None, list]:
    """The distillation rows on ``split`` each with the EM-KTD + KD row of its schedule and student
    (None when there is no such reference), and the columns (heading, group of clips, key) of
    ``metrics`` ((label, key) pairs) on each group of clips the records report apart."""
    entries = [e for e in _entries(results_dir, split) if e["config"]["task"] == "distill"]
    grouped = _grouped(entries)
    scope = lambda c: (c["epochs"], c["student"], c.get("student_image_size"), c["dataset"])  # noqa: E731
    references = {}
    for _, runs in grouped:
        c = runs[0]["config"]
        if _is_reference(c) and len(runs) > len(references.get(scope(c), [])):
            references[scope(c)] = runs
    groups = _groups(sorted({e["config"]["dataset"] for e in entries})) or [None]
    cols = [(f"{group + ' ' if group and group != groups[0] else ''}{label}", group, key)
            for group in groups for label, key in metrics]
    if not references:
        return None, cols
    pairs = []
    for _, runs in grouped:
        ref = references.get(scope(runs[0]["config"]))
        if ref is not None and ref is not runs:
            pairs.append((runs, ref))
    return pairs, cols


@dataclass
class Difference:
    """One row's difference from EM-KTD + KD in one metric (points, row minus EM-KTD) with its
    p-values: paired by seed, Welch's, and the paired one Holm-adjusted over its table."""
    diff: float
    paired: float | None
    welch: float | None
    adjusted: float | None = None


def differences(results_dir: Path = RESULTS, split: str = "test"):
    """The comparison rows on ``split`` as ``(runs, reference runs, {column heading: Difference or
    None})``, and the columns ``(heading, group, key)``; None when there is no EM-KTD + KD row to
    compare with.  The paired p-values of all rows and columns are one family for Holm's adjustment."""
    pairs, cols = _comparisons(results_dir, split, SIGNIFICANCE_METRICS)
    if pairs is None:
        return None, cols
    rows = []
    for runs, ref in pairs:
        cells = {}
        for heading, group, key in cols:
            keys = ("by_group", group, key) if group else (key,)
            row_v = {r["config"]["seed"]: v for r in runs if (v := _get(r["student"], keys)) is not None}
            ref_v = {r["config"]["seed"]: v for r in ref if (v := _get(r["student"], keys)) is not None}
            if row_v and ref_v:
                diff = 100 * (statistics.mean(row_v.values()) - statistics.mean(ref_v.values()))
                cells[heading] = Difference(diff, *_test_p(row_v, ref_v))
            else:
                cells[heading] = None
        rows.append((runs, ref, cells))
    family = [d for _, _, cells in rows for d in cells.values() if d is not None and d.paired is not None]
    for d, adjusted in zip(family, holm([d.paired for d in family])):
        d.adjusted = adjusted
    return rows, cols


def significance_table(results_dir: Path = RESULTS, split: str = "test", alpha: float = 0.05) -> str:
    """Each row against EM-KTD + KD of the same schedule and student: the difference of the means
    (row minus EM-KTD, in points) with the p-value of the difference paired by seed and Welch's,
    for top-1, mAP and mIoU on each group of clips (seen and new instances).  A difference marked *
    holds with every paired p-value of the table taken as one family (Holm-adjusted p below alpha)."""
    rows, cols = differences(results_dir, split)
    if rows is None:
        return f"no {REFERENCE} runs on {split} to compare with"
    if not rows:
        return f"no runs on {split} to compare with {REFERENCE} yet"

    def cell(d: Difference | None) -> str:
        if d is None:
            return "-"
        p = ", ".join(f"{name} {_p(v)}" for name, v in (("p", d.paired), ("W", d.welch)) if v is not None)
        star = "*" if d.adjusted is not None and d.adjusted < alpha else ""
        return f"{d.diff:+.1f}{star}" + (f" ({p})" if p else "")

    keep = [h for h, _, _ in cols if any(cells[h] is not None for _, _, cells in rows)]  # columns some record fills
    lines = ["| model | method | seeds | " + " | ".join(f"Δ {h}" for h in keep) + " |",
             "|---|---|---:|" + "---:|" * len(keep)]
    for runs, _, cells in rows:
        label, method = _labels(runs[0]["config"])
        seeds = len({r["config"]["seed"] for r in runs})
        lines.append(f"| {label} | {method} | {seeds} | " + " | ".join(cell(cells[h]) for h in keep) + " |")
    return "\n".join(lines)


CLIP_KEYS = {"top1": "top1", "mIoU": "iou"}  # a record's metric -> the per-clip outcome it is the mean of
CLIP_METRICS = tuple((label, CLIP_KEYS[key]) for label, key in SIGNIFICANCE_METRICS if key in CLIP_KEYS)


def _clip_outcomes(results_dir: Path, runs: list[dict]) -> dict[int, dict]:
    """{seed: per-clip outcomes} of the runs whose clips file is there."""
    found = {}
    for r in runs:
        path = Path(results_dir) / CLIPS / f"{r['name']}.json"
        if path.is_file():
            found[r["config"]["seed"]] = json.loads(path.read_text())
    return found


def clip_interval(row: dict[int, dict], ref: dict[int, dict], group: str | None, metric: str, draws: int = 2000,
                  seed: int = 0) -> tuple[float, float, float] | None:
    """The difference row minus ref (in points) on the clips of ``group`` and the seeds both have, with
    its 95 % bootstrap interval: each draw resamples the seeds (paired) and the clips (paired), so
    the interval counts both what training varies and which clips happen to be in the split.
    ``metric``: "top1" (share of clips whose top class is right) or "iou" (mean IoU over the frames)."""
    import numpy as np

    seeds = sorted(set(row) & set(ref))
    if not seeds:
        return None
    ids = [set(i for i, g in zip(o["ids"], o["group"]) if group is None or g == group)
           for o in (*(row[s] for s in seeds), *(ref[s] for s in seeds))]
    common = sorted(set.intersection(*ids))
    if not common:
        return None

    def matrix(outcomes, key):
        out = []
        for s in seeds:
            o = outcomes[s]
            if o.get(key) is None:
                return None
            at = dict(zip(o["ids"], o[key]))
            out.append([at[i] for i in common])
        return np.asarray(out, dtype=float)

    keys = ("top1", None) if metric == "top1" else ("iou_sum", "frames")
    a, b = matrix(row, keys[0]), matrix(ref, keys[0])
    if a is None or b is None:
        return None
    if keys[1] is None:
        na = nb = np.ones_like(a)
    else:
        na, nb = matrix(row, keys[1]), matrix(ref, keys[1])
        if na.sum() == 0 or nb.sum() == 0:
            return None
    rng = np.random.default_rng(seed)
    si = rng.integers(len(seeds), size=(draws, len(seeds)))[:, :, None]
    ci = rng.integers(len(common), size=(draws, len(common)))[:, None, :]

    def ratio(x, n, axis=None):
        return x.sum(axis=axis) / np.maximum(n.sum(axis=axis), 1e-12)

    point = 100 * (ratio(a, na) - ratio(b, nb))
    diffs = 100 * (ratio(a[si, ci], na[si, ci], (1, 2)) - ratio(b[si, ci], nb[si, ci], (1, 2)))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(point), float(low), float(high)


def clip_table(results_dir: Path = RESULTS, split: str = "test") -> str:
    """The differences from EM-KTD + KD in top-1 and mIoU on each group of clips with 95 % intervals
    that resample seeds and clips (:func:`clip_interval`), for the rows whose records and whose
    reference's records keep per-clip outcomes."""
    pairs, cols = _comparisons(results_dir, split, CLIP_METRICS)
    if pairs is None:
        return f"no {REFERENCE} runs on {split} to compare with"
    rows = []
    for runs, ref in pairs:
        row_o, ref_o = _clip_outcomes(results_dir, runs), _clip_outcomes(results_dir, ref)
        cells = []
        for _, group, key in cols:
            found = clip_interval(row_o, ref_o, group, key)
            cells.append("-" if found is None else f"{found[0]:+.1f} [{found[1]:+.1f}, {found[2]:+.1f}]")
        if any(cell != "-" for cell in cells):
            label, method = _labels(runs[0]["config"])
            seeds = len(set(row_o) & set(ref_o))
            rows.append([label, method, str(seeds), *cells])
    if not rows:
        return f"no records on {split} keep per-clip outcomes to compare with {REFERENCE}"
    lines = ["| model | method | seeds | " + " | ".join(f"Δ {name} [95 %]" for name, _, _ in cols) + " |",
             "|---|---|---:|" + "---:|" * len(cols)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def standing_table(results_dir: Path = RESULTS, split: str = "test", alpha: float = 0.05) -> str:
    """Where EM-KTD + KD stands against each row, in top-1 and mIoU on each group of clips, and how
    sure that is: "sure" when both the paired p-value, Holm-adjusted over the differences table,
    is below ``alpha`` and the 95 % interval over seeds and clips excludes 0; "likely" when one of
    the two holds; "level" when neither does.  Ahead or behind by the sign of the difference.  A
    row with one seed in common with EM-KTD + KD has no paired p-value: at most "likely", and
    "untested" without per-clip outcomes either."""
    rows, cols = differences(results_dir, split)
    if not rows:
        return f"no runs on {split} to compare with {REFERENCE}"
    wanted = [(h, group, CLIP_KEYS[key]) for h, group, key in cols if key in CLIP_KEYS]
    table_rows = []
    for runs, ref, cells in rows:
        row_o, ref_o = _clip_outcomes(results_dir, runs), _clip_outcomes(results_dir, ref)
        verdicts = []
        for heading, group, key in wanted:
            d = cells.get(heading)
            if d is None:
                verdicts.append("-")
                continue
            interval = clip_interval(row_o, ref_o, group, key)
            if d.adjusted is None and interval is None:
                verdicts.append("untested")  # one seed and no per-clip outcomes: nothing to go by
                continue
            tested = d.adjusted is not None and d.adjusted < alpha
            bounded = interval is not None and (interval[1] > 0 or interval[2] < 0)
            # the sign on the seeds both have, which both criteria use
            side = "ahead" if (interval[0] if interval is not None else d.diff) < 0 else "behind"
            verdicts.append(f"{side}, sure" if tested and bounded else f"{side}, likely" if tested or bounded
                            else "level")
        label, method = _labels(runs[0]["config"])
        seeds = len({r["config"]["seed"] for r in runs} & {r["config"]["seed"] for r in ref})
        table_rows.append([label, method, str(seeds), *verdicts])
    keep = [i for i in range(len(wanted)) if any(row[3 + i] != "-" for row in table_rows)]  # columns with data
    lines = ["| model | method | seeds | " + " | ".join(f"EM-KTD on {wanted[i][0]}" for i in keep) + " |",
             "|---|---|---:|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(row[:3] + [row[3 + i] for i in keep]) + " |" for row in table_rows]
    return "\n".join(lines)


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def compute_summary(results_dir: Path = RESULTS) -> str:
    """The compute the records took: runs and wall-clock hours per hardware (core-hours where the
    hardware names its CPU threads).  A record that evaluates a student trained in another record
    (``trained_in``) adds its evaluation sitting only, not that training a second time."""
    seconds: dict[str, float] = defaultdict(float)
    runs: dict[str, int] = defaultdict(int)
    evaluations = 0
    for e in _records(results_dir):
        if e.get("wall_seconds") is not None:
            hardware = re.sub(r", 1 threads$", ", 1 thread", e.get("hardware") or "unknown")  # older records
            if e.get("trained_in"):  # its wall time: the other run's training, then this evaluation
                evaluations += 1
                seconds[hardware] += max(0.0, e["wall_seconds"] - (e.get("train_seconds") or 0.0))
            else:
                runs[hardware] += 1
                seconds[hardware] += e["wall_seconds"]
    if not seconds:
        return "no run records with wall times"
    lines = ["| hardware | runs | wall hours | CPU core-hours |", "|---|---:|---:|---:|"]
    for hardware, total in sorted(seconds.items()):
        hours = total / 3600
        threads = re.search(r", (\d+) threads?$", hardware)
        core = f"{hours * int(threads.group(1)):.1f}" if threads else "-"
        lines.append(f"| {hardware} | {runs[hardware]} | {hours:.1f} | {core} |")
    if evaluations:
        lines += ["", f"Besides these runs, {evaluations} record(s) evaluate a student trained in another record "
                  "on another split; the hours count their evaluation only."]
    return "\n".join(lines)


# The bundled pair's targets: the teacher's figures (name, keys under a record's "student" entry,
# target) and the student's, each as a fraction of the teacher's same figure (name, keys, least fraction).
TEACHER_TARGETS = (
    ("seen top-1", ("by_group", "seen", "top1"), 0.92),
    ("picture-only seen", ("by_group", "seen", "top1_by_mode", "visual"), 0.85),
    ("new top-1", ("by_group", "new", "top1"), 0.45),
    ("picture-only new", ("by_group", "new", "top1_by_mode", "visual"), 0.45),
    ("S4 mIoU", ("by_group", "seen", "segmentation_by_part", "S4", "mIoU"), 0.60),
    ("MS3 mIoU", ("by_group", "seen", "segmentation_by_part", "MS3", "mIoU"), 0.50),
    ("new S4 mIoU", ("by_group", "new", "segmentation_by_part", "S4", "mIoU"), 0.50),
)
STUDENT_TARGETS = (
    ("new top-1", ("by_group", "new", "top1"), 0.90),
    ("seen top-1", ("by_group", "seen", "top1"), 0.95),
    ("S4 mIoU", ("by_group", "seen", "segmentation_by_part", "S4", "mIoU"), 0.90),
    ("MS3 mIoU", ("by_group", "seen", "segmentation_by_part", "MS3", "mIoU"), 0.90),
    ("new S4 mIoU", ("by_group", "new", "segmentation_by_part", "S4", "mIoU"), 0.90),
)
MAX_STUDENT_PARAMETERS = 0.06  # of the teacher's


def figure(metrics: dict, keys: tuple[str, ...]) -> float | None:
    """The value under ``keys`` in a record's metrics, or None where it has none."""
    for key in keys:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return float(metrics)


def targets_table(results_dir: Path = RESULTS, split: str = "test") -> str:
    """The bundled pair against its targets: the teacher's figures, then each protocol's student as
    fractions of the teacher's (the records of ``split`` in ``results_dir``: one teacher run, students
    of the paper's protocol and of the transfer pool's; seeds averaged).  The records it reads are the
    teacher's ``teacher-s<seed>`` and the students' ``protocol-<name>-s<seed>``
    (``python -m training.experiments.protocols --split test``)."""
    entries = _entries(results_dir, split)
    teachers = [e for e in entries if e["config"]["task"] == "teacher" and re.fullmatch(r"teacher-s\d+", e["name"])]
    if not teachers:
        return f"no teacher record on {split}"
    teacher = teachers[0]["student"]
    met = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    lines = [f"| teacher ({split}) | target | {teachers[0]['name']} | met |", "|---|---:|---:|---|"]
    for name, keys, target in TEACHER_TARGETS:
        value = figure(teacher, keys)
        lines.append(f"| {name} | {100 * target:.0f} | {'-' if value is None else f'{100 * value:.1f}'} | "
                     f"{'-' if value is None else met(value >= target)} |")
    protocols = {}
    for e in entries:
        if e["config"]["task"] == "distill" and re.fullmatch(r"protocol-\w+-s\d+", e["name"]):
            protocols.setdefault("pool" if e["config"].get("transfer_pool") else "paper", []).append(e)
    if not protocols:
        return "\n".join(lines)
    names = [n for n in ("pool", "paper") if n in protocols]
    lines += ["", "| student, as a fraction of the teacher | least | "
              + " | ".join(f"{n} protocol | met" for n in names) + " |", "|---|---:|" + "---:|---|" * len(names)]
    teacher_parameters = teachers[0].get("student_parameters") or 0
    for name, keys, least in STUDENT_TARGETS:
        cells = []
        reference = figure(teacher, keys)
        for n in names:
            values = [figure(e["student"], keys) for e in protocols[n]]
            if reference in (None, 0) or None in values:
                cells += ["-", "-"]
                continue
            ratio = statistics.mean(values) / reference
            cells += [f"{100 * ratio:.0f} %", met(ratio >= least)]
        lines.append(f"| {name} | {100 * least:.0f} % | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        ratio = (protocols[n][0].get("student_parameters") or 0) / max(1, teacher_parameters)
        cells += [f"{100 * ratio:.1f} %", met(ratio <= MAX_STUDENT_PARAMETERS)]
    lines.append(f"| parameters (at most) | {100 * MAX_STUDENT_PARAMETERS:.0f} % | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TABLES = {  # name (for ``table --only``) -> the function that prints it, in the order ``table`` prints them
    "comparison": table, "differences": significance_table, "intervals": clip_table, "standing": standing_table,
    "modes": modes_table, "sweeps": sweep_table, "teachermodes": teacher_modes_table, "monitor": monitor_table,
    "probes": probes_table, "targets": targets_table,
    "compute": compute_summary}
ON_REQUEST = ("targets",)  # printed only when named: the current build's bundled pair against its targets


def report(results_dir: Path = RESULTS, only: list[str] | None = None) -> str:
    """Every table, or those named in ``only``: the comparison on test, its differences from EM-KTD
    with their p-values and with intervals over seeds and clips, where EM-KTD stands and how sure
    that is, top-1 by informativeness mode, the sweeps on val, the entropy monitor's weights and its
    probes, the compute spent."""
    unknown = sorted(set(only or ()) - set(TABLES))
    if unknown:
        raise ValueError(f"no table named {', '.join(unknown)}; the tables: {', '.join(TABLES)}")
    shown = [name for name in TABLES if name not in ON_REQUEST] if only is None else only
    return "\n\n".join(TABLES[name](results_dir) for name in TABLES if name in shown)


# A page's block of tables, rewritten by ``page``: the command in its start marker says what it holds.
PAGE_BLOCK = re.compile(r"<!-- (?P<name>results[\w-]*):start \(python -m training.experiments.results table"
                        r"(?: --dir (?P<dir>[\w/.-]+))?(?: --only(?P<only>(?: [a-z]+)+))?\) -->"
                        r"(?P<body>.*?)<!-- (?P=name):end -->", re.S)


def block_report(match: re.Match, root: Path = RESULTS.parent) -> str:
    """What the command named in a :data:`PAGE_BLOCK` match prints."""
    folder, only = match["dir"], match["only"]
    return report(root / folder if folder else RESULTS, only.split() if only else None)


def table_lines(text: str) -> list[str]:
    """The lines of ``text`` that are table rows."""
    return [line for line in text.split("\n") if line.startswith("|")]


def update_page(page: Path, root: Path = RESULTS.parent) -> int:
    """Rewrite the tables of each marked block of ``page`` with what its command prints now, in
    order, leaving the prose between them; returns the number of blocks.  A block must hold as
    many tables as its command prints (a new table needs its place, and caption, written first)."""
    text = Path(page).read_text()

    def rewrite(match):
        tables = [t for t in map(table_lines, block_report(match, root).split("\n\n")) if t]
        lines, runs, start = match["body"].split("\n"), [], None
        for i, line in enumerate(lines + [""]):
            if line.startswith("|") and start is None:
                start = i
            elif not line.startswith("|") and start is not None:
                runs.append((start, i))
                start = None
        if len(runs) != len(tables):
            raise SystemExit(f"{page}: the block {match['name']} holds {len(runs)} tables, its command prints "
                             f"{len(tables)}; place the missing ones first")
        for (a, b), table_rows in reversed(list(zip(runs, tables))):
            lines[a:b] = table_rows
        return match.group(0).replace(match["body"], "\n".join(lines))

    updated, count = PAGE_BLOCK.subn(rewrite, text)
    Path(page).write_text(updated)
    return count


PAGES = [RESULTS.parent / "docs" / "results.md", RESULTS.parent / "README.md"]  # the pages with blocks


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="keep a finished run's results in results/")
    r.add_argument("run", type=Path)
    r.add_argument("--name", required=True)
    r.add_argument("--evaluation-from", type=Path, default=None,
                   help="for a teacher run: take the evaluation from this run's teacher evaluation")
    t = sub.add_parser("table", help="print the results tables")
    t.add_argument("--dir", type=Path, default=RESULTS)
    t.add_argument("--only", nargs="+", choices=list(TABLES), metavar="NAME",
                   help=f"print only these tables ({', '.join(TABLES)})")
    u = sub.add_parser("page", help="rewrite the tables of the pages' marked blocks (docs/results.md, README.md)")
    u.add_argument("paths", type=Path, nargs="*", default=PAGES)
    sub.add_parser("clips", help="per-clip outcomes for older test records, by evaluating their run folders' "
                                 "students again (kept only where the record's metrics come back)")
    f = sub.add_parser("figure", help="draw the monitor's view (mean EM weights by mode) to a PNG")
    f.add_argument("--dir", type=Path, default=RESULTS)
    f.add_argument("--out", type=Path, default=Path("docs/monitor_view.png"))
    args = p.parse_args(argv)
    if args.command == "record":
        print(record(args.run, args.name, evaluation_from=args.evaluation_from))
    elif args.command == "page":
        for path in args.paths:
            print(f"{path}: {update_page(path)} blocks rewritten")
    elif args.command == "clips":
        import torch

        torch.set_num_threads(1)  # one thread, as the evidence runs evaluate (and beside them)
        print(f"{len(backfill_clips())} clips files written")
    elif args.command == "figure":
        print(monitor_figure(args.out, args.dir))
    else:
        print(report(args.dir, args.only))


if __name__ == "__main__":
    main()
