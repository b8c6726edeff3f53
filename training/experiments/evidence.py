"""The method comparison behind the README's "Where EM-KTD stands", in one resumable command.

    python -m training.experiments.evidence            # run what is missing, record each run, print the tables
    python -m training.experiments.evidence --list     # the plan, what is recorded, what val chose
    python -m training.experiments.evidence --only tune-kd-t0-val
    python -m training.experiments.evidence --parallel 2   # two runs at a time, a core each

Each run writes its folder under runs/evidence/<name> and, once finished, a record in
results/<name>.json (see results.py).  A run that already has a record is skipped; one that
was interrupted is resumed from its last checkpoint, so the plan can span sittings and
machines.  Every run reads the teacher's outputs from one disk cache, filled by the first.  A run
whose config equals a finished run's in everything but its evaluation (EVALUATION_FIELDS) starts
from that run's final checkpoint and only evaluates: the first seed of each method's comparison is
its chosen tuning trial, evaluated on test (its record names the trial in ``trained_in``).

The plan, in order (nothing is selected on test):
1. **Schedule** (val): the student without distillation at each of SCHEDULES epochs and at
   SCHEDULE_CHECK; the comparison's length is the first of SCHEDULES whose val mIoU is within
   SCHEDULE_TOLERANCE points of the next longer run's (segmentation has levelled off), else the
   longest of SCHEDULES, the most the plan can afford; the run at SCHEDULE_CHECK then says how
   far from levelled off that length is.
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
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from emktd.files import write_text_atomic
from emktd.monitor import MONITOR_CONFIG, MONITOR_WEIGHTS
from training.run import config as cfg
from training.run.methods import parse
from training.run.pipeline import FOLDS_WEIGHTS

from . import results

REPO = Path(__file__).resolve().parents[2]
DISTILL = REPO / "training" / "distill.py"

SCHEDULES = (10, 20, 40)  # the lengths the comparison can take
SCHEDULE_CHECK = 80  # only the next longer run of the longest
SCHEDULE_TOLERANCE = 1.0  # points of val mIoU
TRIALS = 4
SEEDS = (0, 1, 2)
METHODS_COMPARED = ("none", "kd", "at+kd", "spkd+kd", "mtst+kd", "fitnets+kd", "ktd+kd", "emktd+kd")
DEFAULTS = {"lr": 2e-3, "lam": 1.0, "gamma": 0.5}  # the embedded preset's; beta: the method's default
SPACE = {"lr": (3e-4, 4e-3), "beta": (0.1, 10.0), "lam": (0.1, 10.0), "gamma": (0.1, 2.0)}  # beta: x default
# Every run reads decoded clips from one disk cache, filled as the first runs go, in the training
# process (on 2 cores a separate loading process only competes with the step); a run gives the same
# steps either way.  Distillation runs read the teacher's outputs from another, filled by the first.
DATA = ["--clip-cache-dir", ".cache/emktd/clips", "--workers", "0"]
CACHE = [*DATA, "--teacher-cache-dir", ".cache/emktd/teacher", "--fill-teacher-cache", "true"]
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
                                      "--eval-teacher", "false", "--lr", f"{DEFAULTS['lr']:g}", *DATA])
            for e in (*SCHEDULES, SCHEDULE_CHECK)]


def trial_name(method: str, k: int, epochs: int) -> str:
    """The record of ``method``'s trial ``k``: the student without distillation at its defaults is the
    schedule run of the chosen length (the same method, learning rate, length and seed), not run twice."""
    return f"sched-none-e{epochs}-val" if (method, k) == ("none", 0) else f"tune-{method}-t{k}-val"


def tuning_plan(epochs: int) -> list[tuple[str, list[str]]]:
    """Round-robin over the methods, so that a partial run of it has trials of every method."""
    plan = []
    for k in range(TRIALS):
        for method in METHODS_COMPARED:
            name = trial_name(method, k, epochs)
            if not name.startswith("tune-"):
                continue  # recorded by the schedule stage
            plan.append((name, ["--method", method, *flags_of(trials(method)[k]), "--epochs", str(epochs),
                                "--eval-split", "val", "--eval-teacher", "false", *CACHE]))
    return plan


def comparison_plan(epochs: int, chosen: dict[str, dict[str, float] | None]) -> list[tuple[str, list[str]]]:
    """Every method at its chosen setting and the controls at EM-KTD's, seed by seed; a method whose
    setting is not chosen yet (None, or missing) has no runs yet, and the controls wait for EM-KTD's."""
    plan = []
    em = chosen.get("emktd+kd")
    for seed in SEEDS:
        common = ["--seed", str(seed), "--epochs", str(epochs), *CACHE]
        for method in METHODS_COMPARED:
            if chosen.get(method) is None:
                continue
            # the reference's first seed also evaluates the teacher: the monitor's view by mode
            teacher = "true" if method == "emktd+kd" and seed == 0 else "false"
            plan.append((f"cmp-{method}-s{seed}", ["--method", method, *flags_of(chosen[method]), *common,
                                                   "--eval-teacher", teacher]))
        for name, (method, extra) in CONTROLS.items() if em is not None else ():
            setting = {k: v for k, v in em.items() if k in knobs(method)}
            teacher = "true" if "monitor" in " ".join(extra) and seed == 0 else "false"
            plan.append((f"cmp-{name}-s{seed}", ["--method", method, *flags_of(setting), *extra, *common,
                                                 "--eval-teacher", teacher]))
    return plan


