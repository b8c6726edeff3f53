"""The held-out photographs: classes of the benchmark, material no clip holds, and the recording a
photograph's clip borrows."""

import pytest

from training.embedded import catalog, photos, sources


def test_every_photograph_is_of_a_benchmark_class_and_in_no_catalogue_instance():
    assert set(photos.PHOTOS) <= set(sources.CLASSES)
    used = {i.picture for items in catalog.INSTANCES.values() for i in items}
    for name, (bundle, file, licence) in photos.PHOTOS.items():
        assert f"gcompris:{bundle}/{file}" not in used, name
        assert licence.startswith(("public domain", "CC0-1.0")), name


def _clip(id_, sounding, mode="clean", part="seen", split="test"):
    return {"id": id_, "sounding": sounding, "mode": mode, "part": part, "split": split}


def test_a_photograph_borrows_the_first_test_recording_where_its_class_alone_sounds_a_new_one_first():
    records = [_clip("e5", ["dog"], part="new"), _clip("e1", ["dog"]), _clip("e0", ["dog", "cat"]),
               _clip("e2", ["dog"], mode="visual", part="new"), _clip("t0", ["dog"], split="train", part="new"),
               _clip("e3", ["dog"], mode="audio", part="new")]
    assert photos.sound_clip(records, "dog")["id"] == "e3"  # new, audio tells it, first in id order
    assert photos.sound_clip([r for r in records if r.get("part") != "new"], "dog")["id"] == "e1"
    with pytest.raises(SystemExit, match="'cow'"):
        photos.sound_clip(records, "cow")
