import os
import re
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


def plain(markdown: str) -> str:
    """Markdown text with its backslash escapes undone: the characters a reader sees."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def tone(freq_hz: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq_hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def portrait_phone_clip(path, seconds=2.0, fps=10):
    """A clip as phones record portrait: landscape pictures (96x48) and a display matrix that turns
    them 90 degrees clockwise (FFmpeg reads it as rotation -90 and shows the picture turned with
    transpose=clock), so the coded picture's left edge is the top of the scene; a bright band there."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 48, "yuv420p"
        stream.set_display_rotation(-90)  # clockwise, as av_display_rotation_get reads a phone's matrix
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for i in range(int(seconds * fps)):
            image = np.full((48, 96, 3), 20, np.uint8)
            image[:, :24] = 230  # the coded picture's left quarter: the top once turned upright
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        wave = tone(440, seconds, 16000)
        frame = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            container.mux(packet)
    return path


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


def textured_sound(seed: int, seconds: float, rate: int) -> np.ndarray:
    """A recording-like signal: noise whose spectrum and loudness wander (unlike a steady tone, its
    fingerprint is its own); one per seed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum *= np.interp(freqs, np.linspace(0, rate / 2, 24), rng.uniform(0.1, 1.0, 24))
    audio = np.fft.irfft(spectrum, n) * np.interp(np.arange(n), np.linspace(0, n, 12), rng.uniform(0.2, 1.0, 12))
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def textured_picture(seed: int, size=(90, 120)) -> np.ndarray:
    """An RGBA drawing with structure inside its outline (a flat shape's hash is nearly all zeros);
    one per seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    rgb = np.asarray(Image.fromarray(small).resize(size[::-1], Image.Resampling.BICUBIC))
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    alpha = ((((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2) <= 1).astype(np.uint8) * 255
    return np.dstack([rgb, alpha])


def write_sound(path: Path, freq: float, seconds: float = 0.8, silent: bool = False,
                audio: np.ndarray | None = None) -> None:
    """Opus in Ogg for stamps (Tux Paint ships Ogg), FLAC for samples (as sonic-pi does); a tone of
    ``freq``, silence, or ``audio`` (at the format's rate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec, rate = ("libopus", 48000) if path.suffix == ".ogg" else ("flac", 22050)
    if audio is None:
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
             "ambi_glass_hum.flac": "CC0", "elec_ping.flac": "CC0",
             "ambi_choir.flac": "CC0", "bd_boom.flac": "CC0", "vinyl_scratch.flac": "CC-BY-SA-4.0"}
    copyright_text = "Files: *\nCopyright: someone\nLicense: MIT\n\n"
    for i, (name, licence) in enumerate(names.items()):
        write_sound(samples / name, 100 + 37 * i, seconds=2.0)
        copyright_text += f"Files: etc/samples/{name}\nCopyright: x\nLicense: {licence}\n\n"
    (root / sources.SAMPLES_COPYRIGHT).parent.mkdir(parents=True)
    (root / sources.SAMPLES_COPYRIGHT).write_text(copyright_text)
    fake_catalog(root, monkeypatch)
    fake_pool_candidates(root)
    return root


def fake_pool_candidates(root: Path) -> None:
    """Files the transfer pool may take (three drawings, a sample) and two it must leave out: a
    resized copy of an instance's drawing and the next file of an instance's numbered series."""
    from training.embedded import catalog

    (root / catalog.OPENCLIPART / "objects").mkdir(parents=True)
    for seed in (5, 6, 7):
        Image.fromarray(textured_picture(seed), "RGBA").save(root / catalog.OPENCLIPART / f"objects/thing{seed}.png")
    with Image.open(root / catalog.OPENCLIPART / "animals/dog3.png") as image:
        image.resize((56, 40)).save(root / catalog.OPENCLIPART / "objects/dog_copy.png")
    write_sound(root / catalog.LMMS_SAMPLES / "misc/bell01.ogg", 0, audio=textured_sound(3, 1.5, 48000))
    write_sound(root / catalog.LMMS_SAMPLES / "drums/snare02.ogg", 1950)


# ---------------------------------------------------------------- the further instances' packages, small

SVG_DISC = ('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">'
            '<ellipse cx="32" cy="24" rx="30" ry="20" fill="#{:02x}{:02x}{:02x}"/></svg>')


def write_rcc(path: Path, files: dict[str, bytes], compressed: tuple[str, ...] = ()) -> None:
    """A Qt resource bundle (format version 3) holding ``files`` ({"folder/name": bytes})."""
    import struct
    import zlib

    tree: dict = {}
    for name, data in files.items():
        node = tree
        *folders, leaf = name.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[leaf] = data
    names, data_blob, nodes = b"", b"", []
    name_offsets: dict[str, int] = {}

    def name_offset(name: str) -> int:
        nonlocal names
        if name not in name_offsets:
            name_offsets[name] = len(names)
            names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
        return name_offsets[name]

    queue = [("", tree, "")]  # breadth first: a folder's children take consecutive node indices
    nodes.append(None)
    position = 0
    while position < len(queue):
        name, content, full = queue[position]
        if isinstance(content, dict):
            children = sorted(content.items())
            nodes[position] = struct.pack(">IHII", name_offset(name) if position else 0, 2, len(children),
                                          len(queue)) + b"\0" * 8
            for child, sub in children:
                queue.append((child, sub, f"{full}/{child}" if full else child))
                nodes.append(None)
        else:
            raw = content
            flags = 0
            if full in compressed:
                raw, flags = struct.pack(">I", len(content)) + zlib.compress(content), 1
            nodes[position] = struct.pack(">IHHHI", name_offset(name), flags, 0, 0, len(data_blob)) + b"\0" * 8
            data_blob += struct.pack(">I", len(raw)) + raw
        position += 1
    tree_blob = b"".join(nodes)
    header_size = 24
    tree_offset = header_size
    data_offset = tree_offset + len(tree_blob)
    names_offset = data_offset + len(data_blob)
    header = b"qres" + struct.pack(">IIIII", 3, tree_offset, data_offset, names_offset, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + tree_blob + data_blob + names)


def write_sf2(path: Path, notes: dict[str, tuple[float, int]], rate: int = 22050) -> None:
    """A SoundFont with one short looped sample per entry: {name: (frequency, MIDI key)}."""
    import struct

    pcm, headers = b"", b""
    for name, (freq, key) in notes.items():
        start = len(pcm) // 2
        wave = (tone(freq, 0.3, rate) * 32767).astype("<i2")
        pcm += wave.tobytes() + b"\0" * 92  # 46 points of silence after each sample, as the format asks
        end = start + wave.size
        headers += struct.pack("<20sIIIIIBbHH", name.encode(), start, end, start + 100, end - 100, rate, key, 0, 0, 1)
    headers += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)

    write_soundfont(path, pcm, headers)


def write_soundfont(path: Path, sample_data: bytes, headers: bytes) -> None:
    """The RIFF file of a SoundFont: its sample data (smpl) and its sample headers (shdr)."""
    import struct

    def chunk(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")

    body = (b"sfbk" + chunk(b"LIST", b"sdta" + chunk(b"smpl", sample_data))
            + chunk(b"LIST", b"pdta" + chunk(b"shdr", headers)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def write_sf3(path: Path, notes: dict[str, tuple[float, int]], scratch: Path) -> None:
    """A SoundFont 3 with one compressed sample per entry: {name: (frequency, MIDI key)}."""
    import struct

    data, headers = b"", b""
    for name, (freq, key) in notes.items():
        write_sound(scratch / f"{name}.ogg", freq, seconds=0.4)
        ogg = (scratch / f"{name}.ogg").read_bytes()
        start, end = len(data), len(data) + len(ogg)
        data += ogg
        # compressed: start/end are byte offsets, loop points count decoded samples from the start
        headers += struct.pack("<20sIIIIIBbHH", name.encode(), start, end, 2000, 12000, 48000, key, 0, 0, 0x11)
    headers += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)

    write_soundfont(path, data, headers)


def write_sound_catalogue(path: Path, sounds: dict[str, float], rate: int = 11025) -> None:
    """An OpenTTD sound catalogue (.cat) of tones: {description: frequency}."""
    import io
    import struct
    import wave

    entries = []
    for description, freq in sounds.items():
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes((tone(freq, 0.5, rate) * 32767).astype("<i2").tobytes())
        name = description.encode("latin-1") + b"\0"
        entries.append(bytes([len(name)]) + name + buffer.getvalue())
    table, offset = b"", 8 * len(entries)
    for entry in entries:
        table += struct.pack("<II", offset, len(entry))
        offset += len(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(table + b"".join(entries))


def fake_catalog(root: Path, monkeypatch) -> None:
    """Files for every kind of catalogue address but the emoji font, and a catalogue over them:
    dog gets three further instances (so one each for train, val and test), violin one, and
    'drum', a class Tux Paint lacks, two."""
    from training.embedded import catalog, sources
    from training.embedded.catalog import Instance

    def ogg_bytes(freq):
        path = root / "tmp" / f"{freq}.ogg"
        write_sound(path, freq)
        return path.read_bytes()

    write_rcc(root / catalog.GCOMPRIS_RCC / "farm.rcc",
              {"res/farm/bark.ogg": ogg_bytes(330), "res/farm/dog.svg": SVG_DISC.format(200, 120, 40).encode()},
              compressed=("res/farm/dog.svg",))
    write_sound_catalogue(root / catalog.OPENSFX_CAT, {'"Drum". Original by someone. License: CC0.': 1700,
                                                      '"Drumroll". Original by someone. License: CC0.': 1750})
    write_sound(root / catalog.LMMS_SAMPLES / "drums/snare.ogg", 1900)
    write_sf2(root / "usr/share/sounds/sf2/Fake.sf2", {"Bark": (420, 60)})
    write_sf3(root / "usr/share/sounds/sf3/Fake.sf3", {"Violin C5": (1000, 72), "Violin G5": (1500, 79)}, root / "tmp")
    write_stamp(root / catalog.OPENCLIPART / "music/violin.png", (10, 10, 200))
    write_stamp(root / catalog.OPENCLIPART / "music/drum.png", (10, 200, 10))
    write_stamp(root / catalog.OPENCLIPART / "animals/dog2.png", (90, 60, 10))
    write_stamp(root / sources.STAMPS_DIR / "hobbies/drum.png", (200, 10, 200))
    rgba = np.zeros((50, 70, 4), np.uint8)  # a drawing with a soft edge and a hole in its alpha
    rgba[5:45, 5:65] = (180, 90, 30, 255)
    rgba[20:30, 30:40, 3] = 0
    rgba[5:45, 5, 3] = 100
    Image.fromarray(rgba, "RGBA").save(root / catalog.OPENCLIPART / "animals/dog3.png")
    monkeypatch.setattr(catalog, "SOUNDFONTS", {"FakeGM": "usr/share/sounds/sf2/Fake.sf2",
                                                "FakeSF3": "usr/share/sounds/sf3/Fake.sf3"})
    monkeypatch.setattr(catalog, "INSTANCES", {
        "dog": (Instance("gcompris:farm/bark.ogg", "gcompris:farm/dog.svg"),
                Instance("sonicpi:ambi_swoosh.flac", "openclipart:animals/dog3.png"),  # CC0, so never noise
                Instance("sf2:FakeGM:^Bark", "openclipart:animals/dog2.png")),
        "violin": (Instance("sf2:FakeSF3:^Violin", "openclipart:music/violin.png"),),
        "drum": (Instance("lmms:drums/snare.ogg", "openclipart:music/drum.png"),
                 Instance("opensfx:Drum", "tuxpaint:hobbies/drum")),
    })


@pytest.fixture(scope="session")
def small_bench(tmp_path_factory):
    """A --small embedded benchmark built from the fake source tree (4 classes), once per session."""
    from training.embedded import build as benchmark
    from training.embedded import sources

    from training.embedded import pool

    base = tmp_path_factory.mktemp("small_bench")
    with pytest.MonkeyPatch.context() as mp:
        root = fake_debian_root(base / "root", mp)
        pack = sources.save_pack(sources.collect(root, progress=False), base / "pack.npz")
        pool.save_pool(pool.collect_pool(root, sources.load_pack(pack), progress=False),
                       pool.default_pool_path(base))  # beside the pack, where the pool reader looks
    benchmark.build(base / "bench", benchmark.SIZES["small"], 0, pack, benchmark.FORMATS, 1, progress=False)
    return base / "bench"


@pytest.fixture(scope="session")
def teacher_dir(small_bench, tmp_path_factory):
    """A random-initialised bench-teacher for the small benchmark's classes (distillation needs any teacher)."""
    import torch

    from emktd.hub import save_pretrained
    from emktd.models import create_model

    labels = tuple(c.replace(" ", "_") for c in (small_bench / "classes.txt").read_text().split("\n") if c)
    torch.manual_seed(0)
    teacher = create_model("bench-teacher", num_classes=len(labels), labels=labels)
    return save_pretrained(teacher, tmp_path_factory.mktemp("teacher") / "teacher")
