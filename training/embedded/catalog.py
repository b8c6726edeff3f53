"""Further instances of the benchmark's classes: recordings and pictures from other Debian packages.

An instance is one recording plus one picture, each from its own origin (a
drawing and a recording made apart, possibly in different packages).  The Tux
Paint stamps of a class (``sources.CLASSES``) are its first instance; this
catalogue adds the others, in order.  How a class's instances are split
(:func:`split_of`): the last listed goes to the test split's new-instance part,
the one before it to val's new-instance part when the class has four or more,
the rest to training.  A class with a single instance stays in the seen-instance
part only; :func:`sources.instance_plan` applies these rules.

Addresses name a file inside a package:
  sounds    ``gcompris:<bundle>/<file>``  a file in a GCompris Qt resource bundle
            ``lmms:<path>``               an LMMS sample
            ``sonicpi:<file>``            a Sonic Pi sample (only those its copyright file lists as CC0)
            ``widelands:<path>``          a Widelands game sound
            ``opensfx:<title>``           an OpenSFX sound, by the title its OpenTTD catalogue gives it
            ``sf2:<font>:<regex>``        the samples of a SoundFont (2 or 3) whose names match, played as a phrase
  pictures  ``gcompris:<bundle>/<file>.svg``  a GCompris drawing (rendered with resvg; alpha from the drawing)
            ``openclipart:<path>``        an Open Clip Art PNG (alpha from the file)
            ``emoji:<code point>``        a Noto Color Emoji glyph (alpha from the glyph)
            ``tuxpaint:<stamp>``          a silent Tux Paint stamp's PNG (alpha from the file)
"""

from __future__ import annotations

from dataclasses import dataclass

PACKAGES = {
    "gcompris-qt-data": "GPL-3+ (activity sounds; drum_kit.ogg CC Sampling Plus 1.0; drawings CC-BY-SA-4.0 or GPL-3; "
                        "the explore activities' photographs, used only for the photograph clips, public domain "
                        "or CC0-1.0, per file as the activity's README says)",
    "openclipart-png": "public domain (Open Clip Art Library)",
    "fluid-soundfont-gm": "MIT (Fluid R3 GM SoundFont, Frank Wen)",
    "lmms-common": "GPL-2+ (LMMS samples)",
    "fonts-noto-color-emoji": "Apache-2.0 images, OFL-1.1 font (Noto Color Emoji)",
    "widelands-data": "GPL-2+ (Widelands game sounds)",
    "openttd-opensfx": "GPL-2+ or CDDL-1.1 (OpenSFX; the sounds used here are from CC0 recordings, the horse "
                       "from a CC-BY-3.0 one by dobroide, as the package's readme credits)",
    "musescore-general-soundfont": "MIT (MuseScore General SoundFont, S. Christian Collins; its grand piano "
                                   "and trumpet samples are public domain, as its sample-sources table says)",
}
GCOMPRIS_RCC = "usr/share/gcompris-qt/rcc"
LMMS_SAMPLES = "usr/share/lmms/samples"
SONICPI_SAMPLES = "usr/share/sonic-pi/samples"
OPENCLIPART = "usr/share/openclipart/png"
# Address kinds that name a file under a package's folder: kind -> (package, folder).
FOLDERS = {
    "lmms": ("lmms-common", LMMS_SAMPLES),
    "sonicpi": ("sonic-pi-samples", SONICPI_SAMPLES),
    "widelands": ("widelands-data", "usr/share/games/widelands/data"),
    "openclipart": ("openclipart-png", OPENCLIPART),
}
OPENSFX_CAT = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
SOUNDFONTS = {"FluidR3_GM": "usr/share/sounds/sf2/FluidR3_GM.sf2",
              "MuseScore_General": "usr/share/sounds/sf3/MuseScore_General_Full.sf3"}
EMOJI_FONT = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"

FARM = "explore_farm_animals"
BAND = "instruments"
MEMORY = "memory-sound"
OC_MUSIC = "recreation/music"


