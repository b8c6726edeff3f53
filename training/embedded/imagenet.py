"""The embedded benchmark's classes as ImageNet-1k names them: for each class, the ImageNet classes
(by the names torchvision gives them, :func:`emktd.backbones.imagenet_categories`) that show the
same kind of thing, and the classes ImageNet has none for.

A class maps to an ImageNet class only where a picture of one is a picture of the other (a
bullfrog is a frog; a teapot is not a kettle), so that the map can serve as prior knowledge: a
new picture of a known kind named as ImageNet would name it.  Where ImageNet has only a close
relative (the blackbird's is the American robin, another thrush), the class is listed under
NO_IMAGENET_CLASS with that reason.  ``tests/test_imagenet_map.py`` checks that every benchmark
class is in exactly one of the two, and that every name is an ImageNet class.

    python -m training.embedded.imagenet        # the map as a table, with ImageNet's indices
"""

from __future__ import annotations

# ImageNet-1k's 118 dog breeds: indices 151 (Chihuahua) to 268 (Mexican hairless).
DOG_BREEDS = range(151, 269)

IMAGENET_CLASSES: dict[str, tuple[str, ...]] = {
    "frog": ("bullfrog", "tree frog", "tailed frog"),
    "cuckoo": ("coucal",),  # a ground cuckoo (Centropus)
    "duck": ("drake", "red-breasted merganser"),
    "goose": ("goose",),
    "hen": ("hen",),
    "heron": ("little blue heron", "American egret", "bittern"),
    "owl": ("great grey owl",),
    "penguin": ("king penguin",),
    "rooster": ("cock",),
    "toucan": ("toucan",),
    "vulture": ("vulture",),
    "bee": ("bee",),
    "grasshopper": ("grasshopper",),
    "chimpanzee": ("chimpanzee",),
    "gorilla": ("gorilla",),
    "orca": ("killer whale",),
    "sea lion": ("sea lion",),
    "whale": ("grey whale", "killer whale"),
    "badger": ("badger",),
    "bear": ("brown bear", "American black bear", "ice bear", "sloth bear"),
    "bison": ("bison",),
    "bull": ("ox",),
    "cow": ("ox",),
    "goat": ("ibex",),  # the wild goat; ImageNet-1k has no domestic one
    "sheep": ("ram", "bighorn"),
    "camel": ("Arabian camel",),
    "lion": ("lion",),
    "tiger": ("tiger",),
    "dog": ("@dog breeds",),  # every one of DOG_BREEDS
    "fox": ("red fox", "kit fox", "Arctic fox", "grey fox"),
    "elephant": ("Indian elephant", "African elephant", "tusker"),
    "horse": ("sorrel",),
    "zebra": ("zebra",),
    "ferret": ("black-footed ferret", "polecat"),
    "hippopotamus": ("hippopotamus",),
    "pig": ("hog", "wild boar"),
    "rabbit": ("wood rabbit", "hare", "Angora"),
    "squirrel": ("fox squirrel",),
    "koala": ("koala",),
    "apple bite": ("Granny Smith",),  # the apple being bitten
    "camera shutter": ("reflex camera", "Polaroid camera"),
    "floor tom": ("drum",),
    "drum kit": ("drum",),
    "snare drum": ("drum",),
    "cello": ("cello",),
    "violin": ("violin",),
    "bassoon": ("bassoon",),
    "glass filling": ("beer glass", "goblet"),
    "toilet": ("toilet seat",),
    "hammer": ("hammer",),
    "mallet": ("hammer",),  # WordNet's mallet is a kind of hammer
    "saw": ("chain saw",),
    "cat": ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"),
    "fire truck": ("fire engine",),
    "submarine": ("submarine",),
    "accordion": ("accordion",),
    "banjo": ("banjo",),
    "electric guitar": ("electric guitar",),
    "flute": ("flute",),
    "guitar": ("acoustic guitar",),
    "harp": ("harp",),
    "maracas": ("maraca",),
    "piano": ("grand piano", "upright"),
    "saxophone": ("sax",),
    "trumpet": ("cornet",),  # ImageNet's cornet class is "cornet, horn, trumpet, trump"
}

NO_IMAGENET_CLASS: dict[str, str] = {  # class: why none fits
    "blackbird": "no thrush but the American robin, a relative",
    "crow": "no crow; magpie and jay are relatives",
    "lark": "no lark",
    "quetzal": "no trogon",
    "seagull": "no gull; albatross and pelican are other seabirds",
    "turkey": "no turkey; grouse, quail and partridge are other fowl",
    "hornet": "no wasp",
    "moth": "butterflies only",
    "dolphin": "no dolphin; killer whale is the orca class's",
    "caribou": "no deer",
    "deer": "no deer; impala, gazelle and hartebeest are antelopes",
    "donkey": "no ass; sorrel is a horse",
    "mouse": "no rodent of that kind; ImageNet's 'mouse' is the computer mouse",
    "cymbal": "no cymbal; gong and chime are other percussion",
    "scissors": "no scissors",
    "kettle": "no kettle; teapot, coffeepot and water jug are other vessels",
    "rubber duck": "no toy duck",
    "lightning": "no weather",
    "fireworks": "no fireworks",
}


def imagenet_indices(name: str, categories: tuple[str, ...] | None = None) -> tuple[int, ...]:
    """The ImageNet-1k indices a benchmark class maps to (empty where ImageNet has none)."""
    if categories is None:
        from emktd.backbones import imagenet_categories

        categories = imagenet_categories()
    if name in NO_IMAGENET_CLASS:
        return ()
    if name not in IMAGENET_CLASSES:
        raise KeyError(f"{name!r} is not a class of the embedded benchmark's ImageNet map")
    indices = []
    for entry in IMAGENET_CLASSES[name]:
        indices.extend(DOG_BREEDS if entry == "@dog breeds" else [categories.index(entry)])
    return tuple(indices)


def main() -> None:
    from emktd.backbones import imagenet_categories

    categories = imagenet_categories()
    print("| class | ImageNet-1k classes (index) |\n|---|---|")
    for name in sorted({*IMAGENET_CLASSES, *NO_IMAGENET_CLASS}):
        if name in NO_IMAGENET_CLASS:
            print(f"| {name} | none: {NO_IMAGENET_CLASS[name]} |")
        elif IMAGENET_CLASSES[name] == ("@dog breeds",):
            print(f"| {name} | the 118 dog breeds ({DOG_BREEDS.start} to {DOG_BREEDS.stop - 1}) |")
        else:
            print(f"| {name} | " + ", ".join(f"{categories[i]} ({i})" for i in imagenet_indices(name, categories))
                  + " |")


if __name__ == "__main__":
    main()
