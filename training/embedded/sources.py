"""The embedded benchmark's raw material: real recordings and object images from Debian packages.

``fetch`` downloads the packages with ``apt-get download`` and unpacks them
with ``dpkg-deb -x`` into a cache folder; ``build_pack`` turns the unpacked
files into the compact source pack (one ``.npz``, no pickles): every kept
object image (RGBA, downscaled) with its own recorded sound (16 kHz int16),
silent distractor stamps, background photographs and CC0 background sounds,
each assigned to the splits that may use it.  Further instances of the
classes (other recordings and other pictures, from other packages) come from
:mod:`.catalog`; each object entry records its split.  The pack is all that clip
synthesis needs, so a machine without PyAV or apt can regenerate the
benchmark from it with numpy, OpenCV and torch.

Which stamps make a class, which were merged and which were dropped (and why)
is written down below; a stamp with a sound that is in neither list stops the
build, so a new package version cannot slip unreviewed sounds in.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emktd.features import SAMPLE_RATE_HZ
from emktd.files import atomic_path

from . import catalog

TUXPAINT_PACKAGES = {
    "tuxpaint-stamps-default": "GPL-2+ (Tux Paint stamps: object images and their recorded sounds)",
    "tuxpaint-data": "GPL-2+ (Tux Paint templates: background photographs)",
    "sonic-pi-samples": "CC0, per file as listed in the package's copyright file (background sounds; a few instances' recordings)",
}
PACKAGES = {**TUXPAINT_PACKAGES, **catalog.PACKAGES}
STAMPS_DIR = "usr/share/tuxpaint/stamps"
TEMPLATES_DIR = "usr/share/tuxpaint/templates"
SAMPLES_DIR = "usr/share/sonic-pi/samples"
SAMPLES_COPYRIGHT = "usr/share/doc/sonic-pi-samples/copyright"

STAMP_MAX_SIDE = 192
DISTRACTOR_MAX_SIDE = 128
BACKGROUND_SIZE = 256

# Class name -> the stamps (path under the stamps folder, no extension) whose image and sound it uses.
# Several stamps in one class are variants of one sound source (merged, see MERGED_BECAUSE).
CLASSES: dict[str, tuple[str, ...]] = {
    "frog": ("animals/amphibians/frog",),
    "blackbird": ("animals/birds/blackbird",),
    "crow": ("animals/birds/crow",),
    "cuckoo": ("animals/birds/cuckoo",),
    "duck": ("animals/birds/duck", "animals/birds/drake"),
    "goose": ("animals/birds/gander",),
    "hen": ("animals/birds/hen",),
    "heron": ("animals/birds/heron_greatblue_flying",),
    "lark": ("animals/birds/lark",),
    "owl": ("animals/birds/owl",),
    "penguin": ("animals/birds/penguin",),
    "quetzal": ("animals/birds/quetzal",),
    "rooster": ("animals/birds/rooster",),
    "seagull": ("animals/birds/seagull",),
    "toucan": ("animals/birds/tucan",),
    "turkey": ("animals/birds/turkey",),
    "vulture": ("animals/birds/vulture",),
    "bee": ("animals/insects/bee",),
    "grasshopper": ("animals/insects/grasshopper",),
    "hornet": ("animals/insects/hornet",),
    "moth": ("animals/insects/xanthia",),
    "chimpanzee": ("animals/mammals/apes/chimp",),
    "gorilla": ("animals/mammals/apes/gorilla",),
    "dolphin": ("animals/mammals/aquatic/dolphin",),
    "orca": ("animals/mammals/aquatic/orca",),
    "sea lion": ("animals/mammals/aquatic/sea_lion",),
    "whale": ("animals/mammals/aquatic/whale",),
    "badger": ("animals/mammals/badger",),
    "bear": ("animals/mammals/bears/bear",),
    "bison": ("animals/mammals/bovines/bison",),
    "bull": ("animals/mammals/bovines/bull",),
    "cow": ("animals/mammals/bovines/cow", "animals/mammals/bovines/cow_white"),
    "goat": ("animals/mammals/bovines/goat", "animals/mammals/bovines/mountaingoat", "animals/mammals/bovines/ram"),
    "sheep": ("animals/mammals/bovines/sheep", "animals/mammals/bovines/sheep_lamb"),
    "camel": ("animals/mammals/camel/camel", "animals/mammals/camel/dromedary"),
    "lion": ("animals/mammals/cats/lion",),
    "tiger": ("animals/mammals/cats/tiger",),
    "caribou": ("animals/mammals/deer/caribou",),
    "deer": ("animals/mammals/deer/deer", "animals/mammals/deer/doe"),
    "dog": ("animals/mammals/dogs/dog",),
    "fox": ("animals/mammals/dogs/fox",),
    "elephant": ("animals/mammals/elephant",),
    "donkey": ("animals/mammals/equines/donkey",),
    "horse": ("animals/mammals/equines/horse",),
    "zebra": ("animals/mammals/equines/zebra",),
    "ferret": ("animals/mammals/ferret",),
    "hippopotamus": ("animals/mammals/hippopotamus",),
    "pig": ("animals/mammals/pig", "animals/mammals/pig_golden", "animals/mammals/pig_golden2"),
    "mouse": ("animals/mammals/rodents/mouse",),
    "rabbit": ("animals/mammals/rodents/rabbit",),
    "squirrel": ("animals/mammals/rodents/squirrel",),
    "koala": ("animals/marsupials/koala",),
    "apple bite": ("food/fruit/apple_red",),
    "camera shutter": ("hobbies/camera_35mm",),
    "cymbal": ("hobbies/music/percussion/cymbal_crash",),
    "floor tom": ("hobbies/music/percussion/drum_tomtom_floor",),
    "drum kit": ("hobbies/music/percussion/drumkit",),
    "cello": ("hobbies/music/string/cello",),
    "violin": ("hobbies/music/string/violin",),
    "bassoon": ("hobbies/music/wind/bassoon",),
    "scissors": ("household/arttools/scissors_small_closed", "household/arttools/scissors_small_open"),
    "glass filling": ("household/dishes/glass",),
    "kettle": ("household/kettle",),
    "rubber duck": ("household/rubberduck",),
    "toilet": ("household/toilet",),
    "hammer": ("household/tools/hammer",),
    "mallet": ("household/tools/mallet_metal",),
    "saw": ("household/tools/saw",),
    "lightning": ("naturalforces/lightningbolt",),
    "cat": ("seasonal/halloween/blackcat",),
    "fireworks": ("seasonal/newyears/fireworks",),
    "fire truck": ("vehicles/emergency/firetruck",),
    "submarine": ("vehicles/ship/cartoon/bathyscape",),
}

MERGED_BECAUSE = {
    "duck": "a drake is a male duck; both quack",
    "cow": "two cow stamps, both lowing",
    "goat": "mountaingoat and ram carry the same recording (correlation 1.0), goat's is a near copy (0.88)",
    "sheep": "a lamb and a sheep bleating",
    "camel": "camel and dromedary",
    "deer": "deer and doe",
    "pig": "three pig stamps, all grunting",
    "scissors": "open and closed scissors, same cutting sound",
}

# Stamps with a (non-description) sound that the benchmark leaves out, and why.
DROPPED: dict[str, str] = {
    "seasonal/hanukkah/dreydl-gimmel": "speech: a spoken letter name (Silero VAD speech fraction 1.00)",
    "seasonal/hanukkah/dreydl-hay": "speech: a spoken letter name (Silero VAD speech fraction 1.00)",
    "seasonal/hanukkah/dreydl-nun": "speech: a spoken letter name (Silero VAD speech fraction 1.00)",
    "seasonal/hanukkah/dreydl-shin": "speech: a spoken letter name (Silero VAD speech fraction 0.73)",
    "space/apollo_lander": "speech: radio voice transmission (Silero VAD speech fraction 0.96)",
    "seasonal/halloween/ghost": "a human voice imitating a ghost (Silero VAD speech fraction 0.85)",
    "seasonal/christmas/santahat": "a hat makes no sound of its own: the recording cannot be the object's",
    "seasonal/christmas/hard_candy": "a sweet makes no sound of its own: the recording cannot be the object's",
    "seasonal/halloween/spider": "a spider makes no audible sound: the recording cannot be the object's",
    "seasonal/halloween/bat_left": "a tiny silhouette, too small to segment (Silero VAD mean probability 0.28)",
    "military/final-roll-call": "a memorial (boots and helmet) makes no sound of its own",
    "town/flags/checkeredflag": "a flag makes no sound of its own",
    "town/roadsigns/no_uturn": "a road sign makes no sound of its own",
    "town/roadsigns/xing_ped": "a road sign makes no sound of its own (Silero VAD mean probability 0.22)",
    "town/roadsigns/xing_school": "a road sign makes no sound of its own (Silero VAD mean probability 0.29)",
    "animals/mammals/rodents/beaver": "same recording as the badger (correlation 1.0)",
    "animals/birds/nandou": "the recording is digital silence",
    "animals/lizards/iguana": "the recording is digital silence",
    "animals/mammals/giraffe": "the recording is digital silence",
    "animals/marsupials/wombat": "the recording is digital silence",
    "animals/insects/mosquito": "no image (neither PNG nor SVG)",
    "household/Washing-machine": "SVG image only (not rasterised)",
    "household/dishes/bottle": "SVG image only (not rasterised)",
    "household/vacuum_cleaner": "SVG image only (not rasterised)",
    "seasonal/christmas/gift": "no PNG image",
}

# Stamp folders whose silent images serve as distractors: no animals (a silent stamp of a
# sounding species would contradict its class) and nothing that has a class (musical
# instruments are classes).
DISTRACTOR_FOLDERS = ("food", "plants", "clothes", "town/houses", "town/monuments", "vehicles/locomotive",
                      "space/planets", "sports", "seasonal/easter", "household/tools", "hobbies")
DISTRACTOR_EXCLUDED = ("hobbies/music/",)
INSTANCE_MAX_S = 6.0  # recordings of the further instances are cut to this length

# Background sounds: sonic-pi samples with a CC0 entry in the package's copyright file whose
# names mark ambience, texture or synthetic tones; drums, guitars and voices are left out because
# several classes are drums or guitars and none is a voice.  A sample a class uses is never noise.
NOISE_PATTERN = re.compile(r"^(ambi_(?!choir)|vinyl_|bass_(?!voxy)|loop_(3d_printer|drone|electric)|"
                           r"elec_(beep|bell|blip|blup|bong|chime|ping|plip|pop|tick|triangle|twang|twip|flip)|"
                           r"perc_(bell|swash|swoosh)|misc_cineboom)")
NOISE_MAX_S = 8.0

# Every HOLDOUT-th item (sorted by name) of the backgrounds, distractors and noise goes to test only.
HOLDOUT = 4


def recipe() -> str:
    """A digest of every choice above; a cached pack made with other choices is rebuilt."""
    choices = [CLASSES, DROPPED, MERGED_BECAUSE, DISTRACTOR_FOLDERS, DISTRACTOR_EXCLUDED, NOISE_PATTERN.pattern,
               NOISE_MAX_S, HOLDOUT, SAMPLE_RATE_HZ, STAMP_MAX_SIDE, DISTRACTOR_MAX_SIDE, BACKGROUND_SIZE,
               INSTANCE_MAX_S, {name: [[i.sound, i.picture] for i in items] for name, items in catalog.INSTANCES.items()},
               catalog.split_of(1, 2), catalog.split_of(2, 4)]
    return hashlib.sha256(json.dumps(choices, sort_keys=True, default=list).encode()).hexdigest()[:16]


class SourceError(RuntimeError):
    """The Debian packages cannot be fetched or do not hold what the benchmark needs."""


def fetch(cache_dir: Path) -> Path:
    """Download and unpack the three packages into ``cache_dir/root`` (once); returns that root."""
    cache_dir = Path(cache_dir)
    root = cache_dir / "root"
    done = cache_dir / "fetched.json"
    if done.is_file() and json.loads(done.read_text()).get("packages") == sorted(PACKAGES):
        return root
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise SourceError(
                f"building the embedded benchmark from its sources needs `{tool}` (Debian or Ubuntu) to fetch "
                f"{', '.join(PACKAGES)}; on another system use a source pack written elsewhere "
                "(python -m training.embedded.build build --pack PACK.npz)")
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        if not list(debs.glob(f"{package}_*.deb")):
            result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
            if result.returncode != 0:
                hint = " (run `apt-get update` first?)" if "Unable to locate" in result.stderr else ""
                raise SourceError(f"apt-get download {package} failed{hint}: {result.stderr.strip()[-400:]}")
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    done.write_text(json.dumps({"packages": sorted(PACKAGES),
                                "debs": sorted(p.name for p in debs.glob("*.deb"))}, indent=1))
    return root


def decode_sound(path: Path, max_s: float | None = None) -> np.ndarray:
    """Any audio file -> mono float32 at 16 kHz (channels averaged)."""
    from emktd.media import load_audio

    return load_audio(path, SAMPLE_RATE_HZ, max_s)


def decode_sound_bytes(data: bytes, suffix: str, max_s: float | None = None,
                       rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """An audio file's bytes (a bundle's or a catalogue's entry) -> mono float32 at ``rate``;
    ``suffix`` tells the decoder the format, as a file name would."""
    import tempfile

    from emktd.media import load_audio

    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        return load_audio(Path(tmp.name), rate, max_s)


def _to_pcm(audio: np.ndarray) -> np.ndarray:
    peak = float(np.abs(audio).max()) or 1.0
    return np.round(audio / peak * 32000).astype(np.int16)  # peak-normalised: gain is set at mixing


def rgba_picture(image, max_side: int, where) -> np.ndarray:
    """A PIL image -> RGBA uint8 of at most ``max_side`` a side, cropped to its opaque part
    (``where`` names it in the error a fully transparent picture gets)."""
    from PIL import Image

    image = image.convert("RGBA")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    rgba = np.asarray(image, dtype=np.uint8)
    ys, xs = np.nonzero(rgba[..., 3] > 8)
    if ys.size == 0:
        raise SourceError(f"{where}: fully transparent image")
    return np.ascontiguousarray(rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def _rgba(path: Path, max_side: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return rgba_picture(image, max_side, path)


def _background(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.fit(image.convert("RGB"), (BACKGROUND_SIZE, BACKGROUND_SIZE), Image.Resampling.LANCZOS)
        return np.asarray(image, dtype=np.uint8)


def sounding_stamps(stamps_root: Path) -> list[str]:
    """Every stamp with an object sound (not a spoken description), outside the letters and digits."""
    found = []
    for ogg in stamps_root.rglob("*.ogg"):
        rel = ogg.relative_to(stamps_root).with_suffix("").as_posix()
        if "_desc" in ogg.name or rel.startswith("symbols/"):
            continue
        found.append(rel)
    return sorted(found)


def cc0_samples(copyright_path: Path) -> set[str]:
    """Sample file names that the package's copyright file lists under License: CC0."""
    names, current = set(), None
    for line in copyright_path.read_text(errors="replace").splitlines():
        if line.startswith("Files:"):
            match = re.match(r"Files:\s*etc/samples/(\S+)$", line)
            current = match.group(1) if match else None
        elif line.startswith("License:") and current is not None:
            if line.split(":", 1)[1].strip() == "CC0":
                names.add(current)
            current = None
    return names


