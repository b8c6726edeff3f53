"""The transfer pool: unlabelled pictures and sounds beyond the benchmark's labelled instances.

A student distilled with ``--transfer-pool N`` also trains, every epoch, on N clips that the
pretraining stream's synthesis composes from the pool (:class:`.stream.PoolReader`), with the
teacher's targets only (KD and the method's token term; no label, no mask).  The pool holds:

  pictures  every Open Clip Art drawing whose alpha channel outlines an object (folders of
            buttons, icons, shapes, logos, signs and decorations left out), and every Noto emoji
            glyph of the ranges below;
  sounds    every LMMS sample, every Sonic Pi sample its copyright file lists as CC0, every
            Widelands game sound (not its music), every OpenSFX sound and every sound in
            GCompris's activity bundles, cut to 6 s.

Nothing of the benchmark's material enters it: not a labelled instance of any split (Tux Paint
stamps and catalogue instances), not a distractor stamp, not a background sound.  Two checks
keep them out (:func:`exclusions`):

  digest      the SHA-256 of the source file's bytes (a bundle entry's, a catalogue entry's)
              against those of every file the benchmark's material was read from, and of the
              decoded content (the picture as cropped RGBA, the sound as 16 kHz int16) against
              the benchmark's own;
  family      a file whose name differs from a benchmark file's only in its digits, in the same
              folder or bundle (``sheep_01.ogg`` beside an instance's ``sheep_00.ogg``; another
              take of the same recording session, another drawing of the same series);
  perceptual  pictures: a 64-bit difference hash (dHash: the picture over mid-grey, 9 x 8
              grey levels, each bit "brighter than its right neighbour") of the picture and of its
              mirror image against every benchmark picture's; a Hamming distance of at most
              ``PICTURE_HAMMING`` (10 of 64 bits) is a near-duplicate.  Sounds: the fingerprint of
              Haitsma and Kalker ("A Highly Robust Audio Fingerprinting System", ISMIR 2002:
              32-bit frames of the signs of energy differences across 33 bands, 300 to 2000 Hz),
              aligned by exactly matching frames; a bit error rate of at most ``SOUND_BER``
              (0.35, the paper's threshold) over the overlap is the same recording.

    python -m training.embedded.build pool            # build (or reuse) the pool pack; print what it holds

The pool pack (``pool_pack.npz`` beside the source pack, plain arrays) records each item's
origin and, for every candidate left out, which benchmark item it matched and how.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emktd.features import SAMPLE_RATE_HZ

from . import catalog, sources

POOL_PICTURE_MAX_SIDE = 128
POOL_SOUND_MAX_S = 6.0
PICTURE_HAMMING = 10  # dHash bits (of 64) at or below which two pictures are one drawing
SOUND_BER = 0.35  # fingerprint bit error rate at or below which two sounds are one recording
MAX_PIXELS = 4096 * 4096  # larger Open Clip Art files are posters and scenes, slow to decode
MIN_OVERLAP_FRAMES = 64  # about 0.75 s of fingerprint frames for a comparison to count
OPENCLIPART_LEFT_OUT = ("buttons", "computer", "decorations", "shapes", "logos", "signs_and_symbols", "special")
EMOJI_RANGES = ((0x1F300, 0x1F5FF), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF))
POOL_VERSION = 2


class PoolError(RuntimeError):
    """The pool cannot be built from what the cache holds."""


# ------------------------------------------------------------------ perceptual hashes

def dhash(rgba: np.ndarray) -> int:
    """The 64-bit difference hash of an RGBA picture composited over mid-grey."""
    from PIL import Image

    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    grey = (rgba[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    flat = (grey * alpha + 128.0 * (1.0 - alpha))[..., 0]
    small = np.asarray(Image.fromarray(flat.clip(0, 255).astype(np.uint8)).resize((9, 8), Image.Resampling.LANCZOS),
                       dtype=np.int16)
    bits = (small[:, :-1] > small[:, 1:]).reshape(-1)
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: np.ndarray) -> np.ndarray:
    """Bit distances between the hash ``a`` and each of the hashes ``b`` (uint64)."""
    x = np.bitwise_xor(np.uint64(a), b)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def fingerprint(audio: np.ndarray, rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Haitsma-Kalker sub-fingerprints: one uint32 per frame (0.37 s frames, hop 1/64 of a frame
    length in the paper; here 2048 samples at 5.5 kHz, hop 64)."""
    target = 5512
    n = max(2, int(round(audio.size * target / rate)))
    x = np.interp(np.linspace(0, audio.size - 1, n), np.arange(audio.size), audio).astype(np.float32)
    size, hop = 2048, 64
    if x.size < size + hop:
        x = np.pad(x, (0, size + hop - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, size)[::hop] * np.hanning(size).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(size, 1.0 / target)
    edges = np.geomspace(300.0, 2000.0, 34)
    bands = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:])],
                     axis=1)
    energy = np.log(bands + 1e-10)
    d = energy[:, :-1] - energy[:, 1:]  # [frames, 32]
    bits = (d[1:] - d[:-1]) > 0
    return np.packbits(bits, axis=1).view(">u4")[:, 0].astype(np.uint32)


