"""The bundled models on clips made from photographs that no training or pool clip holds.

    python -m training.experiments.photo_check [--teacher weights/teacher] [--student weights/student]

Makes the clips of training/embedded/photos.py where they are missing (12 photographed classes,
each as photograph + its class's recording and as photograph + background sound only), then
prints each model's top-1 on both kinds and, clip by clip, its first answer.  Nothing here is
chosen on these clips: they are a check of what a user's own photograph-like clip gets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KINDS = (("clean", "photograph + its class's recording"), ("visual", "photograph + background sound only"))


def evaluate(clips_dir: Path, models: dict[str, str]) -> tuple[dict, list[dict]]:
    from emktd.predict import Predictor, decode, window_s

    from training.embedded.photos import INDEX

    rows = [json.loads(line) for line in (clips_dir / INDEX).read_text().splitlines() if line]
    answers = {}
    for name, path in models.items():
        predictor = Predictor.load(path, "torch", "cpu")
        window = window_s(predictor.config)
        for row in rows:
            clip, _ = decode(clips_dir / row["file"], 5, window)
            answers[name, row["file"]] = predictor.predict(clip).top(1)[0][0].replace("_", " ")
    return answers, rows


def report(answers: dict, rows: list[dict], models: list[str]) -> str:
    lines = ["| model | " + " | ".join(f"{what} (top-1, {sum(r['mode'] == mode for r in rows)} clips)"
                                       for mode, what in KINDS) + " |",
             "|---|" + "---:|" * len(KINDS)]
    for name in models:
        cells = []
        for mode, _ in KINDS:
            chosen = [r for r in rows if r["mode"] == mode]
            right = sum(answers[name, r["file"]] in r["labels"] for r in chosen)
            cells.append(f"{right} ({100 * right / max(1, len(chosen)):.0f} %)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| photograph | " + " | ".join(f"{name}: {mode}" for name in models for mode, _ in KINDS) + " |",
              "|---|" + "---|" * (len(models) * len(KINDS))]
    for label in dict.fromkeys(r["labels"][0] for r in rows):
        cells = []
        for name in models:
            for mode, _ in KINDS:
                row = next(r for r in rows if r["labels"][0] == label and r["mode"] == mode)
                answer = answers[name, row["file"]]
                cells.append(f"**{answer}**" if answer in row["labels"] else answer)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    from training.embedded import photos

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=str(REPO / "weights" / "teacher"))
    p.add_argument("--student", default=str(REPO / "weights" / "student"))
    p.add_argument("--clips", type=Path, default=REPO / "data" / "emktd-photos")
    p.add_argument("--root", type=Path, default=REPO / "data" / "emktd-bench", help="the built benchmark")
    args = p.parse_args(argv)
    if not (args.clips / photos.INDEX).is_file():
        photos.write_index(args.clips, photos.write_photo_clips(args.root, args.clips))
    models = {"teacher": args.teacher, "student": args.student}
    answers, rows = evaluate(args.clips, models)
    print(report(answers, rows, list(models)))


if __name__ == "__main__":
    main()
