"""The bundled teacher's whole recipe, in one resumable command.

    python -m training.experiments.teacher_recipe               # run what is missing, then publish to weights/teacher
    python -m training.experiments.teacher_recipe --list        # the stages and which are done
    python -m training.experiments.teacher_recipe --choose      # the candidates on val, scored against the targets

The recipe is one ``training/distill.py --task teacher`` run in runs/teacher-recipe/<RECIPE>: the
candidate that val chose among the runs below (``--backbone``, ``--audio``), by a rule fixed before
the choice (``choose``): each candidate's val figures for the issue's seven teacher targets (seen
top-1, picture-only seen top-1, new-instance top-1, picture-only new top-1, S4 and MS3 mIoU, new
S4 mIoU), each as a fraction of its target capped at 1, averaged; the highest mean is the recipe.
A test checks that RECIPE is what the committed records choose.  The run trains on the train split
and is evaluated on val; then it is published (float16) to --publish-to.  The entropy monitor is
fitted on this teacher by the student's EM-KTD run and published beside it from there
(docs/training.md).

A stage with a metrics.json is done; one with a checkpoint resumes from it; an interrupted
command loses at most one checkpoint interval (200 steps).

The previous recipe (build 2 of the benchmark, ``results/benchmark-v2``) had two stages, each a
run in runs/teacher-recipe/<stage>, that ``--ablations`` and ``--variants`` still build on:
1. ``pretrain``: the pretraining stream (training/embedded/stream.py: freshly composed clips
   of the train-side material, new ones every epoch), the benchmark's analogue of CAV-MAE's
   AudioSet pretraining; evaluated on val.
2. ``finetune``: from the pretrained weights, on the fixed train split; evaluated on val.
Both with the generalisation options of training/run/augment.py (audio and image
augmentation, modality dropout) and label smoothing.

    python -m training.experiments.teacher_recipe --ablations   # each option's effect, on val

runs the fine-tuning stage again once per ablation (from the same pretrained weights, one
option off; ``no-pretraining`` starts from scratch instead) and records every fine-tuning run,
the recipe's own included, in results/ (the sweeps table, val split).  About 17 minutes each on
2 cores.

    python -m training.experiments.teacher_recipe --variants    # candidate additions, on val

does the same for the fine-tuning stage with something added: the mask decoder's shallow pixel
features (``--seg-skip-channels``) and its tokens from earlier visual blocks
(``--seg-visual-taps``), one at a time.  The pretrained weights have neither, so what they add
starts untrained at fine-tuning.

    python -m training.experiments.teacher_recipe --backbone    # the ImageNet backbone, on val

runs the fine-tuning stage's schedule and options from scratch, needing no pretraining stage:
with the teacher's own preset (``scratch``), with ``bench-teacher-in``, whose visual tokens come
from an ImageNet-pretrained EfficientNet-Lite0 (``scratch-imagenet-backbone``), and with that
preset's two candidate additions one at a time (its mask decoder reading the backbone's maps at
strides 8, 4 and 2; the class also read from the tokens under the predicted mask), both together,
and both with the ImageNet prior on the class logits (``--imagenet-prior``: each class's logit
gains the log-probability that the backbone's own ImageNet classifier gives its ImageNet classes,
by the map in training/embedded/imagenet.py), and records each on val.

    python -m training.experiments.teacher_recipe --audio       # learning without labels, on val

runs the last two's schedule (the backbone, both decoder additions) with CAV-MAE's audio-visual
contrastive term (``--contrastive 0.1``), on the labelled clips and on them plus 2400 fresh
transfer-pool clips every epoch, and records each on val.
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
ROOT = Path("runs") / "teacher-recipe"

GENERALISATION = ["--audio-augment", "0.25", "--image-augment", "0.5", "--modality-dropout", "0.2",
                  "--label-smoothing", "0.1"]
PREVIOUS: dict[str, list[str]] = {  # the previous recipe's stages (see above)
    "pretrain": ["--train-source", "stream", "--stream-clips", "2400", "--epochs", "10", "--lr", "5e-4",
                 "--warmup-epochs", "1"],
    "finetune": ["--epochs", "6", "--lr", "2e-4", "--warmup-epochs", "0.5"],  # + --init-from the pretrained teacher
}
COMMON = ["--task", "teacher", "--batch-size", "32", "--eval-split", "val", "--workers", "1", *GENERALISATION]


ABLATIONS: dict[str, tuple[str, str | None]] = {  # name: (flag, value; None drops the flag and its value)
    "no-audio-augment": ("--audio-augment", "0"),
    "no-image-augment": ("--image-augment", "0"),
    "no-modality-dropout": ("--modality-dropout", "0"),
    "no-pretraining": ("--init-from", None),
}


VARIANTS: dict[str, list[str]] = {  # name: arguments added to the fine-tuning stage
    "pixel-skips": ["--seg-skip-channels", "16"],
    "block-taps": ["--seg-visual-taps", "2"],
}

# The fine-tuning stage's schedule and options without the pretrained weights: the teacher's own
# preset from scratch, and the preset whose visual tokens come from an ImageNet-pretrained backbone.
IMAGENET = ["--teacher-preset", "bench-teacher-in"]
WITH_BOTH = [*IMAGENET, "--seg-skip-channels", "16", "--seg-object-logits", "true"]  # both decoder additions
FROM_SCRATCH: dict[str, list[str]] = {  # name: arguments added
    "scratch": [],
    "scratch-imagenet-backbone": IMAGENET,
    # the mask decoder also reads the backbone's maps at strides 8, 4 and 2 (a feature pyramid)
    "scratch-imagenet-backbone-pyramid": [*IMAGENET, "--seg-skip-channels", "16"],
    # the class is also read from the tokens under the predicted mask
    "scratch-imagenet-backbone-object-logits": [*IMAGENET, "--seg-object-logits", "true"],
    # both, and then the ImageNet classifier's naming as a prior on the class logits
    "scratch-imagenet-backbone-pyramid-object-logits": WITH_BOTH,
    "scratch-imagenet-backbone-pyramid-object-logits-prior": [*WITH_BOTH, "--imagenet-prior", "true"],
}

# What the audio branch may learn without labels, on the backbone teacher with both decoder
# additions: CAV-MAE's audio-visual contrastive term on the labelled clips, and on them plus
# fresh transfer-pool clips every epoch (whose sounds no labelled clip holds).
AUDIO: dict[str, list[str]] = {
    "scratch-imagenet-backbone-pyramid-object-logits-contrastive": [*WITH_BOTH, "--contrastive", "0.1"],
    "scratch-imagenet-backbone-pyramid-object-logits-contrastive-pool": [*WITH_BOTH, "--contrastive", "0.1",
                                                                         "--transfer-pool", "2400"],
}


# The rule that chooses the recipe on val, fixed before the choice: the teacher targets, each
# (name, the figure's keys under a record's "student" entry, target).
TARGETS = results.TEACHER_TARGETS
CANDIDATES = {**FROM_SCRATCH, **AUDIO}
RECIPE = "scratch-imagenet-backbone-pyramid-object-logits-contrastive-pool"  # what ``choose`` picks


def target_score(metrics: dict) -> tuple[float, list[float]]:
    """A run's figures for TARGETS and the mean of each as a fraction of its target, capped at 1."""
    figures = [results.figure(metrics, keys) for _, keys, _ in TARGETS]
    return sum(min(1.0, f / t) for f, (_, _, t) in zip(figures, TARGETS)) / len(TARGETS), figures