def _popcount32(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.astype(">u4").view(np.uint8).reshape(-1, 4), axis=1).sum(axis=1)


class SoundIndex:
    """The fingerprints of the benchmark's recordings, looked up by exactly matching frames."""

    def __init__(self, names: list[str], prints: list[np.ndarray]):
        self.names, self.prints = names, prints
        self.table: dict[int, list[tuple[int, int]]] = {}
        for k, fp in enumerate(prints):
            for i, value in enumerate(fp.tolist()):
                self.table.setdefault(value, []).append((k, i))

    def match(self, fp: np.ndarray) -> tuple[str, float] | None:
        """The benchmark recording ``fp`` is (name, bit error rate), or None."""
        votes: dict[tuple[int, int], int] = {}
        for j, value in enumerate(fp.tolist()):
            for k, i in self.table.get(value, ()):
                votes[k, i - j] = votes.get((k, i - j), 0) + 1
        best = None
        for (k, offset), _ in sorted(votes.items(), key=lambda kv: -kv[1])[:8]:
            other = self.prints[k]
            lo, hi = max(0, -offset), min(fp.size, other.size - offset)
            if hi - lo < min(MIN_OVERLAP_FRAMES, fp.size, other.size):
                continue
            ber = float(_popcount32(fp[lo:hi] ^ other[lo + offset:hi + offset]).mean() / 32.0)
            if ber <= SOUND_BER and (best is None or ber < best[1]):
                best = (self.names[k], ber)
        return best


# ------------------------------------------------------------------ the candidates

@dataclass
class Candidate:
    kind: str  # "picture" or "sound"
    origin: str  # an address like the catalogue's
    data: np.ndarray  # RGBA uint8, or float32 audio at 16 kHz
    file_sha256: str | None = None  # of the bytes it was read from


@dataclass
class Pool:
    pictures: list[dict] = field(default_factory=list)  # {"origin", "image"}
    sounds: list[dict] = field(default_factory=list)  # {"origin", "sound"}
    excluded: list[dict] = field(default_factory=list)  # {"origin", "kind", "why", "matches"}
    meta: dict = field(default_factory=dict)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def picture_candidates(root: Path, progress: bool = True) -> list[Candidate]:
    """Open Clip Art drawings with an object-like alpha, and the emoji glyphs the font has."""
    from PIL import Image
    from tqdm import tqdm

    out = []
    base = root / catalog.OPENCLIPART
    paths = sorted(p for p in base.rglob("*.png") if not p.relative_to(base).as_posix().startswith(OPENCLIPART_LEFT_OUT))
    for path in tqdm(paths, desc="pool: drawings", disable=not progress):
        try:
            raw = path.read_bytes()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(raw)) as image:
                    if ("A" not in image.getbands() and image.mode != "P") or image.width * image.height > MAX_PIXELS:
                        continue  # no alpha to outline an object; or a poster, not a drawing of one
                    rgba = sources.rgba_picture(image, POOL_PICTURE_MAX_SIDE, path)
        except (OSError, ValueError, Image.DecompressionBombError, sources.SourceError):
            continue
        h, w = rgba.shape[:2]
        coverage = float((rgba[..., 3] > 128).mean())
        if min(h, w) < 24 or not 0.15 <= coverage <= 0.97:
            continue  # a line, a frame or a filled rectangle: no object outline
        out.append(Candidate("picture", f"openclipart:{path.relative_to(base).as_posix()}", rgba, _sha(raw)))
    from .origins import Origins

    origins = Origins(root)
    if not (root / catalog.EMOJI_FONT).is_file():
        return out  # no emoji font unpacked: the drawings only
    blank = _missing_glyph(origins)
    for lo, hi in EMOJI_RANGES:
        for code in tqdm(range(lo, hi + 1), desc=f"pool: emoji {lo:X}", disable=not progress):
            try:
                image = origins._emoji(f"emoji:{code:X}", f"{code:X}")
                rgba = sources.rgba_picture(image, POOL_PICTURE_MAX_SIDE, f"emoji:{code:X}")
            except sources.SourceError:
                continue  # nothing drawn: no glyph
            if blank is not None and rgba.shape == blank.shape and np.array_equal(rgba, blank):
                continue
            out.append(Candidate("picture", f"emoji:{code:X}", rgba))
    return out