def _val(results_dir: Path, name: str) -> dict | None:
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text())["student"] if path.is_file() else None


def chosen_schedule(results_dir: Path) -> int | None:
    """The comparison's length from the schedule runs; None until the records settle it.  The run at
    SCHEDULE_CHECK does not enter the choice: it says how far from levelled off the choice is."""
    found = {e: _val(results_dir, f"sched-none-e{e}-val") for e in SCHEDULES}
    for e, longer in zip(SCHEDULES, SCHEDULES[1:]):
        if found[e] is None or found[longer] is None:
            return None
        if 100 * ((found[longer].get("mIoU") or 0.0) - (found[e].get("mIoU") or 0.0)) < SCHEDULE_TOLERANCE:
            return e
    return SCHEDULES[-1]  # none shorter levelled off: the longest affordable


def chosen_setting(results_dir: Path, method: str, epochs: int) -> dict[str, float] | None:
    """``method``'s trial with the best val top-1 + mIoU (the first on ties); None until all of
    its trials are recorded."""
    scores = []
    for k in range(TRIALS):
        found = _val(results_dir, trial_name(method, k, epochs))
        if found is None:
            return None
        scores.append(found["top1"] + (found.get("mIoU") or 0.0))
    return trials(method)[int(np.argmax(scores))]


def chosen_settings(results_dir: Path, epochs: int) -> dict[str, dict[str, float] | None]:
    """Every method's chosen setting, None for a method whose trials are not all recorded."""
    return {method: chosen_setting(results_dir, method, epochs) for method in METHODS_COMPARED}


# A page's grids block; the command in its start marker may name the records' folder (--results).
GRIDS_BLOCK = re.compile(r"(?P<start><!-- grids:start \(python -m training\.experiments\.evidence --grids"
                         r"(?: --results (?P<dir>[\w/.-]+))?\) -->\n)(?P<body>.*?)(?P<end><!-- grids:end -->)", re.S)


def grids_folder(match: re.Match, default: Path) -> Path:
    """The records a grids block is drawn from: the folder its marker names (from the repository
    root), else ``default``."""
    return REPO / match["dir"] if match["dir"] else default