def choose(results_dir: Path | None = None) -> list[tuple[str, float, list[float]]]:
    """The candidates recorded on val of the current build (``teacher-<name>-val`` in results/, not
    its subfolders of earlier builds), best first by ``target_score``."""
    results_dir = results.RESULTS if results_dir is None else results_dir
    scored = []
    for name in CANDIDATES:
        path = results_dir / f"teacher-{name}-val.json"
        if path.is_file():
            scored.append((name, *target_score(json.loads(path.read_text())["student"])))
    return sorted(scored, key=lambda row: -row[1])


def choice_table(results_dir: Path | None = None) -> str:
    rows = choose(results_dir)
    if not rows:
        return "no candidate recorded on val"
    head = "| candidate (val) | " + " | ".join(f"{n} (target {t * 100:.0f})" for n, _, t in TARGETS) + " | score |"
    lines = [head, "|---|" + "---:|" * (len(TARGETS) + 1)]
    for name, score, figures in rows:
        lines.append(f"| {name}{' (the recipe)' if name == RECIPE else ''} | "
                     + " | ".join(f"{f * 100:.1f}" for f in figures) + f" | {score:.3f} |")
    return "\n".join(lines)


def ablated(args: list[str], flag: str, value: str | None) -> list[str]:
    i = args.index(flag)
    return args[:i] + ([flag, value] if value is not None else []) + args[i + 2:]