def _missing_glyph(origins) -> np.ndarray | None:
    try:
        return sources.rgba_picture(origins._emoji("emoji:10FFFD", "10FFFD"), POOL_PICTURE_MAX_SIDE, "missing")
    except sources.SourceError:
        return None


def sound_candidates(root: Path, progress: bool = True) -> list[Candidate]:
    """Every sound of the packages' sample folders, game sounds and activity bundles."""
    from tqdm import tqdm

    from emktd.media import MediaError

    from .origins import read_sound_catalogue
    from .rcc import read_rcc

    files = []
    allowed = sources.cc0_samples(root / sources.SAMPLES_COPYRIGHT)
    for kind, (_, folder) in catalog.FOLDERS.items():
        if kind == "openclipart":
            continue
        base = root / folder
        for path in sorted(base.rglob("*")):
            if path.suffix.lower() not in (".ogg", ".flac", ".wav") or "music" in path.relative_to(base).parts:
                continue
            if kind == "sonicpi" and path.name not in allowed:
                continue
            files.append((f"{kind}:{path.relative_to(base).as_posix()}", path.read_bytes(), path.suffix))
    for title, data in read_sound_catalogue(root / catalog.OPENSFX_CAT).items():
        quoted = re.match(r'"([^"]+)"\.', title)
        if quoted:
            files.append((f"opensfx:{quoted.group(1)}", data, ".wav"))
    for bundle in sorted((root / catalog.GCOMPRIS_RCC).glob("*.rcc")):
        for name, data in sorted(read_rcc(bundle).items()):
            if name.lower().endswith((".ogg", ".wav")):
                files.append((f"gcompris:{bundle.stem}/{name.rsplit('/', 1)[-1]}", data, Path(name).suffix))
    out = []
    for origin, data, suffix in tqdm(files, desc="pool: sounds", disable=not progress):
        try:
            audio = sources.decode_sound_bytes(data, suffix, POOL_SOUND_MAX_S)
        except (MediaError, OSError, ValueError):
            continue
        if audio.size < 0.2 * SAMPLE_RATE_HZ or np.sqrt(np.mean(audio ** 2)) < 1e-3:
            continue  # too short or (near) silent
        out.append(Candidate("sound", origin, audio, _sha(data)))
    return out


# ------------------------------------------------------------------ what the benchmark holds

