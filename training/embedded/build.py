"""The embedded benchmark: build it, or print its statistics and a contact sheet.

    python -m training.embedded.build build              # default size (a few minutes on 2 cores)
    python -m training.embedded.build build --small      # seconds, for tests
    python -m training.embedded.build pack --out PACK.npz  # the compact source pack alone
    python -m training.embedded.build build --pack PACK.npz --formats s4,ms3   # no apt, no PyAV needed
    python -m training.embedded.build stats --sheet docs/benchmark_sheet.jpg
    python -m training.embedded.build pool               # the transfer pool (training/embedded/pool.py)

The build writes the same clips in three real layouts under --root:
  vggsound/        vggsound.csv + video/<ytid>_000000.mp4 (H.264 + AAC), every clip
  avsbench/Single-source/  S4 layout, the single-source clips
  avsbench/Multi-sources/  MS3 layout, the multi-source clips
plus clips.jsonl (per clip: split, classes, informativeness record) and benchmark.json.
An interrupted build resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from emktd.files import write_text_atomic
from training.readers.avsbench import ms3_paths, s4_paths
from training.readers.common import FormatError, category_dir, read_mask, read_rgb, vggsound_ytid

from . import sources, writers
from .pool import PoolError
from .clips import read_clips
from .synth import MODES, PARTS, SynthConfig, clip_rng, instances_by_class, synthesize

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO / "data" / "emktd-bench"
DEFAULT_CACHE = REPO / ".cache" / "emktd"
FORMATS = ("vggsound", "s4", "ms3")


@dataclass(frozen=True)
class Size:
    train: int
    val: int
    test: int
    val_new: int = 0  # clips of val's held-out instances (model selection)
    test_new: int = 0  # clips of test's new instances

    def count(self, split: str, part: str) -> int:
        return getattr(self, split if part == "seen" else f"{split}_new", 0)


SIZES = {"default": Size(2400, 400, 600, 150, 400), "small": Size(12, 4, 6, 2, 4)}
SMALL_CLASSES = 8  # --small draws from the first few classes only, so each appears several times


def default_pack_path(cache: Path = DEFAULT_CACHE) -> Path:
    return Path(cache) / "source_pack.npz"


def ensure_pack(pack_path: Path | None, cache: Path = DEFAULT_CACHE) -> Path:
    """The given pack, or the cached one, or one built now from the Debian packages."""
    if pack_path is not None:
        if not Path(pack_path).is_file():
            raise sources.SourceError(f"{pack_path}: no such source pack")
        return Path(pack_path)
    path = default_pack_path(cache)
    if not path.is_file() or sources.load_pack(path).meta.get("recipe") != sources.recipe():
        root = sources.fetch(cache)
        print(f"building the source pack from {root}", flush=True)
        sources.save_pack(sources.collect(root), path)
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- building

_WORKER: dict = {}


def _init_pool_worker(*args) -> None:
    """A pool process: one thread each, the processes are the parallelism."""
    import torch

    torch.set_num_threads(1)
    _init_worker(*args)


def _init_worker(pack_path: str, root: str, seed: int, config: SynthConfig, formats_: tuple[str, ...],
                 num_classes: int) -> None:
    _WORKER.update(pack=sources.load_pack(Path(pack_path)), root=Path(root), seed=seed, config=config,
                   formats=formats_, num_classes=num_classes)


def eligible_classes(pack: sources.Pack, split: str, part: str, num_classes: int) -> list[int]:
    """The classes that the clips of ``split``'s ``part`` can show: those with instances there."""
    return [c for c in sorted(instances_by_class(pack, split, part)) if c < num_classes]


def _classes_for(seed: int, split: str, index: int, eligible: list[int], stream: int = 1) -> list[int]:
    """Balanced: the sounding class cycles through a seeded permutation; the others are random."""
    order = clip_rng(seed, split, 0, stream=stream).permutation(eligible)
    first = int(order[index % len(eligible)])
    rng = clip_rng(seed, split, index, stream=stream + 1)
    others = rng.choice([c for c in eligible if c != first], size=2, replace=False)
    return [first, *map(int, others)]


