import os
import sys
from pathlib import Path

# The same settings the Makefile exports, for a bare `pytest` too; set before
# huggingface_hub or gradio are imported, since both read them at import.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# training/ is a folder of scripts, not a package; its modules import each other by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from emktd.media import write_video  # noqa: E402


def indexed_frames(count: int, height: int = 64, width: int = 96) -> np.ndarray:
    """Uniform frames whose colour spells the frame index (up to 900): red i % 25 in steps
    of 10, green (i // 25) % 6 and blue i // 150 in steps of 40, coarse enough for lossy codecs."""
    assert count <= 900
    frames = np.zeros((count, height, width, 3), np.uint8)
    index = np.arange(count)
    frames[..., 0] = (index % 25 * 10)[:, None, None]
    frames[..., 1] = (index // 25 % 6 * 40)[:, None, None]
    frames[..., 2] = (index // 150 * 40)[:, None, None]
    return frames


def frame_index(frame: np.ndarray) -> int:
    """Invert indexed_frames on a decoded (lossy) frame."""
    red, green, blue = (frame[..., c].mean() for c in range(3))
    return int(round(blue / 40)) * 150 + int(round(green / 40)) * 25 + int(round(red / 10))


def tone(freq_hz: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq_hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.fixture
def make_clip(tmp_path):
    """Write a clip: indexed frames at `fps` and a tone, with the given container and codecs."""

    def make(name="clip.mp4", seconds=2.0, fps=25, size=(64, 96), video_codec="libx264", audio_codec="aac",
             audio_rate=16000, freq_hz=440.0, channels=1, audio=True, options=None):
        frames = indexed_frames(int(seconds * fps), *size)
        wave = None
        if audio:
            wave = np.stack([tone(freq_hz, seconds, audio_rate)] * channels)
        return write_video(tmp_path / name, frames, fps, wave, audio_rate, video_codec, audio_codec, options=options)

    return make
