"""What the embedded benchmark's build records beside its clips: ``clips.jsonl`` (one record per
clip: id, split, labels, informativeness mode, background, noise, formats, ...) and
``classes.txt`` (the class list, one per line)."""

from __future__ import annotations

import json
from pathlib import Path

from training.readers.common import category_dir


def read_clips(root: str | Path) -> list[dict]:
    """The per-clip records of the benchmark at ``root``."""
    path = Path(root) / "clips.jsonl"
    if not path.is_file():
        raise SystemExit(f"{root}: no benchmark here (no clips.jsonl); build it with "
                         "`python -m training.embedded.build build`")
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def read_classes(root: str | Path) -> list[str]:
    """The class list as the AVSBench layouts name the categories."""
    return [category_dir(c) for c in (Path(root) / "classes.txt").read_text().split("\n") if c]
