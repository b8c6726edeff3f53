"""The method comparison behind the README's "Where EM-KTD stands", in one resumable command.

    python -m training.experiments.evidence            # run what is missing, record each run, print the tables
    python -m training.experiments.evidence --list     # the plan, what is recorded, what val chose
    python -m training.experiments.evidence --only tune-kd-t0-val

Each run writes its folder under runs/evidence/<name> and, once finished, a record in
results/<name>.json (see results.py).  A run that already has a record is skipped; one that
was interrupted is resumed from its last checkpoint, so the plan can span sittings and
machines.  Every run reads the teacher's outputs from one disk cache, filled by the first.

The plan, in order (nothing is selected on test):
1. **Schedule** (val): the student without distillation at each of SCHEDULES epochs; the
   comparison's length is the first whose val mIoU is within SCHEDULE_TOLERANCE points of the
   next longer one's (segmentation has levelled off), else the longest.
2. **Tuning** (val, that schedule): every method gets the same budget, TRIALS runs: its
   defaults, then configurations drawn from its own space (a Latin hypercube on log scales,
   seeded by the method's name, so that each knob's range is covered evenly): the learning
   rate for all, beta for methods with a distillation term, lambda for EM-KTD, the RBF
   kernel's gamma for kernel methods.  The trial with the best val top-1 + mIoU
   (seen and new clips together) is the method's setting.
3. **Comparison** (test, three seeds each): every method at its setting; and the controls, all
   at EM-KTD's chosen setting, each changing one thing: static weights (``emktd-static``, the
   monitor's mean weight per modality on train), KTD at EM-KTD's beta (weights all 1), a
   cross-fitted monitor (``--monitor-folds 5``), and segmentation probes as the monitor.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

from training.run.methods import METHODS, parse

from . import results

REPO = Path(__file__).resolve().parents[2]
DISTILL = REPO / "training" / "distill.py"

SCHEDULES = (10, 20, 40)
SCHEDULE_TOLERANCE = 1.0  # points of val mIoU
TRIALS = 4
SEEDS = (0, 1, 2)
METHODS_COMPARED = ("none", "kd", "at+kd", "spkd+kd", "mtst+kd", "fitnets+kd", "ktd+kd", "emktd+kd")
DEFAULTS = {"lr": 2e-3, "lam": 1.0, "gamma": 0.5}  # the embedded preset's; beta: the method's default
SPACE = {"lr": (3e-4, 4e-3), "beta": (0.1, 10.0), "lam": (0.1, 10.0), "gamma": (0.1, 2.0)}  # beta: x default
# Every run reads the teacher's outputs from one disk cache, filled by the first run.
CACHE = ["--teacher-cache-dir", ".cache/emktd/teacher", "--fill-teacher-cache", "true"]
CONTROLS = {  # name: (method, extra flags) at EM-KTD's chosen setting
    "emktd-static+kd": ("emktd-static+kd", []),
    "ktd+kd-at-emktd-beta": ("ktd+kd", []),
    "emktd+kd-crossfit5": ("emktd+kd", ["--monitor-folds", "5"]),
    "emktd+kd-segmonitor": ("emktd+kd", ["--monitor", "segmentation"]),
}


def knobs(method: str) -> tuple[str, ...]:
    """What is tuned for ``method``: the learning rate, and beta, lambda, gamma where they act."""
    entry, _ = parse(method)
    found = ["lr"]
    if entry.term is not None:
        found.append("beta")
    if entry.uses_monitor:
        found.append("lam")
    if entry.uses_kernel:
        found.append("gamma")
    return tuple(found)


def trials(method: str) -> list[dict[str, float]]:
    """The method's TRIALS settings: its defaults first, then log-uniform draws from its space."""
    entry, _ = parse(method)
    names = knobs(method)
    default = {"lr": DEFAULTS["lr"], "beta": entry.default_beta, "lam": DEFAULTS["lam"], "gamma": DEFAULTS["gamma"]}
    rng = np.random.default_rng(zlib.crc32(method.encode()))
    draws = TRIALS - 1
    # Latin hypercube: each knob's log-range cut into as many strata as draws, each stratum drawn once
    strata = {k: rng.permutation(draws) for k in names}
    found = [{k: default[k] for k in names}]
    for i in range(draws):
        draw = {}
        for k in names:
            low, high = (math.log(v) for v in SPACE[k])
            scale = default["beta"] if k == "beta" else 1.0
            value = math.exp(low + (strata[k][i] + rng.uniform()) / draws * (high - low))
            draw[k] = float(f"{scale * value:.2g}")
        found.append(draw)
    return found


def flags_of(setting: dict[str, float]) -> list[str]:
    return [part for k, v in setting.items() for part in (f"--{k}", f"{v:g}")]


def schedule_plan() -> list[tuple[str, list[str]]]:
    return [(f"sched-none-e{e}-val", ["--method", "none", "--epochs", str(e), "--eval-split", "val",
                                      "--eval-teacher", "false", "--lr", f"{DEFAULTS['lr']:g}"]) for e in SCHEDULES]


