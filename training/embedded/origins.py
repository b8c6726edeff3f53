"""Read the recording or the picture that a catalogue address names (see :mod:`.catalog`).

Sounds come back as mono float32 at 16 kHz, pictures as RGBA uint8 cropped to
their opaque part.  Bundles and SoundFonts are read once per :class:`Origins`.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from emktd.features import SAMPLE_RATE_HZ

from . import catalog
from .sources import decode_sound_bytes, rgba_picture
from .rcc import read_rcc
from .soundfont import phrase, read_samples

PHRASE_NOTES = 6  # a SoundFont instance plays this many of its samples, spread over its pitch range
MIDDLE_KEYS = (45, 84)  # MIDI keys A2 to C6


class OriginError(ValueError):
    """An address that names nothing usable."""


def read_sound_catalogue(path: Path) -> dict[str, bytes]:
    """The sounds of an OpenTTD sound catalogue (``.cat``): ``{description: WAV bytes}``.

    The format: a table of (offset, size) pairs of little-endian 32-bit numbers (the first
    offset, less its top bit, is the table's length), and at each offset a one-byte length, the
    entry's description (NUL-terminated) and then the sound, a RIFF WAVE file."""
    path = Path(path)
    if not path.is_file():
        raise OriginError(f"{path} is missing (expected openttd-opensfx)")
    blob = path.read_bytes()
    if len(blob) < 8:
        raise OriginError(f"{path}: too short for an OpenTTD sound catalogue")
    count = (int.from_bytes(blob[:4], "little") & 0x7FFFFFFF) // 8
    entries = {}
    for k in range(count):
        offset = int.from_bytes(blob[8 * k:8 * k + 4], "little") & 0x7FFFFFFF
        size = int.from_bytes(blob[8 * k + 4:8 * k + 8], "little")
        if offset + size > len(blob) or size < 1:
            raise OriginError(f"{path}: entry {k} runs past the end of the file; not an OpenTTD sound catalogue")
        length = blob[offset]
        name = blob[offset + 1:offset + 1 + length].split(b"\0", 1)[0].decode("latin-1")
        data = blob[offset + 1 + length:offset + size]
        if data[:4] == b"RIFF":
            entries[name] = data
    return entries


class Origins:
    """Reads addresses under the unpacked packages' ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._bundles: dict[str, dict[str, bytes]] = {}
        self._fonts: dict[tuple[str, str], list] = {}
        self._catalogues: dict[str, dict[str, bytes]] = {}

    # -------------------------------------------------------------- sources of bytes

    def _bundle_file(self, address: str) -> bytes:
        bundle, _, name = address.split(":", 1)[1].partition("/")
        if bundle not in self._bundles:
            path = self.root / catalog.GCOMPRIS_RCC / f"{bundle}.rcc"
            if not path.is_file():
                raise OriginError(f"{address}: {path} is missing (expected gcompris-qt-data)")
            self._bundles[bundle] = read_rcc(path)
        found = [data for path, data in self._bundles[bundle].items() if path.rsplit("/", 1)[-1] == name]
        if len(found) != 1:
            raise OriginError(f"{address}: {len(found)} files named {name!r} in the bundle {bundle}.rcc; expected one")
        return found[0]

    def _file(self, address: str, folder: str | None = None) -> Path:
        kind, rest = address.split(":", 1)
        if folder is None:
            if kind not in catalog.FOLDERS:
                raise OriginError(f"{address}: unknown kind of address {kind!r}")
            folder = catalog.FOLDERS[kind][1]
        path = self.root / folder / rest
        if not path.is_file():
            raise OriginError(f"{address}: {path} is missing")
        return path

    def _catalogue_entry(self, address: str) -> bytes:
        """A sound of OpenTTD's sound catalogue (``.cat``), named by its title, the description's
        quoted start (``opensfx:Sheep`` is the entry '"Sheep". Original ...')."""
        title = address.split(":", 1)[1]
        if "opensfx" not in self._catalogues:
            self._catalogues["opensfx"] = read_sound_catalogue(self.root / catalog.OPENSFX_CAT)
        found = [data for name, data in self._catalogues["opensfx"].items() if name.startswith(f'"{title}".')]
        if len(found) != 1:
            raise OriginError(f"{address}: {len(found)} entries titled {title!r} in {catalog.OPENSFX_CAT}; expected one")
        return found[0]

    # -------------------------------------------------------------- sounds

    def sound(self, address: str, max_s: float | None = None) -> np.ndarray:
        from emktd.media import load_audio

        kind = address.split(":", 1)[0]
        if kind == "sf2":
            audio = self._soundfont(address)
            return audio[: int(max_s * SAMPLE_RATE_HZ)] if max_s else audio
        if kind == "gcompris":
            return decode_sound_bytes(self._bundle_file(address), Path(address).suffix, max_s)
        if kind == "opensfx":
            return decode_sound_bytes(self._catalogue_entry(address), ".wav", max_s)
        if kind in catalog.FOLDERS:
            return load_audio(self._file(address), SAMPLE_RATE_HZ, max_s)
        raise OriginError(f"{address}: unknown kind of sound address {kind!r}")

    def _soundfont(self, address: str) -> np.ndarray:
        _, font, pattern = address.split(":", 2)
        if font not in catalog.SOUNDFONTS:
            raise OriginError(f"{address}: unknown SoundFont {font!r}; expected one of {sorted(catalog.SOUNDFONTS)}")
        if (font, pattern) not in self._fonts:
            path = self.root / catalog.SOUNDFONTS[font]
            if not path.is_file():
                raise OriginError(f"{address}: {path} is missing")
            self._fonts[font, pattern] = read_samples(path, lambda name: re.search(pattern, name) is not None)
        matching = self._fonts[font, pattern]
        by_pitch = {s.pitch: s for s in matching}  # a stereo pair shares its pitch: keep one side
        if not by_pitch:
            raise OriginError(f"{address}: no sample of {font} matches {pattern!r}")
        pitches = sorted(by_pitch)
        middle = [p for p in pitches if MIDDLE_KEYS[0] <= p <= MIDDLE_KEYS[1]]
        pitches = middle or pitches  # the instrument's usual range, not its extreme notes
        chosen = [by_pitch[pitches[int(i)]] for i in np.unique(np.linspace(0, len(pitches) - 1, PHRASE_NOTES).round())]
        return phrase(chosen, SAMPLE_RATE_HZ)

    # -------------------------------------------------------------- pictures

    def picture(self, address: str, max_side: int) -> np.ndarray:
        from PIL import Image

        kind, rest = address.split(":", 1)
        if kind == "gcompris":
            import resvg_py

            svg = self._bundle_file(address).decode("utf-8")
            png = bytes(resvg_py.svg_to_bytes(svg_string=svg, width=max_side * 2))
            with Image.open(io.BytesIO(png)) as image:
                return rgba_picture(image, max_side, address)
        if kind in ("openclipart", "tuxpaint"):
            path = (self._file(address) if kind == "openclipart"
                    else self._file(address + ".png", "usr/share/tuxpaint/stamps"))
            with Image.open(path) as image:
                return rgba_picture(image, max_side, address)
        if kind == "emoji":
            return rgba_picture(self._emoji(address, rest), max_side, address)
        raise OriginError(f"{address}: unknown kind of picture address {kind!r}")

    def _emoji(self, address: str, code: str):
        from PIL import Image, ImageDraw, ImageFont

        path = self.root / catalog.EMOJI_FONT
        if not path.is_file():
            raise OriginError(f"{address}: {path} is missing")
        font = ImageFont.truetype(str(path), 109)  # the size of the font's bitmaps
        image = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
        ImageDraw.Draw(image).text((10, 10), chr(int(code, 16)), font=font, embedded_color=True)
        return image