def _split_of(index: int) -> str:
    return "test" if index % HOLDOUT == HOLDOUT - 1 else "train"


@dataclass
class Pack:
    """The source pack in memory. Sounds are float32 at 16 kHz; images uint8."""

    classes: list[str]
    stamps: list[dict]  # {"name", "class" (index), "image" [h, w, 4], "sound" [S]}
    distractors: list[dict]  # {"name", "image", "split"}
    backgrounds: list[dict]  # {"name", "image" [256, 256, 3], "split"}
    noises: list[dict]  # {"name", "sound", "split"}
    meta: dict


def collect(root: Path, progress: bool = True) -> Pack:
    """Read the unpacked packages into a :class:`Pack`, applying CLASSES and DROPPED."""
    from tqdm import tqdm

    root = Path(root)
    stamps_root = root / STAMPS_DIR
    if not stamps_root.is_dir():
        raise SourceError(f"{stamps_root}: missing; expected the unpacked {', '.join(PACKAGES)} packages")
    assigned = {stamp: name for name, stamps in CLASSES.items() for stamp in stamps}
    found = sounding_stamps(stamps_root)
    unreviewed = sorted(set(found) - set(assigned) - set(DROPPED))
    if unreviewed:
        raise SourceError(f"{stamps_root}: stamps with sounds that are neither a class nor dropped: {unreviewed}")
    missing = sorted(set(assigned) - set(found))
    if missing:
        raise SourceError(f"{stamps_root}: stamps the class list expects are missing: {missing}")

    plan = instance_plan()
    instance_samples = {i.sound.split(":", 1)[1] for _, _, _, i in plan if i.sound.startswith("sonicpi:")}
    allowed = cc0_samples(root / SAMPLES_COPYRIGHT)
    not_cc0 = sorted(instance_samples - allowed)
    if not_cc0:
        raise SourceError(f"{root / SAMPLES_COPYRIGHT}: the catalogue uses Sonic Pi samples this file does not "
                          f"list as CC0: {not_cc0}")
    classes = list(CLASSES) + list(dict.fromkeys(name for name, *_ in plan if name not in CLASSES))
    stamps = []
    for stamp in tqdm(sorted(assigned), desc="object stamps", disable=not progress):
        stamps.append({"name": stamp, "class": classes.index(assigned[stamp]), "split": "train",
                       "origin": {"sound": f"tuxpaint:{stamp}", "picture": f"tuxpaint:{stamp}"},
                       "image": _rgba(stamps_root / f"{stamp}.png", STAMP_MAX_SIDE),
                       "sound": decode_sound(stamps_root / f"{stamp}.ogg")})
    stamps += further_instances(root, plan, classes, progress)
    _check_distinct_recordings(stamps, classes)

    sounding = set(found)
    pictured = {i.picture.split(":", 1)[1] for items in catalog.INSTANCES.values() for i in items
                if i.picture.startswith("tuxpaint:")}
    candidates = sorted(p.relative_to(stamps_root).with_suffix("").as_posix()
                        for folder in DISTRACTOR_FOLDERS for p in (stamps_root / folder).rglob("*.png"))
    candidates = [c for c in candidates if c not in sounding and c not in pictured
                  and not c.startswith(DISTRACTOR_EXCLUDED)]
    distractors = [{"name": name, "image": _rgba(stamps_root / f"{name}.png", DISTRACTOR_MAX_SIDE),
                    "split": _split_of(i)}
                   for i, name in enumerate(tqdm(candidates, desc="distractor stamps", disable=not progress))]

    templates = sorted((root / TEMPLATES_DIR).glob("*.jpg"))
    if len(templates) < HOLDOUT:
        raise SourceError(f"{root / TEMPLATES_DIR}: expected the tuxpaint-data background photographs")
    backgrounds = [{"name": p.stem, "image": _background(p), "split": _split_of(i)} for i, p in enumerate(templates)]

    samples = sorted(p for p in (root / SAMPLES_DIR).glob("*.flac") if p.name in allowed and NOISE_PATTERN.match(p.name)
                     and p.name not in instance_samples)
    noises = [{"name": p.stem, "sound": decode_sound(p, NOISE_MAX_S), "split": _split_of(i)}
              for i, p in enumerate(tqdm(samples, desc="background sounds", disable=not progress))]

    meta = {
        "recipe": recipe(),
        "classes": classes,
        "merged": MERGED_BECAUSE,
        "dropped": DROPPED,
        "licences": PACKAGES,
        "debs": json.loads((root.parent / "fetched.json").read_text()).get("debs", [])
        if (root.parent / "fetched.json").is_file() else [],
        "sample_rate_hz": SAMPLE_RATE_HZ,
    }
    return Pack(classes, stamps, distractors, backgrounds, noises, meta)