def tuning_plan(epochs: int) -> list[tuple[str, list[str]]]:
    """Round-robin over the methods, so that a partial run of it has trials of every method."""
    plan = []
    for k in range(TRIALS):
        for method in METHODS_COMPARED:
            plan.append((f"tune-{method}-t{k}-val", ["--method", method, *flags_of(trials(method)[k]),
                                                     "--epochs", str(epochs), "--eval-split", "val",
                                                     "--eval-teacher", "false", *CACHE]))
    return plan


def comparison_plan(epochs: int, chosen: dict[str, dict[str, float]]) -> list[tuple[str, list[str]]]:
    """Every method at its chosen setting and the controls at EM-KTD's, seed by seed."""
    plan = []
    em = chosen["emktd+kd"]
    for seed in SEEDS:
        common = ["--seed", str(seed), "--epochs", str(epochs), *CACHE]
        for method in METHODS_COMPARED:
            # the reference's first seed also evaluates the teacher: the monitor's view by mode
            teacher = "true" if method == "emktd+kd" and seed == 0 else "false"
            plan.append((f"cmp-{method}-s{seed}", ["--method", method, *flags_of(chosen[method]), *common,
                                                   "--eval-teacher", teacher]))
        for name, (method, extra) in CONTROLS.items():
            setting = {k: v for k, v in em.items() if k in knobs(method)}
            teacher = "true" if "monitor" in " ".join(extra) and seed == 0 else "false"
            plan.append((f"cmp-{name}-s{seed}", ["--method", method, *flags_of(setting), *extra, *common,
                                                 "--eval-teacher", teacher]))
    return plan


def _val(results_dir: Path, name: str) -> dict | None:
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text())["student"] if path.is_file() else None


def chosen_schedule(results_dir: Path) -> int | None:
    """The comparison's length from the schedule runs; None until all are recorded."""
    found = [_val(results_dir, name) for name, _ in schedule_plan()]
    if any(f is None for f in found):
        return None
    miou = [100 * (f.get("mIoU") or 0.0) for f in found]
    for e, here, longer in zip(SCHEDULES, miou, miou[1:]):
        if longer - here < SCHEDULE_TOLERANCE:
            return e
    return SCHEDULES[-1]


def chosen_settings(results_dir: Path) -> dict[str, dict[str, float]] | None:
    """Each method's trial with the best val top-1 + mIoU (the first on ties); None until every
    trial of every method is recorded."""
    chosen = {}
    for method in METHODS_COMPARED:
        scores = []
        for k in range(TRIALS):
            found = _val(results_dir, f"tune-{method}-t{k}-val")
            if found is None:
                return None
            scores.append(found["top1"] + (found.get("mIoU") or 0.0))
        chosen[method] = trials(method)[int(np.argmax(scores))]
    return chosen


def run_one(name: str, flags: list[str], runs_dir: Path, results_dir: Path, python: str) -> None:
    folder = runs_dir / name
    if (folder / "metrics.json").is_file():
        results.record(folder, name, results_dir)
        return
    if (folder / "config.json").is_file() and (folder / "checkpoints" / "last.pt").is_file():
        command = [python, str(DISTILL), "--out", str(folder), "--resume", "true"]
    else:
        command = [python, str(DISTILL), *flags, "--out", str(folder)]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{name}: the run failed (exit {done.returncode}); rerun this command to resume it")
    print(results.record(folder, name, results_dir), flush=True)


def plans(results_dir: Path) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """The stages whose plan is known now: later stages wait for what val chooses."""
    stages = [("schedule", schedule_plan())]
    epochs = chosen_schedule(results_dir)
    if epochs is not None:
        stages.append(("tuning", tuning_plan(epochs)))
        chosen = chosen_settings(results_dir)
        if chosen is not None:
            stages.append(("comparison", comparison_plan(epochs, chosen)))
    return stages


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=None, help="run only these names")
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "evidence")
    p.add_argument("--results", type=Path, default=results.RESULTS)
    args = p.parse_args(argv)
    if args.list:
        epochs, chosen = chosen_schedule(args.results), chosen_settings(args.results)
        print(f"schedule chosen on val: {epochs if epochs is not None else 'not yet'} epochs")
        for method, setting in (chosen or {}).items():
            print(f"chosen on val for {method}: {' '.join(flags_of(setting))}")
        for stage, plan in plans(args.results):
            done = sum((args.results / f"{name}.json").is_file() for name, _ in plan)
            print(f"-- {stage}: {done} of {len(plan)} recorded")
            for name, flags in plan:
                state = "recorded" if (args.results / f"{name}.json").is_file() else "to run"
                print(f"{name:34s} {state:9s} {' '.join(flags)}")
        return
    finished = set()
    while True:  # each pass may unlock the next stage
        todo = [(name, flags) for _, plan in plans(args.results) for name, flags in plan
                if (args.only is None or name in args.only) and name not in finished
                and not (args.results / f"{name}.json").is_file()]
        if not todo:
            break
        name, flags = todo[0]
        run_one(name, flags, args.runs, args.results, sys.executable)
        finished.add(name)
    print(results.report(args.results))


if __name__ == "__main__":
    main()