def benchmark_material(root: Path, pack: sources.Pack) -> dict:
    """The file digests, content digests and perceptual prints of everything the benchmark shows
    or sounds: every stamp and instance (all splits), every distractor, every background sound."""
    from .origins import Origins

    origins = Origins(root)
    file_digests: dict[str, str] = {}
    families: dict[str, str] = {}
    for stamp in pack.stamps:
        origin = stamp.get("origin") or {}
        for address in {origin.get("sound"), origin.get("picture")} - {None}:
            for data in source_files(origins, root, address):
                file_digests[_sha(data)] = f"{stamp['name']} ({address})"
            if family(address) is not None:
                families[family(address)] = f"{stamp['name']} ({address})"
    for d in pack.distractors:
        path = root / sources.STAMPS_DIR / f"{d['name']}.png"
        if path.is_file():
            file_digests[_sha(path.read_bytes())] = f"distractor {d['name']}"
    allowed = sources.cc0_samples(root / sources.SAMPLES_COPYRIGHT)
    for n in pack.noises:
        path = root / sources.SAMPLES_DIR / f"{n['name']}.flac"
        if path.is_file() and path.name in allowed:
            file_digests[_sha(path.read_bytes())] = f"background sound {n['name']}"
    pictures = [(s["name"], s["image"]) for s in pack.stamps] + [(f"distractor {d['name']}", d["image"])
                                                                 for d in pack.distractors]
    sounds = [(s["name"], s["sound"]) for s in pack.stamps] + [(f"background sound {n['name']}", n["sound"])
                                                               for n in pack.noises]
    return {
        "families": families,
        "file_digests": file_digests,
        "picture_names": [n for n, _ in pictures],
        "picture_hashes": np.array([dhash(im) for _, im in pictures], dtype=np.uint64),
        "content_digests": {_content_digest(im): n for n, im in pictures} | {_content_digest(s): n for n, s in sounds},
        "sounds": SoundIndex([n for n, _ in sounds], [fingerprint(s) for _, s in sounds]),
    }


def source_files(origins, root: Path, address: str) -> list[bytes]:
    """The bytes of the files an address was read from (a Tux Paint stamp: its picture and its
    recording; none for SoundFont phrases and rendered emoji, which have no file of their own)."""
    kind, rest = address.split(":", 1)
    if kind == "tuxpaint":
        stamps = root / sources.STAMPS_DIR
        return [p.read_bytes() for p in (stamps / f"{rest}.png", stamps / f"{rest}.ogg") if p.is_file()]
    if kind == "gcompris":
        return [origins._bundle_file(address)]
    if kind == "opensfx":
        return [origins._catalogue_entry(address)]
    if kind in catalog.FOLDERS:
        return [origins._file(address).read_bytes()]
    return []


def family(address: str) -> str | None:
    """A file's address with the digits of its name dropped: the files of one numbered series
    (None for what is not a file: an emoji's code point, a SoundFont phrase, a catalogue title)."""
    kind, rest = address.split(":", 1)
    if kind not in catalog.FOLDERS and kind not in ("gcompris", "tuxpaint"):
        return None
    folder, _, name = rest.rpartition("/")
    return f"{kind}:{folder}/{re.sub(r'[0-9]+', '', name.rsplit('.', 1)[0])}"


def _content_digest(data: np.ndarray) -> str:
    if data.dtype == np.uint8:
        return _sha(np.ascontiguousarray(data).tobytes() + str(data.shape).encode())
    peak = float(np.abs(data).max()) or 1.0
    return _sha(np.round(data / peak * 32000).astype(np.int16).tobytes())


def exclusions(candidate: Candidate, material: dict) -> list[str]:
    """Why a candidate may not enter the pool (empty: it may)."""
    why = []
    series = family(candidate.origin)
    if series is not None and series in material["families"]:
        why.append(f"one numbered series with {material['families'][series]}")
    if candidate.file_sha256 is not None and candidate.file_sha256 in material["file_digests"]:
        why.append(f"file digest of {material['file_digests'][candidate.file_sha256]}")
    content = _content_digest(candidate.data)
    if content in material["content_digests"]:
        why.append(f"content digest of {material['content_digests'][content]}")
    if candidate.kind == "picture":
        hashes = material["picture_hashes"]
        for flipped, image in ((False, candidate.data), (True, candidate.data[:, ::-1])):
            distances = hamming(dhash(image), hashes)
            k = int(distances.argmin()) if distances.size else -1
            if k >= 0 and distances[k] <= PICTURE_HAMMING:
                why.append(f"dHash {int(distances[k])} bits from {material['picture_names'][k]}"
                           + (" (mirrored)" if flipped else ""))
                break
    else:
        found = material["sounds"].match(fingerprint(candidate.data))
        if found is not None:
            why.append(f"fingerprint bit error rate {found[1]:.2f} against {found[0]}")
    return why