def instance_plan() -> list[tuple[str, int, str, catalog.Instance]]:
    """(class, instance number, split, instance) of every catalogue instance the benchmark keeps:
    a class's Tux Paint stamps are its instance 0; a class without stamps needs two instances."""
    plan = []
    for name, items in catalog.INSTANCES.items():
        first = 1 if name in CLASSES else 0
        count = len(items) + first
        if count >= 2:
            plan += [(name, first + k, catalog.split_of(first + k, count), item) for k, item in enumerate(items)]
    return plan


def further_instances(root: Path, plan: list, classes: list[str], progress: bool = True) -> list[dict]:
    """The recordings and pictures of the planned instances (:func:`instance_plan`)."""
    from tqdm import tqdm

    from .origins import OriginError, Origins

    origins = Origins(root)
    entries = []
    for name, number, split, instance in tqdm(plan, desc="further instances", disable=not progress):
        try:
            sound = origins.sound(instance.sound, INSTANCE_MAX_S)
            image = origins.picture(instance.picture, STAMP_MAX_SIDE)
        except (OriginError, SourceError, OSError, ValueError) as exc:
            raise SourceError(f"class {name!r}, instance {number}: {exc}") from None
        entries.append({"name": f"{name}#{number}", "class": classes.index(name), "split": split,
                        "origin": {"sound": instance.sound, "picture": instance.picture},
                        "image": image, "sound": sound})
    return entries


