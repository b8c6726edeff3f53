"""Every run behind the README's results tables, in one resumable command.

    python -m training.experiments.evidence            # run what is missing, record each run, print the tables
    python -m training.experiments.evidence --list     # the plan and what is already recorded
    python -m training.experiments.evidence --only kd-s0 none-s0

Each run writes its folder under runs/evidence/<name> and, once finished, a record in
results/<name>.json (see results.py).  A run that already has a record is skipped; one that
was interrupted is resumed from its last checkpoint.  Records can be made over several
sittings and machines: the table groups them by setting, whatever produced them.

The plan, in order:
1. The sweeps of EM-KTD + KD, evaluated on the *val* split (the test split selects nothing):
   the student's learning rate (at lambda 1), then lambda at that rate.  The values with the
   best val top-1 + mIoU are the ones every later run uses.
2. The bundled student: EM-KTD + KD, 30 epochs, otherwise ``python training/distill.py``'s
   settings, also evaluating the teacher (its S4/MS3 figures and the monitor's weights by mode).
3. The comparison on test, on a shorter schedule (``--epochs``, 6 by default: a budget of
   2 CPU cores): no distillation, KD, KTD + KD and EM-KTD + KD over three seeds; AT, SPKD,
   MTST, FitNets (+ KD) and KTD with the linear and polynomial kernels over one; EM-KTD + KD
   with the student at half the teacher's input resolution (the teacher's token grid pooled).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from . import results

REPO = Path(__file__).resolve().parents[2]
DISTILL = REPO / "training" / "distill.py"

LAMBDAS = (0.25, 1.0, 4.0)
DEFAULT_LAMBDA = 1.0
LRS = (5e-4, 2e-3)  # the student's learning rate, chosen first (at the default lambda)
DEFAULT_LR = 5e-4
BUNDLED_EPOCHS = 30
# Every run reads the teacher's outputs from one disk cache, filled by the first run.
CACHE = ["--teacher-cache-dir", ".cache/emktd/teacher", "--fill-teacher-cache", "true"]


def sweep_name(lr: float, lam: float) -> str:
    return f"sweep-lam{lam:g}-val" if lr == DEFAULT_LR else f"sweep-lr{lr:g}-lam{lam:g}-val"


def sweep_run(epochs: int, lr: float, lam: float) -> tuple[str, list[str]]:
    return (sweep_name(lr, lam), ["--method", "emktd+kd", "--lam", str(lam), "--lr", str(lr), "--eval-split", "val",
                                  "--epochs", str(epochs), "--eval-teacher", "false", *CACHE])


def lr_plan(epochs: int) -> list[tuple[str, list[str]]]:
    return [sweep_run(epochs, lr, DEFAULT_LAMBDA) for lr in LRS]


def lambda_plan(epochs: int, lr: float) -> list[tuple[str, list[str]]]:
    return [sweep_run(epochs, lr, lam) for lam in LAMBDAS]


def main_plan(epochs: int, lam: float, lr: float) -> list[tuple[str, list[str]]]:
    short = ["--epochs", str(epochs), "--eval-teacher", "false", "--lr", str(lr), *CACHE]
    plan = [("bundled-emktd+kd-s0", ["--method", "emktd+kd", "--lam", str(lam), "--epochs", str(BUNDLED_EPOCHS),
                                     "--lr", str(lr), *CACHE])]
    def seeded(seed):
        s = ["--seed", str(seed)]
        return [(f"none-s{seed}", ["--method", "none", *s, *short]),
                (f"kd-s{seed}", ["--method", "kd", *s, *short]),
                (f"ktd+kd-rbf-s{seed}", ["--method", "ktd+kd", "--kernel", "rbf", *s, *short]),
                (f"emktd+kd-s{seed}", ["--method", "emktd+kd", "--lam", str(lam), *s, *short])]

    # one seed of everything first, then the further seeds
    plan += seeded(0)
    for method in ("at+kd", "spkd+kd", "mtst+kd", "fitnets+kd"):
        plan.append((f"{method}-s0", ["--method", method, *short]))
    for kernel in ("linear", "poly"):
        plan.append((f"ktd+kd-{kernel}-s0", ["--method", "ktd+kd", "--kernel", kernel, *short]))
    plan.append(("emktd+kd-64px-s0", ["--method", "emktd+kd", "--lam", str(lam), "--student-image-size", "64",
                                      *short]))
    plan += seeded(1) + seeded(2)
    return plan


def _val_score(results_dir: Path, name: str) -> float | None:
    path = results_dir / f"{name}.json"
    if not path.is_file():
        return None
    student = json.loads(path.read_text())["student"]
    return student["top1"] + student["mIoU"]


def _select(scores: dict[float, float | None], default: float) -> float | None:
    """The key with the best val top-1 + mIoU (ties to the default); None until every run is recorded."""
    if any(v is None for v in scores.values()):
        return None
    best = max(scores.values())
    return default if scores[default] == best else max(scores, key=scores.get)


def selected_lr(results_dir: Path) -> float | None:
    return _select({lr: _val_score(results_dir, sweep_name(lr, DEFAULT_LAMBDA)) for lr in LRS}, DEFAULT_LR)


def selected_lambda(results_dir: Path, lr: float) -> float | None:
    return _select({lam: _val_score(results_dir, sweep_name(lr, lam)) for lam in LAMBDAS}, DEFAULT_LAMBDA)


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6, help="schedule of the comparison and sweep runs")
    p.add_argument("--only", nargs="*", default=None, help="run only these names")
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "evidence")
    p.add_argument("--results", type=Path, default=results.RESULTS)
    args = p.parse_args(argv)

    def stage(plan):
        for name, flags in plan:
            if (args.only is None or name in args.only) and not (args.results / f"{name}.json").is_file():
                run_one(name, flags, args.runs, args.results, sys.executable)

    if args.list:
        lr = selected_lr(args.results)
        lam = selected_lambda(args.results, lr) if lr is not None else None
        print(f"selected on val: lr {lr if lr is not None else 'not yet'}, lambda {lam if lam is not None else 'not yet'}")
        plan = lr_plan(args.epochs) + lambda_plan(args.epochs, lr or DEFAULT_LR) + main_plan(
            args.epochs, lam or DEFAULT_LAMBDA, lr or DEFAULT_LR)
        for name, flags in plan:
            state = "recorded" if (args.results / f"{name}.json").is_file() else "to run"
            print(f"{name:28s} {state:9s} {' '.join(flags)}")
        return
    stage(lr_plan(args.epochs))
    lr = selected_lr(args.results) or DEFAULT_LR
    stage(lambda_plan(args.epochs, lr))
    lam = selected_lambda(args.results, lr)
    if lam is None:
        if args.only is None:
            raise SystemExit("the lambda sweep did not complete")
        lam = DEFAULT_LAMBDA
    print(f"selected on val: lr {lr}, lambda {lam}", flush=True)
    stage(main_plan(args.epochs, lam, lr))
    print(results.report(args.results))


if __name__ == "__main__":
    main()