def stage_args(name: str, root: Path) -> list[str]:
    finetune = [*COMMON, "--init-from", str(root / "pretrain" / "student"), *PREVIOUS["finetune"]]
    if name in ABLATIONS:
        args = [*ablated(finetune, *ABLATIONS[name]), "--out", str(root / name)]
    elif name in VARIANTS:
        args = [*finetune, *VARIANTS[name], "--out", str(root / name)]
    elif name in FROM_SCRATCH or name in AUDIO:
        added = FROM_SCRATCH[name] if name in FROM_SCRATCH else AUDIO[name]
        args = [*ablated(finetune, "--init-from", None), *added, "--out", str(root / name)]
    else:
        args = [*(finetune if name == "finetune" else [*COMMON, *PREVIOUS[name]]), "--out", str(root / name)]
    if (root / name / "checkpoints" / "last.pt").is_file():
        args += ["--resume", "true"]
    return args


def done(name: str, root: Path) -> bool:
    return (root / name / "metrics.json").is_file()


def show_plan(names, root: Path) -> None:
    for name in names:
        print(f"{name}: {'done' if done(name, root) else 'to run'}: python training/distill.py "
              + " ".join(stage_args(name, root)), flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT, help=f"where the stage runs go (default {ROOT})")
    p.add_argument("--publish-to", type=Path, default=Path("weights/teacher"))
    p.add_argument("--list", action="store_true", help="print the stages and which are done")
    p.add_argument("--choose", action="store_true", help="print the candidates' val figures and scores (see above)")
    p.add_argument("--ablations", action="store_true", help="measure each option's effect on val (see above)")
    p.add_argument("--variants", action="store_true", help="measure candidate additions on val (see above)")
    p.add_argument("--backbone", action="store_true",
                   help="measure the ImageNet-pretrained visual backbone on val, both runs from scratch (see above)")
    p.add_argument("--audio", action="store_true",
                   help="measure the contrastive term, without and with the transfer pool, on val (see above)")
    args = p.parse_args(argv)
    root = args.root.resolve()  # the runs check and the runs write one place, whatever the working directory
    if args.backbone or args.audio:
        return compare(root, FROM_SCRATCH if args.backbone else AUDIO, args.list, with_recipe=False)
    if args.ablations or args.variants:
        return compare(root, ABLATIONS if args.ablations else VARIANTS, args.list)
    if args.choose:
        return print(choice_table())
    show_plan([RECIPE], root)
    if args.list:
        return
    if not done(RECIPE, root):
        subprocess.run([sys.executable, str(DISTILL), *stage_args(RECIPE, root)], check=True, cwd=REPO)
    subprocess.run([sys.executable, "-m", "training.experiments.publish", str(root / RECIPE),
                    "--repo-id", "emktd/bench-teacher", "--dry-run", "--fp16", "--out", str(args.publish_to.resolve())],
                   check=True, cwd=REPO)


def compare(root: Path, runs: dict, only_list: bool, with_recipe: bool = True) -> None:
    """Each of ``runs`` (ablations, variants or runs from scratch), after the fine-tuning stage where
    ``with_recipe``, recorded on val."""
    show_plan(runs, root)
    if only_list:
        return
    if with_recipe and not done("pretrain", root):  # they build on the previous recipe's pretraining stage
        subprocess.run([sys.executable, str(DISTILL), *stage_args("pretrain", root)], check=True, cwd=REPO)
    for name in (*(["finetune"] if with_recipe else []), *runs):
        if not done(name, root):
            subprocess.run([sys.executable, str(DISTILL), *stage_args(name, root)], check=True, cwd=REPO)
        results.record(root / name, f"teacher-{name}-val")
    print(results.sweep_table())


if __name__ == "__main__":
    main()