def _check_distinct_recordings(stamps: list[dict], classes: list[str]) -> None:
    """A silent recording, or two classes sharing one, could not be told apart by ear; stop if that happens."""
    seen: dict[str, dict] = {}
    for stamp in stamps:
        sound = stamp["sound"]
        if np.sqrt(np.mean(sound ** 2)) < 1e-4:
            raise SourceError(f"{stamp['name']}: the recording is (near) silent")
        key = hashlib.sha1(np.round(sound[: SAMPLE_RATE_HZ] / (np.abs(sound).max() or 1), 2).tobytes()).hexdigest()
        other = seen.setdefault(key, stamp)
        if other is not stamp and other["class"] != stamp["class"]:
            raise SourceError(f"{stamp['name']} and {other['name']} carry the same recording but are classes "
                              f"{classes[stamp['class']]!r} and {classes[other['class']]!r}")


def _concat(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [a.size for a in arrays]).astype(np.int64)
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    return flat, offsets


def pack_sounds(arrays: dict, group: str, sounds: list[np.ndarray]) -> None:
    """Store ``sounds`` (float, peak-normalised to int16) as ``<group>_pcm`` and its offsets."""
    arrays[f"{group}_pcm"], arrays[f"{group}_pcm_offsets"] = _concat([_to_pcm(sound) for sound in sounds])


