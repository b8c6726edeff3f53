"""Read Qt resource bundles (``.rcc``, as GCompris ships its activities' media in).

The format (Qt's ``rcc`` tool, versions 1 to 3): a 20-byte header ``qres``,
version, then the offsets of three tables (big-endian 32-bit): the node tree,
the file data and the names.  A node is 14 bytes (version 1) or 22 (version 2
and later: a 64-bit modification time follows): name offset, flags, then for
a folder its child count and first child index, for a file its country,
language and data offset.  Flags: 1 = zlib-compressed (the data starts with a
4-byte uncompressed length), 2 = folder, 4 = zstd-compressed.  A name is a
16-bit length, a 32-bit hash and UTF-16BE characters.  Data is a 32-bit length
then the bytes.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

FOLDER, ZLIB, ZSTD = 2, 1, 4


class RccError(ValueError):
    """Not a Qt resource bundle this reader understands."""


def read_rcc(path: Path) -> dict[str, bytes]:
    """Every file in the bundle at ``path``: ``{"folder/name.ext": bytes}``."""
    path = Path(path)
    blob = path.read_bytes()
    if blob[:4] != b"qres" or len(blob) < 20:
        raise RccError(f"{path}: not a Qt resource bundle (expected the 'qres' header)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    if version not in (1, 2, 3):
        raise RccError(f"{path}: resource format version {version}; expected 1, 2 or 3")
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset:names + offset + 2])
        start = names + offset + 6
        return blob[start:start + 2 * length].decode("utf-16-be")

    def node(index: int) -> tuple[int, int, int, int]:
        start = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[start:start + 6])
        first, second = struct.unpack(">II", blob[start + 6:start + 14])
        return name_offset, flags, first, second

    def payload(offset: int, flags: int) -> bytes:
        (length,) = struct.unpack(">I", blob[data + offset:data + offset + 4])
        raw = blob[data + offset + 4:data + offset + 4 + length]
        if flags & ZLIB:
            return zlib.decompress(raw[4:])
        if flags & ZSTD:
            raise RccError(f"{path}: zstd-compressed entries are not supported")
        return raw

    files: dict[str, bytes] = {}
    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        name_offset, flags, first, second = node(index)
        name = "" if index == 0 else name_at(name_offset)
        full = f"{prefix}/{name}" if prefix else name
        if flags & FOLDER:
            stack.extend((second + k, full) for k in range(first))  # first: child count, second: first child
        else:
            # a file node: country (16 bits) and language (16 bits) in ``first``, data offset in ``second``
            files[full] = payload(second, flags)
    return files
