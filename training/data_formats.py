"""The real datasets' on-disk formats: writers (for the embedded benchmark) and loaders (for everything).

Layouts (see README "Datasets"):
  VGGSound    vggsound.csv (no header: youtube_id,start_seconds,label,split) + <ytid>_<start:06d>.mp4
  CAV-MAE     {"data": [{"video_id", "wav", "video_path", "labels"}]} json + label csv (index,mid,display_name),
              frames pre-extracted as <video_path>/frame_<k>/<video_id>.jpg
  AVSBench    Single-source (S4) and Multi-sources (MS3), frames/masks/audio_wav/audio_log_mel + meta csv

Loaders never substitute anything for a missing or unreadable clip: missing files
are found when the dataset is built and listed in ``manifest``; a clip that fails
to decode comes back as ``{"id", "error"}`` and :func:`collate` sets it aside, so
every evaluation can print the clips it really ran on.
"""

from __future__ import annotations

import csv
import json
import wave
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emktd.features import FbankConfig, audio_fbank, audio_fbank_windows, frames_to_tensor

try:  # PyAV is needed for VGGSound's mp4 clips only; GPU machines without it read the other formats
    from emktd.media import MediaError
except ImportError:  # pragma: no cover - exercised only where PyAV is missing
    class MediaError(ValueError):
        pass

SAMPLE_RATE_HZ = 16000


class FormatError(ValueError):
    """A dataset folder or file is not in the layout its loader expects."""


# ---------------------------------------------------------------- small readers and writers

def write_wav(path: Path, audio: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
    """Mono float audio in [-1, 1] -> 16-bit PCM wav."""
    pcm = np.clip(np.round(np.asarray(audio, np.float32) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate_hz)
        out.writeframes(pcm.tobytes())


def read_wav(path: Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """PCM wav (8/16/32-bit, any channels, any rate) -> mono float32 at ``sample_rate_hz``."""
    try:
        with wave.open(str(path), "rb") as src:
            channels, width, rate = src.getnchannels(), src.getsampwidth(), src.getframerate()
            raw = src.readframes(src.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise FormatError(f"{path}: not a readable PCM wav file ({exc})") from None
    dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}.get(width)
    if dtype is None:
        raise FormatError(f"{path}: {8 * width}-bit samples; expected 8, 16 or 32-bit PCM")
    audio = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    audio = (audio - 128) / 128 if width == 1 else audio / float(2 ** (8 * width - 1))
    audio = audio.reshape(-1, channels).mean(axis=1)
    if rate != sample_rate_hz:
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(audio), rate, sample_rate_hz).numpy()
    return audio


def read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable image ({exc})") from None


def read_mask(path: Path) -> np.ndarray:
    """Binary mask PNG (mode 1, L or P) -> ``[H, W]`` float32 in {0, 1}."""
    try:
        with Image.open(path) as image:
            return (np.asarray(image.convert("L")) > 127).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable mask image ({exc})") from None


def write_png(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path, compress_level=1)


def write_mask(path: Path, mask: np.ndarray, palette: bool = False) -> None:
    image = Image.fromarray((mask > 0).astype(np.uint8) * (1 if palette else 255))
    if palette:  # AVSBench MS3 stores palette ('P') masks; white keeps convert('1') exact
        image = image.convert("P")
        image.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    image.save(path)


def vggish_log_mel(audio: np.ndarray, windows: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> torch.Tensor:
    """VGGish-style log-mel (64 bands 125-7500 Hz, 25 ms / 10 ms, log(x + 0.01)), 96 frames per
    one-second window -> ``[windows, 1, 96, 64]``, as AVSBench's audio_log_mel files hold."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate_hz, n_fft=512, win_length=400,
                                               hop_length=160, f_min=125, f_max=7500, n_mels=64, power=2.0)
    wav = torch.from_numpy(np.pad(audio, (0, max(0, windows * sample_rate_hz - audio.size))).astype(np.float32))
    out = []
    for k in range(windows):
        spec = mel(wav[k * sample_rate_hz:(k + 1) * sample_rate_hz])[:, :96]
        out.append(torch.log(spec + 0.01).t())
    return torch.stack(out).unsqueeze(1)


# ---------------------------------------------------------------- label vocabularies

def vggsound_ytid(split: str, index: int) -> str:
    """An 11-character id in YouTube's alphabet for benchmark clip ``index`` of ``split``."""
    return f"emk{split[:2]}{index:06d}"


def category_dir(label: str) -> str:
    """AVSBench names categories with underscores (e.g. 'female_singing')."""
    return label.replace(" ", "_").replace(",", "")


# ---------------------------------------------------------------- samples and collation

@dataclass
class Manifest:
    """What a loader found: rows in the metadata, files missing, clips that failed to decode."""

    name: str
    rows: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return self.rows - len(self.missing)

    def report(self, used: int | None = None) -> str:
        used = self.available - len(self.corrupt) if used is None else used
        text = (f"{self.name}: {self.rows} clips listed, {len(self.missing)} missing, "
                f"{len(self.corrupt)} unreadable, {used} used")
        if self.missing:
            text += f"; missing e.g. {', '.join(self.missing[:5])}"
        if self.corrupt:
            first = next(iter(self.corrupt.items()))
            text += f"; unreadable e.g. {first[0]} ({first[1]})"
        return text

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"name": self.name, "rows": self.rows, "missing": self.missing,
                                    "corrupt": self.corrupt}, indent=1) + "\n")