def pack_pictures(arrays: dict, group: str, pictures: list[np.ndarray]) -> None:
    """Store RGBA ``pictures`` as ``<group>_rgba``, its offsets and ``<group>_shapes``."""
    arrays[f"{group}_rgba"], arrays[f"{group}_rgba_offsets"] = _concat(pictures)
    arrays[f"{group}_shapes"] = np.array([p.shape[:2] for p in pictures], dtype=np.int32).reshape(-1, 2)


def write_arrays(path: Path, arrays: dict, meta: dict) -> Path:
    """One compressed ``.npz`` of plain arrays and a JSON ``meta`` (loadable with ``allow_pickle=False``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {**arrays, "meta_json": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)}
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def read_arrays(path: Path, error: type[Exception], command: str, what: str) -> tuple:
    """``(arrays, meta)`` of a file :func:`write_arrays` wrote; when the file is not one, ``error``
    says it is not ``what`` the ``command`` writes."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        return data, json.loads(data["meta_json"].tobytes().decode())
    except (OSError, ValueError, KeyError) as exc:
        raise error(f"{path}: not a {what} written by `{command}` ({exc})") from None


def unpack_sounds(data, group: str) -> list[np.ndarray]:
    pcm, offsets = data[f"{group}_pcm"], data[f"{group}_pcm_offsets"]
    return [pcm[a:b].astype(np.float32) / 32768.0 for a, b in zip(offsets[:-1], offsets[1:])]