def grid_table(results_dir: Path) -> str:
    """Every method's tuning trials, their val scores where recorded, and the one chosen."""
    epochs = chosen_schedule(results_dir)
    lines = [f"Tuning on val at {epochs if epochs is not None else '(not yet chosen)'} epochs, {TRIALS} runs per "
             "method (top-1 and mIoU in %, seen and new clips together; the best top-1 + mIoU is chosen):", "",
             "| method | trial | lr | beta | lambda | gamma | val top-1 | val mIoU | chosen |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for method in METHODS_COMPARED:
        # a method's choice is shown once its own trials are in
        chosen = chosen_setting(results_dir, method, epochs) if epochs is not None else None
        for k, setting in enumerate(trials(method)):
            found = _val(results_dir, trial_name(method, k, epochs)) if epochs is not None else None
            cells = [f"{setting[knob]:g}" if knob in setting else "-" for knob in ("lr", "beta", "lam", "gamma")]
            score = ([f"{100 * found['top1']:.1f}", f"{100 * (found.get('mIoU') or 0.0):.1f}"] if found
                     else ["to run", ""])
            mark = "yes" if chosen == setting else ""
            lines.append(f"| {method} | {k} | {' | '.join(cells)} | {' | '.join(score)} | {mark} |")
    return "\n".join(lines)


def update_grids(page: Path, results_dir: Path) -> None:
    """Rewrite the grids block of ``page`` with what ``--grids`` prints now."""
    text = Path(page).read_text()
    updated, count = GRIDS_BLOCK.subn(lambda m: m["start"] + grid_table(grids_folder(m, results_dir)) + "\n"
                                      + m["end"], text)
    if count != 1:
        raise SystemExit(f"{page}: expected one grids block (<!-- grids:start ... --> ... <!-- grids:end -->)")
    Path(page).write_text(updated)


# Fields that choose only how a finished student is evaluated, or where its folder is: two runs equal in
# every other field train the same student (the same steps from the same seed, the same code and teacher).
EVALUATION_FIELDS = ("eval_split", "eval_teacher", "max_eval_clips", "out", "resume", "stop_after_steps")
TRAINING_STATE = ("checkpoints/last.pt", "log.jsonl", "final_student_sha256.txt", MONITOR_WEIGHTS, MONITOR_CONFIG,
                  FOLDS_WEIGHTS)  # what a finished run's evaluation reads besides its config


def training_of(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in EVALUATION_FIELDS}


def same_training(name: str, flags: list[str], runs_dir: Path) -> Path | None:
    """A finished run under ``runs_dir`` that trained the student ``flags`` describe, only to evaluate
    it elsewhere (the first seed's comparison run of a method is its chosen tuning trial, on test);
    None when there is none.  Only a run that trained its own student qualifies."""
    if not runs_dir.is_dir():
        return None
    wanted = training_of(json.loads(cfg.to_json(cfg.from_args(flags))))
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.name != name):
        if not all((folder / f).is_file() for f in ("config.json", "metrics.json", "checkpoints/last.pt")):
            continue
        if results.trained_in(folder) is None and training_of(json.loads((folder / "config.json").read_text())) == wanted:
            return folder
    return None


def adopt(donor: Path, folder: Path, flags: list[str]) -> None:
    """Start ``folder`` as ``flags`` (with ``--out folder``) from ``donor``'s finished training: its last
    checkpoint, log and monitor, and a ``trained_in`` line in the log.  Resuming it then trains no
    step and only evaluates.  The config is written last, so an interrupted copy is copied again."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").unlink(missing_ok=True)
    for part in TRAINING_STATE:
        if (donor / part).is_file():
            (folder / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(donor / part, folder / part)
    with open(folder / "log.jsonl", "a") as log:
        log.write(json.dumps({"time": round(time.time(), 3), "type": "trained_in", "run": donor.name}) + "\n")
    write_text_atomic(folder / "config.json", cfg.to_json(cfg.from_args([*flags, "--out", str(folder)])))


def resumable(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "checkpoints" / "last.pt").is_file()


def command(name: str, flags: list[str], runs_dir: Path, python: str) -> list[str]:
    """The command that runs ``name``: from the start, or resumed from its last checkpoint."""
    folder = runs_dir / name
    if resumable(folder):
        return [python, str(DISTILL), "--out", str(folder), "--resume", "true"]
    return [python, str(DISTILL), *flags, "--out", str(folder)]


def run_all(todo_now, runs_dir: Path, results_dir: Path, parallel: int, python: str) -> None:
    """Run what ``todo_now(excluded)`` lists, ``parallel`` runs at a time, each with its share of the
    cores and its console in its folder; record each as it finishes (so later stages unlock)."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    running: dict[str, tuple[subprocess.Popen, object]] = {}
    done, failed = set(), []

    def start(name: str, flags: list[str]) -> None:
        folder = runs_dir / name
        if (folder / "metrics.json").is_file():  # finished before its record was written
            print(results.record(folder, name, results_dir), flush=True)
            done.add(name)
            return
        if not resumable(folder):
            donor = same_training(name, flags, runs_dir)
            if donor is not None:
                adopt(donor, folder, flags)
                print(f"== {name}: the student {donor.name} trained, evaluated as this run asks", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        argv = command(name, flags, runs_dir, python)
        console = open(folder / "console.txt", "a")
        print(f"== {name} ({threads} thread{'s' * (threads > 1)}): {' '.join(argv[1:])}", flush=True)
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=console, stderr=subprocess.STDOUT)
        running[name] = (process, console)

    def reap() -> None:
        for name, (process, console) in list(running.items()):
            if process.poll() is None:
                continue
            console.close()
            del running[name]
            done.add(name)
            if process.returncode != 0:
                failed.append(name)
                print(f"{name}: the run failed (exit {process.returncode}; see {runs_dir / name / 'console.txt'})",
                      flush=True)
            else:
                print(results.record(runs_dir / name, name, results_dir), flush=True)

    try:
        while True:
            for name, flags in todo_now(done | set(running)):
                if len(running) >= parallel or failed:
                    break
                start(name, flags)
            if not running:
                break
            time.sleep(5)
            reap()
    finally:  # interrupted (Ctrl-C, SIGTERM): stop the runs too; each resumes from its last checkpoint
        for process, console in running.values():
            process.terminate()
            process.wait()
            console.close()
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}; rerun this command to resume them")