@dataclass(frozen=True)
class Instance:
    sound: str
    picture: str


def _farm(animal: str, sound: str | None = None) -> Instance:
    return Instance(f"gcompris:{FARM}/{sound or animal}.ogg", f"gcompris:{FARM}/{animal}.svg")


def _band(instrument: str) -> Instance:
    return Instance(f"gcompris:{BAND}/{instrument}.ogg", f"gcompris:{BAND}/{instrument}.svg")


def _memory(drawing: str) -> str:
    """A drawing of GCompris's memory game (other drawings than the farm activity's)."""
    return f"gcompris:memory/{drawing}.svg"


# Class -> its instances beyond the Tux Paint stamps, in order (the last is the test split's).
# A class not in sources.CLASSES is a new class; it needs two instances here to be kept.
# Left out because their pictures are one drawing twice (GCompris's drawing was made from the
# Open Clip Art one): flute_ganson, maracas_ganson, french_horn_ganson, tenor_trombone_ganson,
# trumpet_b_flat__ganson, harp2_ganson; so horn and trombone have one instance and are not classes.
# Looked at and not used: AVL Drumkits' recordings (CC-BY-SA-3.0, see below); the MuseScore General
# SoundFont's other instruments (its sample table credits them to the Fluid R3 font, so they are not
# independent recordings); Widelands' wolf, moose, coyote, crickets and birds (no class, or the species
# is not named); OpenSFX's monkeys (species not named).  Drum kit, cymbal, floor tom, snare drum, flute
# and bassoon have further recordings (Sonic Pi, LMMS, Fluid R3) but no further picture of their own.
# Not used: the TimGM6mb SoundFont, whose samples are GPL-2-only, which cannot be combined in one
# clip with GCompris's GPL-3+ recordings; eduActiv8's Art4Apps drawings, credited as CC-BY-SA
# without a version (only 4.0 may be combined with GPL-3 material).
INSTANCES: dict[str, tuple[Instance, ...]] = {
    "dog": (_farm("dog"),
            Instance(f"gcompris:{MEMORY}/LRBark_1_LA_cut.ogg", "emoji:1F415"),
            Instance(f"gcompris:{MEMORY}/LRBark_3_LA_cut.ogg", "openclipart:animals/mammals/dogs/beagle_copper_ganson.png")),
    "cat": (_farm("cat"),),
    "cow": (_farm("cow"),
            Instance("widelands:sound/farm/ox_00.ogg", _memory("06_cow")),
            Instance("opensfx:Cow", "emoji:1F404")),
    "pig": (_farm("pig"),
            Instance("widelands:sound/animals/boar.ogg", _memory("02_pig"))),
    "sheep": (_farm("sheep"),
              Instance("widelands:sound/farm/sheep_00.ogg", _memory("07_sheep")),
              Instance("opensfx:Sheep", "emoji:1F411")),
    "horse": (_farm("horse"),
              Instance("widelands:sound/farm/horse_00.ogg",
                       "openclipart:animals/mammals/horses/horse_1_konstantin_r._01.png"),
              Instance("opensfx:Horse", "emoji:1F40E")),
    "duck": (_farm("duck"),
             Instance("widelands:world/critters/duck/duck_00.ogg", "openclipart:animals/birds/jonathon_s_duck_01.png")),
    "owl": (_farm("owl"),),
    "hen": (_farm("chicken", "chickens"),),
    "frog": (Instance(f"gcompris:{MEMORY}/LRFrogsInPondDuringStormLACut.ogg", "openclipart:animals/rana01_architetto_france_01.png"),
             Instance("widelands:sound/animals/frog.ogg", _memory("21_frog"))),
    "crow": (Instance("sonicpi:misc_crow.flac", "openclipart:animals/birds/crow_01.png"),),
    "deer": (Instance("widelands:sound/animals/stag_00.ogg", "openclipart:animals/mammals/deer_matt_todd_01.png"),),
    "donkey": (Instance("widelands:sound/farm/donkey.ogg", "emoji:1FACF"),),
    "lion": (Instance("opensfx:Tropical: Lion roar", _memory("17_lion")),),
    "cello": (_band("cello"),
              Instance("lmms:instruments/cello01.ogg", f"openclipart:{OC_MUSIC}/cello_ganson.png"),
              Instance("sf2:FluidR3_GM:^Cello", f"openclipart:{OC_MUSIC}/cello_mo_01.png")),
    "violin": (_band("violin"),
               Instance("lmms:instruments/violin_fingered01.ogg", f"openclipart:{OC_MUSIC}/violin_ganson.png"),
               Instance("sf2:FluidR3_GM:^Violin", "emoji:1F3BB")),
    "drum kit": (_band("drum_kit"),
                 Instance("lmms:beats/break01.ogg", f"openclipart:{OC_MUSIC}/drums_jarno_vasamaa_.png")),
    "cymbal": (_band("cymbal"),),
    "accordion": (_band("accordion"), Instance("sf2:FluidR3_GM:^Accordian", "emoji:1FA97")),
    "banjo": (_band("banjo"), Instance("sf2:FluidR3_GM:^Banjo", "emoji:1FA95")),
    "electric guitar": (_band("electric_guitar"),
                        Instance("sf2:FluidR3_GM:^Distortion",
                                 f"openclipart:{OC_MUSIC}/electric_guitar_andrea__01r.png"),
                        Instance("lmms:instruments/steel_guitar_heavy_distorted01.ogg", "emoji:1F3B8"),
                        Instance("sonicpi:guit_e_fifths.flac", "tuxpaint:hobbies/music/string/guitar_electric")),
    "flute": (_band("flute_traversiere"), Instance("sf2:FluidR3_GM:^Flute", "emoji:1FA88")),
    "guitar": (_band("guitar"),
               Instance("lmms:latin/latin_guitar01.ogg", "tuxpaint:hobbies/music/string/guitar_classical"),
               Instance("sf2:FluidR3_GM:^Nylon", f"openclipart:{OC_MUSIC}/guitar_ganson.png"),
               Instance(f"gcompris:{MEMORY}/guitar_son1.ogg", f"openclipart:{OC_MUSIC}/guitar_jarno_vasamaa1.png")),
    "harp": (_band("harp"),
             Instance("sf2:FluidR3_GM:^Harp(?!sichord)", f"openclipart:{OC_MUSIC}/harp1_ganson.png")),
    "maracas": (_band("maracas"), Instance("sf2:FluidR3_GM:^Maracas", "emoji:1FA87")),
    "piano": (_band("piano"),
              Instance("lmms:instruments/piano01.ogg", f"openclipart:{OC_MUSIC}/piano_geraint_luff_01.png"),
              Instance("sf2:FluidR3_GM:^P200 Piano", "emoji:1F3B9"),
              Instance("sf2:MuseScore_General:^Piano MF ", "gcompris:louis-braille/piano.svg")),
    "saxophone": (_band("saxophone"),
                  Instance("sf2:FluidR3_GM:^Alto", "emoji:1F3B7")),
    "snare drum": (_band("snare_drum"), Instance("lmms:drums/snare_acoustic01.ogg", "emoji:1F941")),
    "trumpet": (_band("trumpet"),
                Instance("lmms:instruments/trumpet01.ogg", "tuxpaint:hobbies/music/brass/trumpet"),
                Instance("sf2:FluidR3_GM:^tp_", "emoji:1F3BA"),
                Instance("sf2:MuseScore_General:^Trumpet [A-G]", f"openclipart:{OC_MUSIC}/trumpet_pocket_colour_ganso.png")),
}


def split_of(position: int, count: int) -> str:
    """The split of a class's instance number ``position`` (0 = the Tux Paint stamps, when the class
    has them) out of ``count``: 'test' for the last, 'val' for the one before when count >= 4, else 'train'."""
    if count < 2:
        return "train"
    if position == count - 1:
        return "test"
    if count >= 4 and position == count - 2:
        return "val"
    return "train"
