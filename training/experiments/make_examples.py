"""Copy the demo's example clips from the benchmark's test split into examples/, with their notice.

    python -m training.experiments.make_examples [--root data/emktd-bench]

The rule (no model is consulted): for each informativeness mode in MODES and each part of the
test split (seen instances, and new instances: recordings and pictures no training clip
holds), the first test clip, in id order, set on a background photograph whose sounding
objects cover at least MIN_MASK of the frame; and for each class of PHOTO_EXAMPLES, a clip made
from a photograph that no benchmark or pool clip holds, with its class's recording from the test
split (training/embedded/photos.py).  The clips keep the licences of the material they are made of.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from training.embedded import sources
from training.embedded.clips import read_clips
from training.embedded.synth import PARTS

REPO = Path(__file__).resolve().parents[2]
MODES = ("clean", "multi", "audio", "visual")
MIN_MASK = 0.06
MAX_TOTAL_BYTES = 2 * 2**20
PHOTO_EXAMPLES = ("dog", "cat", "cow")  # photographs of pets and farm animals, as a user's clip would show them

NOTICE = """# Example clips

Clips of the embedded benchmark's test split, picked by `python -m training.experiments.make_examples` (for each
informativeness mode and each part of the test split, the first test clip on a background
photograph whose sounding objects cover at least {min_mask:.0%} of the frame). Clips marked `new`
are of new instances: their recordings and pictures appear in no training clip. Each is 5 s of
224x224 H.264 + AAC.

| file | sounding | mode | instances | objects (Tux Paint stamps or catalogue instances) | background | noise (sonic-pi) |
|---|---|---|---|---|---|---|
{rows}

Clips `*-photo.mp4` are made from photographs that neither the benchmark nor the transfer pool
holds (GCompris's explore activities, which the benchmark reads only for drawings and sounds),
5 s of the still photograph, {photo_height} px high, with the sound track of the test clip named
(its class's recording over that clip's background sound):

| file | photograph | its licence and source | sound from test clip |
|---|---|---|---|
{photo_rows}

Licences of the material, by Debian package:
{licences}

These clips are derived works of that material (GPL-3+ where a GCompris recording is in them,
else GPL-2+); the code of this project is Apache-2.0.
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=REPO / "data" / "emktd-bench")
    p.add_argument("--out", type=Path, default=REPO / "examples")
    args = p.parse_args(argv)
    records = read_clips(args.root)
    chosen = []
    for part in PARTS:
        for mode in MODES:
            for r in sorted(records, key=lambda r: r["id"]):
                if (r["split"] == "test" and r.get("part", "seen") == part and r["mode"] == mode
                        and r["background"] != "scene" and r["mask_fraction"] >= MIN_MASK and "vggsound" in r["formats"]):
                    chosen.append(r)
                    break
            else:
                raise SystemExit(f"{args.root}: no {part}-instance test clip of mode {mode!r} fits the rule")
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.mp4"):
        old.unlink()
    rows, total = [], 0
    for r in chosen:
        source = args.root / "vggsound" / "video" / f"{r['id']}_000000.mp4"
        part = r.get("part", "seen")
        name = f"{'-'.join(r['sounding']).replace(' ', '_')}-{r['mode']}{'-new' if part == 'new' else ''}.mp4"
        shutil.copyfile(source, args.out / name)
        total += source.stat().st_size
        rows.append(f"| {name} | {', '.join(r['sounding'])} | {r['mode']} (audio {r['audio']}) | {part} | "
                    f"{', '.join(r['stamps'])} ({r['distractors']} silent distractors) | {r['background']} | "
                    f"{r['noise']} |")
    from training.embedded import photos

    photo_rows = []
    for made in photos.write_photo_clips(args.root, args.out, PHOTO_EXAMPLES, picture_only=False):
        total += (args.out / made["file"]).stat().st_size
        photo_rows.append(f"| {made['file']} | `{made['photo']}` | {made['licence']} | {made['sound_from']} "
                          f"({made['sound_part']} instance; background {made['noise']}) |")
    if total > MAX_TOTAL_BYTES:
        raise SystemExit(f"the examples take {total / 2**20:.2f} MB, over the {MAX_TOTAL_BYTES / 2**20:.0f} MB budget")
    licences = "\n".join(f"- `{name}`: {text}" for name, text in sources.PACKAGES.items())
    (args.out / "README.md").write_text(NOTICE.format(min_mask=MIN_MASK, rows="\n".join(rows), licences=licences,
                                                      photo_height=photos.HEIGHT, photo_rows="\n".join(photo_rows)))
    print(f"{args.out}: {len(chosen) + len(photo_rows)} clips, {total / 1024:.0f} KB")


if __name__ == "__main__":
    main()