def collate(batch: list[dict]) -> tuple[dict | None, list[dict]]:
    """Stack the good samples; return ``(batch or None, [{"id", "error"}, ...])``."""
    errors = [s for s in batch if "error" in s]
    good = [s for s in batch if "error" not in s]
    if not good:
        return None, errors
    out = {}
    for key in good[0]:
        values = [s[key] for s in good]
        out[key] = torch.stack(values) if torch.is_tensor(values[0]) else values
    return out, errors


class _Dataset(torch.utils.data.Dataset):
    manifest: Manifest
    items: list

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        try:
            return self.load(item)
        except (FormatError, MediaError, OSError) as exc:
            self.manifest.corrupt[item["id"]] = str(exc)
            return {"id": item["id"], "error": str(exc)}

    def load(self, item) -> dict:
        raise NotImplementedError


def _multi_hot(label_ids: list[int], num_classes: int) -> torch.Tensor:
    target = torch.zeros(num_classes)
    target[label_ids] = 1.0
    return target


def _pick_frames(frames: np.ndarray, policy: str, rng: np.random.Generator | None) -> np.ndarray:
    if policy == "all":
        return frames
    if policy == "middle":
        return frames[len(frames) // 2:len(frames) // 2 + 1]
    if policy == "random":
        k = int((rng or np.random.default_rng()).integers(len(frames)))
        return frames[k:k + 1]
    raise ValueError(f"unknown frame policy {policy!r}; expected 'all', 'middle' or 'random'")


# ---------------------------------------------------------------- VGGSound

def read_vggsound_csv(path: Path) -> list[tuple[str, int, str, str]]:
    rows = []
    try:
        with open(path, newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row:
                    continue
                if len(row) != 4 or not row[1].strip().lstrip("-").isdigit():
                    raise FormatError(f"{path}:{n}: expected 'youtube_id,start_seconds,label,split' (no header), "
                                      f"got {row}")
                rows.append((row[0].strip(), int(row[1]), row[2].strip(), row[3].strip()))
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read ({exc})") from None
    return rows


class VGGSoundDataset(_Dataset):
    """VGGSound: csv + a folder of ``<ytid>_<start:06d>.mp4`` clips (10 s in the real set).

    Rows sharing an id form one multi-label clip.  ``labels`` fixes the class
    order (default: sorted labels of the csv, all splits).
    """

    short = "vggsound"

    def __init__(self, csv_path: Path, clip_dir: Path, split: str, labels: list[str] | None = None,
                 fbank: FbankConfig = FbankConfig(), image_size: int = 224, num_frames: int = 10,
                 frame_policy: str = "middle", clip_s: float | None = 10.0, seed: int = 0):
        csv_path, clip_dir = Path(csv_path), Path(clip_dir)
        if not clip_dir.is_dir():
            raise FormatError(f"{clip_dir}: no such clip folder")
        rows = read_vggsound_csv(csv_path)
        self.labels = labels if labels is not None else sorted({r[2] for r in rows})
        index = {label: i for i, label in enumerate(self.labels)}
        clips: OrderedDict[tuple[str, int], list[int]] = OrderedDict()
        for ytid, start, label, row_split in rows:
            if row_split != split:
                continue
            if label not in index:
                raise FormatError(f"{csv_path}: label {label!r} is not in the label list")
            clips.setdefault((ytid, start), []).append(index[label])
        self.manifest = Manifest(f"VGGSound {split} ({csv_path})", rows=len(clips))
        self.items = []
        for (ytid, start), label_ids in clips.items():
            path = clip_dir / f"{ytid}_{start:06d}.mp4"
            if path.is_file():
                self.items.append({"id": f"{ytid}_{start:06d}", "path": path, "labels": sorted(set(label_ids))})
            else:
                self.manifest.missing.append(path.name)
        if not clips:
            raise FormatError(f"{csv_path}: no rows for split {split!r}")
        self.fbank, self.image_size, self.num_frames = fbank, image_size, num_frames
        self.frame_policy, self.clip_s, self.rng = frame_policy, clip_s, np.random.default_rng(seed)

    def load(self, item, frames: list[int] | None = None) -> dict:
        """``frames``: indices among the ``num_frames`` sampled ones (default: the frame policy)."""
        from emktd.media import load_clip

        clip = load_clip(item["path"], self.num_frames, SAMPLE_RATE_HZ, max_side=max(self.image_size * 2, 256),
                         duration_s=self.clip_s)
        frames = clip.frames[frames] if frames is not None else _pick_frames(clip.frames, self.frame_policy, self.rng)
        return {"id": item["id"], "audio": audio_fbank(clip.audio, SAMPLE_RATE_HZ, self.fbank),
                "frames": frames_to_tensor(frames, self.image_size), "target": _multi_hot(item["labels"], len(self.labels)),
                "has_audio": clip.has_audio}


# ---------------------------------------------------------------- CAV-MAE json

def read_cavmae_labels(path: Path) -> tuple[list[str], list[str]]:
    """CAV-MAE's class_labels_indices csv: header ``index,mid,display_name`` -> (mids, names) in index order."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"index", "mid", "display_name"} <= set(reader.fieldnames):
            raise FormatError(f"{path}: expected a header 'index,mid,display_name'")
        rows = sorted(reader, key=lambda r: int(r["index"]))
    return [r["mid"] for r in rows], [r["display_name"] for r in rows]


class CavMaeJsonDataset(_Dataset):
    """CAV-MAE data json + label csv; frames ``<video_path>/frame_<k>/<video_id>.jpg``, audio ``wav``."""

    short = "cavmae"

    def __init__(self, json_path: Path, label_csv: Path, fbank: FbankConfig = FbankConfig(),
                 image_size: int = 224, num_frames: int = 10, frame_policy: str = "middle", seed: int = 0):
        json_path = Path(json_path)
        try:
            entries = json.loads(json_path.read_text())["data"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise FormatError(f"{json_path}: expected a CAV-MAE data json {{'data': [...]}} ({exc})") from None
        mids, self.labels = read_cavmae_labels(Path(label_csv))
        index = {mid: i for i, mid in enumerate(mids)}
        self.manifest = Manifest(f"CAV-MAE json ({json_path})", rows=len(entries))
        self.items = []
        for n, entry in enumerate(entries):
            try:
                vid, wav, video_path = entry["video_id"], Path(entry["wav"]), Path(entry["video_path"])
                label_ids = [index[m] for m in entry["labels"].split(",") if m]
            except KeyError as exc:
                raise FormatError(f"{json_path}: entry {n} lacks {exc} or names an unknown label") from None
            frames = [video_path / f"frame_{k}" / f"{vid}.jpg" for k in range(num_frames)]
            if not wav.is_file() or not all(p.is_file() for p in frames):
                self.manifest.missing.append(vid)
                continue
            self.items.append({"id": vid, "wav": wav, "frames": frames, "labels": label_ids})
        self.fbank, self.image_size, self.frame_policy = fbank, image_size, frame_policy
        self.rng = np.random.default_rng(seed)

    def load(self, item, frames: list[int] | None = None) -> dict:
        """``frames``: indices among the pre-extracted frames (default: the frame policy)."""
        paths = np.array(item["frames"], dtype=object)
        paths = paths[frames] if frames is not None else _pick_frames(paths, self.frame_policy, self.rng)
        frames = np.stack([read_rgb(p) for p in paths])
        return {"id": item["id"], "audio": audio_fbank(read_wav(item["wav"]), SAMPLE_RATE_HZ, self.fbank),
                "frames": frames_to_tensor(frames, self.image_size), "target": _multi_hot(item["labels"], len(self.labels)),
                "has_audio": True}


# ---------------------------------------------------------------- AVSBench

def s4_paths(root: Path, split: str, category: str, name: str, frames: int = 5) -> dict:
    """Where AVSBench's Single-source layout keeps one clip's files."""
    data = Path(root) / "s4_data"
    return {"frames": [data / "visual_frames" / split / category / name / f"{name}_{k}.png" for k in range(1, frames + 1)],
            "masks": [data / "gt_masks" / split / category / name / f"{name}_{k}.png" for k in range(1, frames + 1)],
            "wav": data / "audio_wav" / split / category / f"{name}.wav",
            "log_mel": data / "audio_log_mel" / split / category / f"{name}.pkl"}


def ms3_paths(root: Path, split: str, vid: str, frames: int = 5) -> dict:
    """Where AVSBench's Multi-sources layout keeps one clip's files (frames are not split by split)."""
    data = Path(root) / "ms3_data"
    return {"frames": [data / "visual_frames" / vid / f"{vid}.mp4_{k}.png" for k in range(1, frames + 1)],
            "masks": [data / "gt_masks" / split / vid / f"{vid}_{k}.png" for k in range(1, frames + 1)],
            "wav": data / "audio_wav" / split / f"{vid}.wav",
            "log_mel": data / "audio_log_mel" / split / f"{vid}.pkl"}


class _AVSBench(_Dataset):
    """Shared AVSBench reading: five frames, five masks (S4 train: only the first), the raw wav.

    ``audio_windows=None`` gives the fbank of the whole clip ``[T, F]``; an int
    gives that many one-second windows ``[W, T, F]`` (fbank models read audio_wav).
    Samples: frames ``[5, 3, S, S]``, masks ``[5, 1, S, S]``, mask_valid ``[5]`` bool.
    """

    FRAMES = 5

    def load(self, item, frames: list[int] | None = None) -> dict:
        """The clip with the given annotated frames (0-based; default all five)."""
        ks = list(range(self.FRAMES)) if frames is None else frames
        pictures = np.stack([read_rgb(item["frames"][k]) for k in ks])
        masks = torch.zeros(len(ks), 1, self.image_size, self.image_size)
        valid = torch.zeros(len(ks), dtype=torch.bool)
        for i, k in enumerate(ks):
            path = item["masks"][k]
            if path.is_file():
                mask = torch.from_numpy(read_mask(path))[None, None]
                masks[i] = torch.nn.functional.interpolate(mask, size=(self.image_size, self.image_size),
                                                           mode="nearest")[0]
                valid[i] = True
        if frames is None and not valid.any():
            raise FormatError(f"{item['masks'][0]}: no ground-truth mask for this clip")
        wav = read_wav(item["wav"])
        audio = (audio_fbank(wav, SAMPLE_RATE_HZ, self.fbank) if self.audio_windows is None
                 else audio_fbank_windows(wav, self.audio_windows, 1.0, SAMPLE_RATE_HZ, self.fbank))
        return {"id": item["id"], "audio": audio, "frames": frames_to_tensor(pictures, self.image_size),
                "masks": masks, "mask_valid": valid, "target": _multi_hot(item["labels"], len(self.labels))}

    def _read_meta(self, root: Path, meta: str, data: str, columns: tuple[str, ...]) -> list[dict]:
        if not (root / meta).is_file() or not (root / data).is_dir():
            raise FormatError(f"{root}: expected {meta} and {data}/ (AVSBench layout)")
        with open(root / meta, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise FormatError(f"{root / meta}: expected columns {', '.join(columns)}")
            return list(reader)

    def _collect(self, name: str, split: str, rows: list[dict], make_item, needs_first_mask: bool) -> None:
        """Items of ``split`` whose files are all there; the others are listed as missing."""
        self.manifest = Manifest(name)
        self.items = []
        for row in rows:
            if row["split"] != split:
                continue
            self.manifest.rows += 1
            item = make_item(row)
            complete = all(p.is_file() for p in item["frames"]) and item["wav"].is_file() and (
                not needs_first_mask or item["masks"][0].is_file())
            if complete:
                self.items.append(item)
            else:
                self.manifest.missing.append(item["id"])


class AVSBenchS4Dataset(_AVSBench):
    """``Single-source/``: s4_meta_data.csv (name,...,category,split) and s4_data/{visual_frames,gt_masks,
    audio_wav}/<split>/<category>/<name>..."""

    short = "S4"

    def __init__(self, root: Path, split: str, labels: list[str] | None = None, fbank: FbankConfig = FbankConfig(),
                 image_size: int = 224, audio_windows: int | None = None):
        root = Path(root)
        rows = self._read_meta(root, "s4_meta_data.csv", "s4_data", ("name", "category", "split"))
        self.labels = labels if labels is not None else sorted({r["category"] for r in rows})
        self._collect(f"AVSBench S4 {split} ({root})", split, rows, lambda row: {
            "id": row["name"], "labels": [self.labels.index(row["category"])],
            **s4_paths(root, split, row["category"], row["name"])}, needs_first_mask=True)
        self.fbank, self.image_size, self.audio_windows = fbank, image_size, audio_windows


class AVSBenchMS3Dataset(_AVSBench):
    """``Multi-sources/``: ms3_meta_data.csv (video_id,split), ms3_data/visual_frames/<id>/<id>.mp4_<k>.png
    (not split by split), gt_masks/<split>/<id>/<id>_<k>.png (palette), audio_wav/<split>/<id>.wav.

    MS3 has no category column; this project's benchmark adds an optional ``labels``
    column (';'-separated class names) that real MS3 files lack.
    """

    short = "MS3"

    def __init__(self, root: Path, split: str, labels: list[str] | None = None, fbank: FbankConfig = FbankConfig(),
                 image_size: int = 224, audio_windows: int | None = None):
        root = Path(root)
        rows = self._read_meta(root, "ms3_meta_data.csv", "ms3_data", ("video_id", "split"))
        names = sorted({n for r in rows for n in (r.get("labels") or "").split(";") if n})
        self.labels = labels if labels is not None else names
        self._collect(f"AVSBench MS3 {split} ({root})", split, rows, lambda row: {
            "id": row["video_id"], "labels": [self.labels.index(n) for n in (row.get("labels") or "").split(";") if n],
            **ms3_paths(root, split, row["video_id"])}, needs_first_mask=False)
        self.fbank, self.image_size, self.audio_windows = fbank, image_size, audio_windows


# ---------------------------------------------------------------- writers used by the benchmark builder

def write_vggsound_clip(clip_dir: Path, ytid: str, clip, fps: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> Path:
    from emktd.media import write_video

    return write_video(clip_dir / f"{ytid}_000000.mp4", clip.frames, fps, clip.audio, sample_rate_hz,
                       options={"preset": "veryfast", "crf": "23", "threads": "1"})


def write_vggsound_csv(path: Path, rows: list[tuple[str, int, str, str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _write_avsbench_clip(paths: dict, clip, annotated: list[int], with_mask, palette: bool,
                         sample_rate_hz: int) -> None:
    for path in (paths["frames"][0], paths["masks"][0], paths["wav"], paths["log_mel"]):
        path.parent.mkdir(parents=True, exist_ok=True)
    for k, index in enumerate(annotated):
        write_png(paths["frames"][k], clip.frames[index])
        if with_mask(k):
            write_mask(paths["masks"][k], clip.masks[k], palette=palette)
    write_wav(paths["wav"], clip.audio, sample_rate_hz)
    torch.save(vggish_log_mel(clip.audio, len(annotated), sample_rate_hz), paths["log_mel"])


def write_s4_clip(root: Path, split: str, category: str, name: str, clip, annotated: list[int],
                  sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
    # AVSBench S4 annotates only the first frame of its training clips.
    _write_avsbench_clip(s4_paths(root, split, category, name, len(annotated)), clip, annotated,
                         lambda k: split != "train" or k == 0, False, sample_rate_hz)


def write_ms3_clip(root: Path, split: str, vid: str, clip, annotated: list[int],
                   sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
    _write_avsbench_clip(ms3_paths(root, split, vid, len(annotated)), clip, annotated, lambda k: True, True,
                         sample_rate_hz)
