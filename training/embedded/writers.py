"""Writers of the real layouts (VGGSound, AVSBench S4 and MS3) for the embedded benchmark's clips;
where each file goes is the readers' business (:mod:`training.readers.avsbench`)."""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emktd.features import SAMPLE_RATE_HZ
from training.readers.avsbench import ms3_paths, s4_paths


def write_wav(path: Path, audio: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
    """Mono float audio in [-1, 1] -> 16-bit PCM wav."""
    pcm = np.clip(np.round(np.asarray(audio, np.float32) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate_hz)
        out.writeframes(pcm.tobytes())



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