def plans(results_dir: Path) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """The stages whose plan is known now: later stages wait for what val chooses (a method's
    comparison runs for its own trials, the controls for EM-KTD's); earlier stages come first."""
    stages = [("schedule", schedule_plan())]
    epochs = chosen_schedule(results_dir)
    if epochs is not None:
        stages.append(("tuning", tuning_plan(epochs)))
        chosen = chosen_settings(results_dir, epochs)
        if any(setting is not None for setting in chosen.values()):
            stages.append(("comparison", comparison_plan(epochs, chosen)))
    return stages


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=None, help="run only these names")
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--grids", nargs="?", const="-", default=None, metavar="PAGE",
                   help="print each method's tuning trials and choice and exit; with PAGE, rewrite its grids block")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "evidence")
    p.add_argument("--results", type=Path, default=results.RESULTS)
    p.add_argument("--parallel", type=int, default=1,
                   help="runs at a time, the cores shared evenly among them (on 2 cores, 2 runs of one thread "
                        "each do about 1.4 times the work of one run of two threads)")
    args = p.parse_args(argv)
    if args.grids is not None:
        if args.grids == "-":
            print(grid_table(args.results))
        else:
            update_grids(Path(args.grids), args.results)
        return
    if args.list:
        epochs = chosen_schedule(args.results)
        chosen = chosen_settings(args.results, epochs) if epochs is not None else {}
        print(f"schedule chosen on val: {epochs if epochs is not None else 'not yet'} epochs")
        for method, setting in chosen.items():
            print(f"chosen on val for {method}: {' '.join(flags_of(setting)) if setting else 'not yet'}")
        for stage, plan in plans(args.results):
            done = sum((args.results / f"{name}.json").is_file() for name, _ in plan)
            print(f"-- {stage}: {done} of {len(plan)} recorded")
            for name, flags in plan:
                state = "to run"
                if (args.results / f"{name}.json").is_file():
                    state = "recorded"
                elif (donor := same_training(name, flags, args.runs)) is not None:
                    state = f"to evaluate (trained as {donor.name})"
                print(f"{name:34s} {state:9s} {' '.join(flags)}")
        return
    def todo_now(excluded: set[str]) -> list[tuple[str, list[str]]]:
        return [(name, flags) for _, plan in plans(args.results) for name, flags in plan
                if (args.only is None or name in args.only) and name not in excluded
                and not (args.results / f"{name}.json").is_file()]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that run_all stops its runs on the way out
    run_all(todo_now, args.runs, args.results, args.parallel, sys.executable)
    print(results.report(args.results))


if __name__ == "__main__":
    main()
