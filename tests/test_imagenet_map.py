"""The written map from the embedded benchmark's classes to ImageNet-1k's, checked against both lists."""

from pathlib import Path

import pytest

from emktd.backbones import imagenet_categories
from training.embedded import catalog, sources
from training.embedded.imagenet import DOG_BREEDS, IMAGENET_CLASSES, NO_IMAGENET_CLASS, imagenet_indices

REPO = Path(__file__).resolve().parents[1]


def test_every_benchmark_class_is_mapped_or_said_to_have_no_imagenet_class():
    classes = set(sources.CLASSES) | set(catalog.INSTANCES)
    bundled = {label.replace("_", " ") for label in (REPO / "weights" / "teacher" / "labels.txt").read_text().split()}
    assert classes == bundled and len(classes) == 84
    assert not set(IMAGENET_CLASSES) & set(NO_IMAGENET_CLASS)
    assert set(IMAGENET_CLASSES) | set(NO_IMAGENET_CLASS) == classes
    assert all(reason for reason in NO_IMAGENET_CLASS.values())


def test_every_name_is_an_imagenet_class():
    categories = imagenet_categories()
    for name, entries in IMAGENET_CLASSES.items():
        indices = imagenet_indices(name, categories)
        assert indices and len(set(indices)) == len(indices), name
        for entry in entries:
            assert entry == "@dog breeds" or entry in categories, (name, entry)
    assert [categories[i] for i in (DOG_BREEDS[0], DOG_BREEDS[-1])] == ["Chihuahua", "Mexican hairless"]
    assert len(imagenet_indices("dog", categories)) == 118
    assert imagenet_indices("kettle", categories) == ()
    assert categories[imagenet_indices("trumpet", categories)[0]] == "cornet"
    with pytest.raises(KeyError, match="unicorn"):
        imagenet_indices("unicorn", categories)
