"""VGGSound: ``vggsound.csv`` (no header: youtube_id,start_seconds,label,split; labels with
commas quoted) and a folder of ``<ytid>_<start:06d>.mp4`` clips, 10 s each."""

from __future__ import annotations

import csv
from collections import OrderedDict
from pathlib import Path

import numpy as np

from emktd.features import SAMPLE_RATE_HZ, FbankConfig, audio_fbank, frames_to_tensor

from .common import FormatError, Manifest, Reader, multi_hot, pick_frames


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


class VGGSoundDataset(Reader):
    """VGGSound: csv + a folder of ``<ytid>_<start:06d>.mp4`` clips (10 s in the real set).

    Rows sharing an id form one multi-label clip.  ``labels`` fixes the class
    order (default: sorted labels of the csv, all splits).
    """


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
        frames = clip.frames[frames] if frames is not None else pick_frames(clip.frames, self.frame_policy, self.rng)
        return {"id": item["id"], "audio": audio_fbank(clip.audio, SAMPLE_RATE_HZ, self.fbank),
                "frames": frames_to_tensor(frames, self.image_size), "target": multi_hot(item["labels"], len(self.labels)),
                "has_audio": clip.has_audio}