def _build_one(task: tuple[str, str, int, int]) -> dict:
    split, part, index, first_new = task
    w = _WORKER
    root, pack, config = w["root"], w["pack"], w["config"]
    ytid = vggsound_ytid(split, index)
    done = root / "done" / f"{ytid}.json"
    if done.is_file():
        return json.loads(done.read_text())
    eligible = eligible_classes(pack, split, part, w["num_classes"])
    position = index if part == "seen" else index - first_new
    clip = synthesize(pack, split, index, w["seed"], config, part=part,
                      classes=_classes_for(w["seed"], split, position, eligible, stream=1 if part == "seen" else 3))
    labels = [pack.classes[c] for c in clip.labels]
    record = {"id": ytid, "split": split, "labels": labels, **clip.info, "formats": []}
    if "vggsound" in w["formats"]:
        writers.write_vggsound_clip(root / "vggsound" / "video", ytid, clip, config.fps, config.sample_rate_hz)
        record["formats"].append("vggsound")
    if clip.info["mode"] == "multi" and "ms3" in w["formats"]:
        writers.write_ms3_clip(root / "avsbench" / "Multi-sources", split, ytid, clip, config.annotated_indices,
                               config.sample_rate_hz)
        record["formats"].append("ms3")
    elif clip.info["mode"] != "multi" and "s4" in w["formats"]:
        writers.write_s4_clip(root / "avsbench" / "Single-source", split, category_dir(labels[0]), ytid,
                              clip, config.annotated_indices, config.sample_rate_hz)
        record["formats"].append("s4")
    write_text_atomic(done, json.dumps(record))  # written last: a clip with a done record has all its files
    return record