def collect_pool(root: Path, pack: sources.Pack, progress: bool = True) -> Pool:
    """Every candidate of the unpacked packages under ``root`` that passes :func:`exclusions`."""
    material = benchmark_material(root, pack)
    pool = Pool()
    for candidate in picture_candidates(root, progress) + sound_candidates(root, progress):
        why = exclusions(candidate, material)
        if why:
            pool.excluded.append({"origin": candidate.origin, "kind": candidate.kind, "why": why})
        elif candidate.kind == "picture":
            pool.pictures.append({"origin": candidate.origin, "image": candidate.data})
        else:
            pool.sounds.append({"origin": candidate.origin, "sound": candidate.data})
    pool.meta = {"version": POOL_VERSION, "pack_recipe": pack.meta.get("recipe"), "picture_hamming": PICTURE_HAMMING,
                 "sound_ber": SOUND_BER, "picture_max_side": POOL_PICTURE_MAX_SIDE,
                 "sound_max_s": POOL_SOUND_MAX_S, "licences": sources.PACKAGES}
    return pool


# ------------------------------------------------------------------ the pool pack

def save_pool(pool: Pool, path: Path) -> Path:
    """One compressed ``.npz`` of plain arrays (loadable with ``allow_pickle=False``)."""
    arrays: dict[str, np.ndarray] = {}
    sources.pack_sounds(arrays, "sound", [s["sound"] for s in pool.sounds])
    sources.pack_pictures(arrays, "picture", [p["image"] for p in pool.pictures])
    meta = {**pool.meta, "pictures": [p["origin"] for p in pool.pictures], "sounds": [s["origin"] for s in pool.sounds],
            "excluded": pool.excluded}
    return sources.write_arrays(path, arrays, meta)


def pool_arrays(path: Path) -> tuple:
    """``(arrays, meta)`` of a pool pack; the arrays are read from disk only when used."""
    return sources.read_arrays(path, PoolError, "python -m training.embedded.build pool", "pool pack")


def load_pool(path: Path) -> Pool:
    data, meta = pool_arrays(path)
    sounds = [{"origin": o, "sound": s} for o, s in zip(meta["sounds"], sources.unpack_sounds(data, "sound"))]
    pictures = [{"origin": o, "image": im} for o, im in zip(meta["pictures"], sources.unpack_pictures(data, "picture"))]
    core = {k: v for k, v in meta.items() if k not in ("pictures", "sounds", "excluded")}
    return Pool(pictures, sounds, meta["excluded"], core)


def default_pool_path(cache: Path) -> Path:
    return Path(cache) / "pool_pack.npz"


def ensure_pool(pack_path: Path, cache: Path | None = None, progress: bool = True) -> Path:
    """The pool pack beside the source pack (in ``cache``, by default the pack's folder) if it was
    made for this pack's recipe, or one built now from the unpacked packages there."""
    cache = Path(cache) if cache is not None else Path(pack_path).parent
    path = default_pool_path(cache)
    _, pack_meta = sources.pack_arrays(pack_path)  # the metadata only: the arrays stay on disk
    if path.is_file():
        try:
            _, meta = pool_arrays(path)
        except PoolError:
            meta = {}
        if meta.get("pack_recipe") == pack_meta.get("recipe") and meta.get("version") == POOL_VERSION:
            return path
    root = sources.fetch(cache)
    return save_pool(collect_pool(root, sources.load_pack(pack_path), progress), path)


def summary(pool: Pool) -> str:
    by_kind: dict[str, int] = {}
    for item in pool.excluded:
        by_kind[item["kind"]] = by_kind.get(item["kind"], 0) + 1
    lines = [f"pool: {len(pool.pictures)} pictures, {len(pool.sounds)} sounds; left out as benchmark material: "
             f"{by_kind.get('picture', 0)} pictures, {by_kind.get('sound', 0)} sounds"]
    for item in pool.excluded:
        lines.append(f"  {item['origin']}: {'; '.join(item['why'])}")
    return "\n".join(lines)
