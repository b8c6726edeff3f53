"""Read the recorded samples of a SoundFont file (``.sf2``, or ``.sf3``) and play them as a phrase.

A SoundFont holds real recordings of instruments, one sample per note range.
Only two chunks matter here: ``sdta/smpl`` (16-bit mono PCM of every sample
one after another) and ``pdta/shdr`` (46-byte headers: a 20-byte name, start,
end, loop start, loop end, sample rate, original pitch, pitch correction,
link, type).  The embedded benchmark picks an instrument's samples by name
and plays a few of them at their recorded pitch, extending sustained notes
through their loop, so the result is the instrument's own recorded sound.

A SoundFont 3 file (MuseScore's) is laid out the same, but a sample flagged
``COMPRESSED`` is an Ogg Vorbis stream: its start and end are byte offsets into
``smpl`` and its loop points count decoded samples from its own start.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = struct.Struct("<20sIIIIIBbHH")  # 46 bytes
ROM_SAMPLE = 0x8000
COMPRESSED = 0x10  # SoundFont 3: the sample is Ogg Vorbis


class SoundFontError(ValueError):
    """Not a SoundFont 2 file this reader understands."""


@dataclass(frozen=True)
class Sample:
    name: str
    audio: np.ndarray  # float32 in [-1, 1]
    rate: int
    loop: tuple[int, int]  # loop start and end, relative to the sample's first point
    pitch: int  # MIDI key of the recording


def _chunks(blob: bytes, start: int, end: int):
    position = start
    while position + 8 <= end:
        kind, size = blob[position:position + 4], struct.unpack("<I", blob[position + 4:position + 8])[0]
        yield kind, position + 8, size
        position += 8 + size + (size & 1)


def read_samples(path: Path, wanted: Callable[[str], bool] | None = None) -> list[Sample]:
    """Every sample of the SoundFont at ``path`` whose name ``wanted`` accepts (default: all); ROM
    samples and the terminal record are left out, and only the wanted compressed samples are decoded."""
    path = Path(path)
    blob = path.read_bytes()
    if blob[:4] != b"RIFF" or blob[8:12] != b"sfbk":
        raise SoundFontError(f"{path}: not a SoundFont file (expected a RIFF 'sfbk' header)")
    smpl = shdr = None
    for kind, offset, size in _chunks(blob, 12, len(blob)):
        if kind != b"LIST":
            continue
        for sub, sub_offset, sub_size in _chunks(blob, offset + 4, offset + size):
            if blob[offset:offset + 4] == b"sdta" and sub == b"smpl":
                smpl = memoryview(blob)[sub_offset:sub_offset + sub_size]
            elif blob[offset:offset + 4] == b"pdta" and sub == b"shdr":
                shdr = blob[sub_offset:sub_offset + sub_size]
    if smpl is None or shdr is None:
        raise SoundFontError(f"{path}: no sample data (sdta/smpl) or no sample headers (pdta/shdr)")
    pcm = np.frombuffer(smpl, dtype="<i2", count=len(smpl) // 2)
    samples = []
    for k in range(len(shdr) // HEADER.size - 1):  # the last header is the terminal 'EOS'
        raw, start, end, loop_start, loop_end, rate, pitch, _, _, kind = HEADER.unpack_from(shdr, k * HEADER.size)
        name = raw.split(b"\0", 1)[0].decode("latin-1").strip()
        if kind & ROM_SAMPLE or end <= start or rate == 0 or (wanted is not None and not wanted(name)):
            continue
        if kind & COMPRESSED:
            if end > len(smpl):
                continue
            audio, loop = _vorbis(bytes(smpl[start:end]), int(rate), f"{path}: sample {name!r}"), (loop_start, loop_end)
        else:
            if end > pcm.size:
                continue
            audio, loop = pcm[start:end].astype(np.float32) / 32768.0, (loop_start - start, loop_end - start)
        samples.append(Sample(name, audio, int(rate), loop, int(pitch)))
    return samples


def _vorbis(data: bytes, rate: int, where: str) -> np.ndarray:
    """One compressed SoundFont 3 sample, decoded at its own rate."""
    from emktd.media import MediaError

    from .sources import decode_sound_bytes

    try:
        return decode_sound_bytes(data, ".ogg", rate=rate)
    except MediaError as exc:
        raise SoundFontError(f"{where}: not an Ogg Vorbis stream ({exc})") from None


def phrase(samples: list[Sample], rate: int, note_s: float = 0.6, gap_s: float = 0.08) -> np.ndarray:
    """The samples played one after another at their recorded pitch, each held ``note_s`` seconds
    (a sustained note repeats its loop; a shorter one-shot ends early), resampled to ``rate``."""
    out = []
    for sample in sorted(samples, key=lambda s: s.pitch):
        audio = sample.audio
        wanted = int(note_s * sample.rate)
        a, b = sample.loop
        if audio.size < wanted and 0 <= a < b <= audio.size and b - a > 32:
            repeats = int(np.ceil((wanted - audio.size) / (b - a)))
            audio = np.concatenate([audio[:b]] + [audio[a:b]] * repeats + [audio[b:]])
        audio = audio[:wanted].copy()
        fade = min(audio.size, int(0.03 * sample.rate))
        if fade:
            audio[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
        n = max(2, int(round(audio.size * rate / sample.rate)))
        out.append(np.interp(np.linspace(0, audio.size - 1, n), np.arange(audio.size), audio).astype(np.float32))
        out.append(np.zeros(int(gap_s * rate), np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)
