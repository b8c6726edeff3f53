"""Photographs of benchmark classes that no clip of the benchmark or the transfer pool holds.

GCompris's explore activities ship public-domain and CC0 photographs of animals from Wikimedia
Commons (each named, credited and licensed in the bundle's README); the benchmark reads only
the activities' drawings and sounds, the pool only Open Clip Art and emoji.  So these
photographs are material no model of this project was trained on: a clip made from one is
what a user's clip of their own animal looks like to the models.

    python -m training.embedded.photos [--root data/emktd-bench] [--out DIR]

writes, for each photographed class, two 5 s clips: the photograph with a recording of its class
from the benchmark's test split (``<class>-photo.mp4``), and the photograph over that clip's
background sound only (``<class>-photo-picture-only.mp4``), and ``photos.jsonl`` with their labels.
``python -m training.experiments.photo_check`` evaluates the bundled models on them.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

from . import sources
from .clips import read_clips
from .origins import Origins

FARM = "explore_farm_animals"
WORLD = "explore_world_animals"
# class -> (bundle, file, licence and source as the bundle's README gives them)
PHOTOS: dict[str, tuple[str, str, str]] = {
    "cat": (FARM, "cat.webp", "public domain, Loliloli (Wikimedia Commons: Spielendes Kätzchen.JPG)"),
    "hen": (FARM, "chicken.webp", "public domain, Tranquilles (Wikimedia Commons: Chickens at Tranquilles B&B.JPG)"),
    "cow": (FARM, "cow.webp", "public domain, Dohduhdah (Wikimedia Commons: Cow-IMG 2050.JPG)"),
    "dog": (FARM, "dog.webp", "public domain, Hans Kemperman (Wikimedia Commons: German-shepherd-4040871920.jpg)"),
    "duck": (FARM, "duck.webp", "CC0-1.0, Bernard Spragg (Wikimedia Commons: Aylesbury Duck.jpg)"),
    "horse": (FARM, "horse.webp", "CC0-1.0, Seth Zeigler (Wikimedia Commons: Nokota Horse Stud Band.jpg)"),
    "owl": (FARM, "owl.webp", "CC0-1.0, Lepale (Wikimedia Commons: Owl The Nightbird.jpg)"),
    "pig": (FARM, "pig.webp", "public domain, Teinesavaii (Wikimedia Commons: Pig 1, Savaii, Samoa.JPG)"),
    "sheep": (FARM, "sheep.webp", "CC0-1.0, Rob Mitchell (Wikimedia Commons: Sheep (33625876592).jpg)"),
    "bison": (WORLD, "bison.webp", "CC0-1.0, Kurt Kaiser (Wikimedia Commons: American Bison 9.jpg)"),
    "koala": (WORLD, "koala.webp", "public domain, BurningWell (Wikimedia Commons: Koala Perth Zoo.jpg)"),
    "bear": (WORLD, "polar_bear.webp", "public domain, anonymous (Wikimedia Commons: Churchill Wildlife "
                                       "Management Area polar bear30.JPG)"),
}
HEIGHT = 320  # the clips' frame height; the width keeps the photograph's aspect (even)
SECONDS = 5.0
FPS = 5
INDEX = "photos.jsonl"


def photo(origins: Origins, name: str) -> np.ndarray:
    """The photograph of class ``name`` as [H, W, 3] uint8 RGB at HEIGHT pixels high."""
    from PIL import Image

    bundle, file, _ = PHOTOS[name]
    with Image.open(io.BytesIO(origins._bundle_file(f"gcompris:{bundle}/{file}"))) as image:
        image = image.convert("RGB")
        width = max(2, round(image.width * HEIGHT / image.height) // 2 * 2)
        return np.asarray(image.resize((width, HEIGHT), Image.LANCZOS))


def sound_clip(records: list[dict], name: str) -> dict:
    """The test clip whose recording a photograph's clip borrows: the first in id order where
    ``name`` alone sounds and the audio tells it (modes clean and audio), a new instance's first."""
    candidates = [r for r in sorted(records, key=lambda r: r["id"])
                  if r["split"] == "test" and r["sounding"] == [name] and r["mode"] in ("clean", "audio")]
    if not candidates:
        raise SystemExit(f"no test clip where only {name!r} sounds and the audio tells it")
    new = [r for r in candidates if r.get("part") == "new"]
    return (new or candidates)[0]


def write_photo_clips(root: Path, out: Path, names=None, picture_only: bool = True,
                      cache: Path | None = None) -> list[dict]:
    """The clips of the module docstring, for ``names`` (default: every photographed class); without
    ``picture_only``, only the photograph with its class's recording."""
    from emktd.media import load_clip, write_video

    from .build import DEFAULT_CACHE, ensure_pack

    root, out, cache = Path(root), Path(out), Path(cache or DEFAULT_CACHE)
    out.mkdir(parents=True, exist_ok=True)
    records = read_clips(root)
    origins = Origins(sources.fetch(cache))
    noises = {n["name"]: n["sound"] for n in sources.load_pack(ensure_pack(None, cache)).noises}
    written = []
    for name in names or PHOTOS:
        picture = photo(origins, name)
        borrowed = sound_clip(records, name)
        clip = load_clip(root / "vggsound" / "video" / f"{borrowed['id']}_000000.mp4", 1)
        frames = np.repeat(picture[None], int(SECONDS * FPS), axis=0)
        noise = noises[borrowed["noise"]][: len(clip.audio)]
        noise = np.pad(noise, (0, len(clip.audio) - len(noise)), mode="wrap") if len(noise) else clip.audio * 0
        kinds = [("photo", clip.audio, "its class's recording (the test clip's sound track)"),
                 ("photo-picture-only", noise, "the test clip's background sound only")]
        for kind, audio, what in kinds[:2 if picture_only else 1]:
            path = write_video(out / f"{name.replace(' ', '_')}-{kind}.mp4", frames, FPS, audio, clip.sample_rate_hz,
                               options={"preset": "medium", "crf": "26"})
            written.append({"file": path.name, "labels": [name], "mode": "clean" if kind == "photo" else "visual",
                            "photo": f"gcompris:{PHOTOS[name][0]}/{PHOTOS[name][1]}", "licence": PHOTOS[name][2],
                            "sound_from": borrowed["id"], "sound_part": borrowed.get("part", "seen"),
                            "noise": borrowed["noise"], "audio": what})
    return written


def write_index(out: Path, written: list[dict]) -> Path:
    """``out/INDEX``: one line per clip :func:`write_photo_clips` wrote (its file, labels, mode, sources)."""
    path = Path(out) / INDEX
    path.write_text("".join(json.dumps(w) + "\n" for w in written))
    return path


def main(argv=None) -> None:
    from .build import DEFAULT_CACHE, REPO

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=REPO / "data" / "emktd-bench", help="the built benchmark")
    p.add_argument("--out", type=Path, default=REPO / "data" / "emktd-photos")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    written = write_photo_clips(args.root, args.out, cache=args.cache)
    write_index(args.out, written)
    print(f"{args.out}: {len(written)} clips of {len(written) // 2} photographs")


if __name__ == "__main__":
    main()