def unpack_pictures(data, group: str) -> list[np.ndarray]:
    flat, offsets, shapes = data[f"{group}_rgba"], data[f"{group}_rgba_offsets"], data[f"{group}_shapes"]
    return [flat[a:b].reshape(h, w, 4) for (a, b), (h, w) in zip(zip(offsets[:-1], offsets[1:]), shapes)]


def save_pack(pack: Pack, path: Path) -> Path:
    """Write the pack as one compressed ``.npz`` of plain arrays (loadable with ``allow_pickle=False``)."""
    arrays: dict[str, np.ndarray] = {}
    pack_sounds(arrays, "stamp", [i["sound"] for i in pack.stamps])
    pack_sounds(arrays, "noise", [i["sound"] for i in pack.noises])
    pack_pictures(arrays, "stamp", [i["image"] for i in pack.stamps])
    pack_pictures(arrays, "distractor", [i["image"] for i in pack.distractors])
    arrays["background_rgb"] = np.stack([b["image"] for b in pack.backgrounds])
    meta = dict(pack.meta)
    meta["stamps"] = [{"name": s["name"], "class": s["class"], "split": s.get("split", "train"),
                       "origin": s.get("origin")} for s in pack.stamps]
    meta["distractors"] = [{"name": d["name"], "split": d["split"]} for d in pack.distractors]
    meta["backgrounds"] = [{"name": b["name"], "split": b["split"]} for b in pack.backgrounds]
    meta["noises"] = [{"name": n["name"], "split": n["split"]} for n in pack.noises]
    return write_arrays(path, arrays, meta)


def pack_arrays(path: Path) -> tuple:
    """``(arrays, meta)`` of a source pack; the arrays are read from disk only when used."""
    return read_arrays(path, SourceError, "python -m training.embedded.build pack", "source pack")


def load_pack(path: Path) -> Pack:
    """Read a pack written by :func:`save_pack`; needs numpy only."""
    data, meta = pack_arrays(path)
    stamps = [{**m, "image": im, "sound": s} for m, im, s in
              zip(meta["stamps"], unpack_pictures(data, "stamp"), unpack_sounds(data, "stamp"))]
    distractors = [{**m, "image": im} for m, im in zip(meta["distractors"], unpack_pictures(data, "distractor"))]
    backgrounds = [{**m, "image": im} for m, im in zip(meta["backgrounds"], data["background_rgb"])]
    noises = [{**m, "sound": s} for m, s in zip(meta["noises"], unpack_sounds(data, "noise"))]
    core = {k: v for k, v in meta.items() if k not in ("stamps", "distractors", "backgrounds", "noises")}
    return Pack(meta["classes"], stamps, distractors, backgrounds, noises, core)
