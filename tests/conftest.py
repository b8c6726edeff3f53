import os
from pathlib import Path

# The same settings the Makefile exports, for a bare `pytest` too; set before
# huggingface_hub or gradio are imported, since both read them at import.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

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


# ---------------------------------------------------------------- a small Debian-like source tree

CLASSES = {"dog": ("animals/dogs/dog",), "cow": ("animals/cows/cow", "animals/cows/cow_white"),
           "violin": ("hobbies/violin",), "kettle": ("household/kettle",)}
DROPPED = {"town/signs/xing": "speech"}
FREQS = {"animals/dogs/dog": 300, "animals/cows/cow": 500, "animals/cows/cow_white": 520, "hobbies/violin": 900,
         "household/kettle": 1500, "town/signs/xing": 200}


def write_sound(path: Path, freq: float, seconds: float = 0.8, silent: bool = False) -> None:
    """Opus in Ogg for stamps (Tux Paint ships Ogg), FLAC for samples (as sonic-pi does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec, rate = ("libopus", 48000) if path.suffix == ".ogg" else ("flac", 22050)
    audio = np.zeros(int(seconds * rate), np.float32) if silent else tone(freq, seconds, rate)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        for start in range(0, audio.size, 960):
            frame = av.AudioFrame.from_ndarray((audio[None, start:start + 960] * 32767).astype(np.int16),
                                               format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_stamp(path: Path, colour, size=(60, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    alpha = ((((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2) <= 1).astype(np.uint8) * 255
    rgba = np.dstack([np.full((h, w, 3), colour, np.uint8), alpha])
    Image.fromarray(rgba, "RGBA").save(path)


def fake_debian_root(root: Path, monkeypatch) -> Path:
    """A small tree laid out like the three unpacked Debian packages, with the source lists
    of ``training/embedded/sources.py`` patched to match it."""
    from training.embedded import sources

    monkeypatch.setattr(sources, "CLASSES", CLASSES)
    monkeypatch.setattr(sources, "DROPPED", DROPPED)
    monkeypatch.setattr(sources, "DISTRACTOR_FOLDERS", ("food", "plants"))
    stamps = root / sources.STAMPS_DIR
    for i, (stamp, freq) in enumerate(FREQS.items()):
        write_stamp(stamps / f"{stamp}.png", (40 * i, 200 - 30 * i, 120))
        write_sound(stamps / f"{stamp}.ogg", freq)
    write_sound(stamps / "animals/dogs/dog_desc_fr.ogg", 150)  # spoken descriptions are never sounds
    write_sound(stamps / "symbols/letters/a.ogg", 150)  # letters are speech
    for i, name in enumerate(("food/apple", "food/pear", "plants/tree", "plants/rose")):
        write_stamp(stamps / f"{name}.png", (250, 30 * i, 30), size=(30, 30))
    templates = root / sources.TEMPLATES_DIR
    templates.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((300, 400, 3), 50 * i, np.uint8)).save(templates / f"bg{i}.jpg")
    samples = root / sources.SAMPLES_DIR
    names = {"ambi_drone.flac": "CC0", "ambi_swoosh.flac": "CC0", "vinyl_hiss.flac": "CC0", "guit_em9.flac": "CC0",
             "ambi_choir.flac": "CC0", "bd_boom.flac": "CC0", "vinyl_scratch.flac": "CC-BY-SA-4.0"}
    copyright_text = "Files: *\nCopyright: someone\nLicense: MIT\n\n"
    for i, (name, licence) in enumerate(names.items()):
        write_sound(samples / name, 100 + 37 * i, seconds=2.0)
        copyright_text += f"Files: etc/samples/{name}\nCopyright: x\nLicense: {licence}\n\n"
    (root / sources.SAMPLES_COPYRIGHT).parent.mkdir(parents=True)
    (root / sources.SAMPLES_COPYRIGHT).write_text(copyright_text)
    return root


@pytest.fixture(scope="session")
def small_bench(tmp_path_factory):
    """A --small embedded benchmark built from the fake source tree (4 classes), once per session."""
    from training.embedded import build as benchmark
    from training.embedded import sources

    base = tmp_path_factory.mktemp("small_bench")
    with pytest.MonkeyPatch.context() as mp:
        pack = sources.save_pack(sources.collect(fake_debian_root(base / "root", mp), progress=False),
                                 base / "pack.npz")
    benchmark.build(base / "bench", benchmark.SIZES["small"], 0, pack, benchmark.FORMATS, 1, progress=False)
    return base / "bench"
