"""CAV-MAE's data files: ``{"data": [{"video_id", "wav", "video_path", "labels"}]}`` json, a label
csv (index,mid,display_name), frames pre-extracted as ``<video_path>/frame_<k>/<video_id>.jpg``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from emktd.features import SAMPLE_RATE_HZ, FbankConfig, audio_fbank, frames_to_tensor

from .common import FormatError, Manifest, Reader, multi_hot, pick_frames, read_rgb, read_wav


def read_cavmae_labels(path: Path) -> tuple[list[str], list[str]]:
    """CAV-MAE's class_labels_indices csv: header ``index,mid,display_name`` -> (mids, names) in index order."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"index", "mid", "display_name"} <= set(reader.fieldnames):
            raise FormatError(f"{path}: expected a header 'index,mid,display_name'")
        rows = sorted(reader, key=lambda r: int(r["index"]))
    return [r["mid"] for r in rows], [r["display_name"] for r in rows]


class CavMaeJsonDataset(Reader):
    """CAV-MAE data json + label csv; frames ``<video_path>/frame_<k>/<video_id>.jpg``, audio ``wav``."""


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
        paths = paths[frames] if frames is not None else pick_frames(paths, self.frame_policy, self.rng)
        frames = np.stack([read_rgb(p) for p in paths])
        return {"id": item["id"], "audio": audio_fbank(read_wav(item["wav"]), SAMPLE_RATE_HZ, self.fbank),
                "frames": frames_to_tensor(frames, self.image_size), "target": multi_hot(item["labels"], len(self.labels)),
                "has_audio": True}