def build(root: Path, size: Size, seed: int, pack_path: Path, formats_: tuple[str, ...], workers: int,
          config: SynthConfig = SynthConfig(), max_classes: int | None = None, progress: bool = True) -> dict:
    """Write the benchmark under ``root`` (via ``root.partial``, renamed when complete)."""
    from tqdm import tqdm

    root = Path(root)
    unknown = set(formats_) - set(FORMATS)
    if unknown:
        raise SystemExit(f"unknown format(s) {sorted(unknown)}; expected some of {', '.join(FORMATS)}")
    if "vggsound" in formats_ and importlib.util.find_spec("av") is None:
        raise SystemExit("the vggsound format writes mp4 clips and needs PyAV; "
                         "pass --formats s4,ms3 on machines without it")
    pack = sources.load_pack(pack_path)
    num_classes = min(len(pack.classes), max_classes or len(pack.classes))
    partial = root.with_name(root.name + ".partial")
    settings = {"seed": seed, "size": asdict(size), "formats": list(formats_), "config": asdict(config),
                "num_classes": num_classes, "pack_sha256": file_sha256(pack_path)}
    settings_path = partial / "settings.json"
    if partial.exists() and (not settings_path.is_file() or json.loads(settings_path.read_text()) != settings):
        shutil.rmtree(partial)  # a different build was interrupted here: start over
    (partial / "done").mkdir(parents=True, exist_ok=True)
    (partial / "vggsound" / "video").mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings, indent=1))

    tasks = []
    for split in ("train", "val", "test"):  # new-instance clips follow the seen ones, numbered on
        seen = size.count(split, "seen")
        tasks += [(split, "seen", i, seen) for i in range(seen)]
        if len(eligible_classes(pack, split, "new", num_classes)) >= 3:
            tasks += [(split, "new", seen + i, seen) for i in range(size.count(split, "new"))]
    start = time.time()
    args = (str(pack_path), str(partial), seed, config, tuple(formats_), num_classes)
    if workers > 1:
        with get_context("spawn").Pool(workers, initializer=_init_pool_worker, initargs=args) as pool:
            records = list(tqdm(pool.imap(_build_one, tasks, chunksize=4), total=len(tasks),
                                desc="clips", disable=not progress))
    else:
        _init_worker(*args)
        records = [_build_one(t) for t in tqdm(tasks, desc="clips", disable=not progress)]

    classes = pack.classes[:num_classes]
    (partial / "classes.txt").write_text("\n".join(classes) + "\n")
    with open(partial / "clips.jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    if "vggsound" in formats_:
        rows = [(r["id"], 0, label, r["split"]) for r in records for label in r["labels"]]
        writers.write_vggsound_csv(partial / "vggsound" / "vggsound.csv", rows)
    _write_avsbench_meta(partial, records, formats_)
    summary = {**settings, "pack": str(Path(pack_path).resolve()), "pack_recipe": pack.meta.get("recipe"),
               "classes": len(classes), "clips": Counter(r["split"] for r in records),
               "new_instance_clips": Counter(r["split"] for r in records if r.get("part") == "new"),
               "build_seconds": round(time.time() - start, 1), "licences": pack.meta["licences"],
               "dropped_stamps": pack.meta["dropped"], "merged_classes": pack.meta["merged"]}
    (partial / "benchmark.json").write_text(json.dumps(summary, indent=1) + "\n")
    shutil.rmtree(partial / "done")
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    return summary


def _write_avsbench_meta(root: Path, records: list[dict], formats_: tuple[str, ...]) -> None:
    import csv

    if "s4" in formats_:
        s4 = root / "avsbench" / "Single-source"
        s4.mkdir(parents=True, exist_ok=True)
        with open(s4 / "s4_meta_data.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "start_time", "category", "split"])
            for r in records:
                if "s4" in r["formats"]:
                    writer.writerow([r["id"], 0, category_dir(r["labels"][0]), r["split"]])
    if "ms3" in formats_:
        ms3 = root / "avsbench" / "Multi-sources"
        ms3.mkdir(parents=True, exist_ok=True)
        with open(ms3 / "ms3_meta_data.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["video_id", "split", "labels"])
            for r in records:
                if "ms3" in r["formats"]:
                    writer.writerow([r["id"], r["split"], ";".join(category_dir(x) for x in r["labels"])])


def ensure_built(root: Path, build_missing: bool = True) -> Path:
    """``root`` when the benchmark is there; else build it there (the default size), or say how."""
    root = Path(root)
    if (root / "clips.jsonl").is_file():
        return root
    if not build_missing:
        raise SystemExit(f"{root}: the embedded benchmark is missing; build it with "
                         "`python -m training.embedded.build build` or drop --build-benchmark false")
    print(f"{root}: building the embedded benchmark (about 6 minutes on 2 cores, 2.9 GB)", flush=True)
    build(root, SIZES["default"], 0, ensure_pack(None), FORMATS, workers=2)
    return root


# ---------------------------------------------------------------- statistics and contact sheet

def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


def stats(root: Path) -> str:
    root = Path(root)
    records = read_clips(root)
    summary = json.loads((root / "benchmark.json").read_text())
    classes = (root / "classes.txt").read_text().split("\n")[:-1]
    splits = ("train", "val", "test")
    lines = [f"embedded benchmark at {root} (seed {summary['seed']}, built in {summary['build_seconds']} s)", ""]
    lines.append(f"classes: {len(classes)} sounding classes; dropped stamps: {len(summary['dropped_stamps'])}; "
                 f"merged classes: {len(summary['merged_classes'])}")
    lines.append("")
    lines.append("| | " + " | ".join(splits) + " |")
    lines.append("|---|" + "---:|" * len(splits))

    def row(name, fn):
        lines.append(f"| {name} | " + " | ".join(str(fn([r for r in records if r["split"] == s])) for s in splits) + " |")

    row("clips", len)
    row("new-instance clips", lambda rs: sum(r.get("part") == "new" for r in rs))
    row("classes of new-instance clips", lambda rs: len({c for r in rs if r.get("part") == "new" for c in r["labels"]}))
    for mode in ("clean", "audio", "visual", "multi"):
        row(f"mode {mode}", lambda rs, m=mode: sum(r["mode"] == m for r in rs))
    for state in ("present", "drowned", "absent"):
        row(f"audio {state}", lambda rs, s=state: sum(r["audio"] == s for r in rs))
    row("S4 clips", lambda rs: sum("s4" in r["formats"] for r in rs))
    row("MS3 clips", lambda rs: sum("ms3" in r["formats"] for r in rs))
    row("photo backgrounds", lambda rs: sum(r["background"] != "scene" for r in rs))
    row("distinct backgrounds", lambda rs: len({r["background"] for r in rs}))
    row("distinct noises", lambda rs: len({r["noise"] for r in rs}))
    row("classes present", lambda rs: len({c for r in rs for c in r["labels"]}))
    row("mean mask fraction", lambda rs: f"{np.mean([r['mask_fraction'] for r in rs]):.3f}" if rs else "-")
    held_out = {r["background"] for r in records if r["split"] == "test"} & \
               {r["background"] for r in records if r["split"] != "test"} - {"scene"}
    lines.append("")
    lines.append(f"photo backgrounds shared by test and train/val: {len(held_out)}; noise recordings shared: "
                 f"{len({r['noise'] for r in records if r['split'] == 'test'} & {r['noise'] for r in records if r['split'] != 'test'})}")
    sizes = {name: folder_mb(root / sub) for name, sub in
             (("vggsound", "vggsound"), ("S4", "avsbench/Single-source"), ("MS3", "avsbench/Multi-sources"))
             if (root / sub).exists()}
    lines.append("on disk: " + ", ".join(f"{k} {v:.0f} MB" for k, v in sizes.items()))
    return "\n".join(lines)


def contact_sheet(root: Path, out: Path, count: int = 8, seed: int = 0) -> Path:
    """A few S4/MS3 clips of the test split, one per mode of each part (seen, then new instances)
    in turn: their five frames with the sounding-object masks overlaid."""
    import cv2

    root = Path(root)
    records = read_clips(root)
    rng = np.random.default_rng(seed)
    pools = {(p, m): [r for r in records if r["split"] == "test" and r.get("part", "seen") == p
                      and r["mode"] == m and r["formats"]]
             for p in PARTS for m in MODES}
    chosen = []
    while len(chosen) < count and any(pools.values()):
        for items in pools.values():
            if items and len(chosen) < count:
                chosen.append(items.pop(int(rng.integers(len(items)))))
    rows = []
    for r in chosen:
        if "ms3" in r["formats"]:
            paths = ms3_paths(root / "avsbench" / "Multi-sources", "test", r["id"])
        else:
            paths = s4_paths(root / "avsbench" / "Single-source", "test", category_dir(r["labels"][0]), r["id"])
        tiles = []
        for fp, mp in zip(paths["frames"], paths["masks"]):
            image = read_rgb(fp).astype(np.float32)
            mask = read_mask(mp) > 0
            image[mask] = 0.55 * image[mask] + 0.45 * np.array([0, 255, 0])
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            image = np.ascontiguousarray(image.astype(np.uint8))
            cv2.drawContours(image, contours, -1, (255, 255, 0), 1)
            tiles.append(image)
        strip = np.concatenate(tiles, axis=1)
        label = f"{'new instances, ' if r.get('part') == 'new' else ''}{r['mode']}: {' + '.join(r['labels'])}"
        if r["silent_on_screen"]:
            label += f" (silent: {', '.join(r['silent_on_screen'])})"
        label += f" | audio {r['audio']}" + (f", SNR {r['snr_db']:.0f} dB" if r["snr_db"] is not None else "")
        header = np.full((22, strip.shape[1], 3), 255, np.uint8)
        cv2.putText(header, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([header, strip], axis=0))
    sheet = np.concatenate(rows, axis=0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(sheet).save(out, quality=85)  # format from the suffix: .png or .jpg
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the benchmark")
    b.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"output folder (default {DEFAULT_ROOT})")
    b.add_argument("--small", action="store_true", help="a tiny build for tests (seconds)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--pack", type=Path, default=None, help="use this source pack (default: cached or built)")
    b.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where packages and the pack are cached")
    b.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of " + ",".join(FORMATS))
    b.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p = sub.add_parser("pack", help="write the compact source pack only")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    o = sub.add_parser("pool", help="build (or reuse) the transfer pool pack and say what it holds and left out")
    o.add_argument("--pack", type=Path, default=None, help="the source pack it is kept apart from (default: cached)")
    o.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    o.add_argument("--excluded", action="store_true", help="also list every candidate left out, and why")
    s = sub.add_parser("stats", help="print statistics and write a contact sheet")
    s.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    s.add_argument("--sheet", type=Path, default=None, help="write a contact sheet PNG here")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            out = args.out or default_pack_path(args.cache)
            sources.save_pack(sources.collect(sources.fetch(args.cache)), out)
            print(f"{out}: {out.stat().st_size / 2**20:.1f} MB")
        elif args.command == "build":
            pack = ensure_pack(args.pack, args.cache)
            size = SIZES["small" if args.small else "default"]
            summary = build(args.root, size, args.seed, pack, tuple(f for f in args.formats.split(",") if f),
                            args.workers, max_classes=SMALL_CLASSES if args.small else None)
            print(f"{args.root}: {dict(summary['clips'])} clips of {summary['classes']} classes "
                  f"in {summary['build_seconds']} s")
        elif args.command == "pool":
            from . import pool

            path = pool.ensure_pool(ensure_pack(args.pack, args.cache), args.cache)
            text = pool.summary(pool.load_pool(path))
            print(f"{path}: {path.stat().st_size / 2**20:.1f} MB\n"
                  + (text if args.excluded else text.split("\n", 1)[0]))
        else:
            print(stats(args.root))
            if args.sheet:
                print(f"contact sheet: {contact_sheet(args.root, args.sheet)}")
    except (sources.SourceError, FormatError, PoolError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
