"""The two distillation protocols: the paper's (the labelled training clips only) and the
transfer pool's (those plus fresh unlabelled pool clips every epoch, taught by the teacher alone).

    python -m training.experiments.protocols --list     # the runs and which are done
    python -m training.experiments.protocols            # run what is missing, record each on val
    python -m training.experiments.protocols --split test --only pool    # one protocol, evaluated on test

On val the runs go to runs/protocols/<name> and are recorded as ``protocol-<name>-val``; on test
(``--split test``: the bundled pair's figures) to runs/protocols-test/<name>, recorded as
``protocol-<name>-s0``, where the run also evaluates its teacher on test.  Training is the same
for both splits: nothing is chosen on the split a run is evaluated on.  ``--only`` runs one
protocol, so that two commands can run side by side (one thread each: ``OMP_NUM_THREADS=1``).

Both distil the bundled teacher (``weights/teacher``) into ``bench-student`` with EM-KTD + KD at
the bundled student's settings (lr 2e-3, lambda 1, beta 666) for the same epochs from the same
seed, and differ only in ``--transfer-pool``.  Each run is a ``training/distill.py`` run in
runs/protocols/<name>, resumable like any (an interrupted command loses at most one checkpoint
interval); the records are ``protocol-<name>-val`` in results/ (the sweeps table, val split).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DISTILL = REPO / "training" / "distill.py"
ROOT = Path("runs") / "protocols"
COMMON = ["--epochs", "10", "--lr", "2e-3", "--workers", "1"]
PROTOCOLS: dict[str, list[str]] = {
    "paper": [],  # the labelled training clips only
    "pool": ["--transfer-pool", "2400"],  # and as many fresh pool clips a epoch
}


def run_args(name: str, root: Path, split: str = "val") -> list[str]:
    args = ["--eval-split", split, *COMMON, *PROTOCOLS[name], "--out", str(root / name)]
    if (root / name / "checkpoints" / "last.pt").is_file():
        args += ["--resume", "true"]
    return args


def main(argv=None) -> None:
    from . import results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=("val", "test"), default="val", help="the split the runs are evaluated on")
    p.add_argument("--root", type=Path, default=None,
                   help=f"where the runs go (default {ROOT} on val, {ROOT}-test on test)")
    p.add_argument("--only", choices=tuple(PROTOCOLS), help="run and record this protocol only")
    p.add_argument("--list", action="store_true", help="print the runs and which are done")
    args = p.parse_args(argv)
    root = (args.root or (ROOT if args.split == "val" else ROOT.with_name(ROOT.name + "-test"))).resolve()
    names = [args.only] if args.only else list(PROTOCOLS)
    for name in names:
        done = (root / name / "metrics.json").is_file()
        print(f"{name}: {'done' if done else 'to run'}: python training/distill.py "
              f"{' '.join(run_args(name, root, args.split))}", flush=True)
    if args.list:
        return
    for name in names:
        if not (root / name / "metrics.json").is_file():
            subprocess.run([sys.executable, str(DISTILL), *run_args(name, root, args.split)], check=True, cwd=REPO)
        results.record(root / name, f"protocol-{name}-{'val' if args.split == 'val' else 's0'}")
    print(results.sweep_table() if args.split == "val" else results.table())


if __name__ == "__main__":
    main()
