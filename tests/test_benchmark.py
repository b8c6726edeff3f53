"""The embedded benchmark: source pack, synthesis, the build, its determinism and its formats.

Most tests run on a small Debian-like tree that the test writes itself; one test
fetches the real packages (it needs apt-get, which CI has)."""

import hashlib
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from training.embedded import build as benchmark
from training.embedded import catalog, sources
from conftest import CLASSES, DROPPED, fake_debian_root, write_sound, write_stamp
from training.readers.avsbench import MS3Dataset as AVSBenchMS3Dataset
from training.readers.avsbench import S4Dataset as AVSBenchS4Dataset
from training.readers.common import collate
from training.readers.vggsound import VGGSoundDataset
from emktd.features import FbankConfig
from training.embedded.synth import SynthConfig, synthesize

@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    return fake_debian_root(tmp_path / "cache" / "root", monkeypatch)


def test_collect_applies_the_class_list(fake_root):
    pack = sources.collect(fake_root, progress=False)
    assert pack.classes == ["dog", "cow", "violin", "kettle", "drum"]  # drum: a class from the catalogue alone
    tux = [s for s in pack.stamps if "#" not in s["name"]]
    assert sorted(s["name"] for s in tux) == sorted(p for ps in CLASSES.values() for p in ps)
    assert {s["split"] for s in tux} == {"train"}
    further = {s["name"]: s["split"] for s in pack.stamps if "#" in s["name"]}
    assert further == {"dog#1": "train", "dog#2": "val", "dog#3": "test", "violin#1": "test",
                       "drum#0": "train", "drum#1": "test"}
    # the silent Tux Paint drum picture is an instance's picture, never a distractor
    assert "hobbies/drum" not in {d["name"] for d in pack.distractors}
    assert {pack.classes[s["class"]] for s in pack.stamps if s["name"].startswith("animals/cows")} == {"cow"}
    assert [d["split"] for d in pack.distractors].count("test") == 1
    assert [b["split"] for b in pack.backgrounds] == ["train", "train", "train", "test"]
    # CC0 and an ambience/texture name only: no choir (voices), no drum, no guitar, no CC-BY-SA file,
    # and not ambi_swoosh, which a dog instance sounds with.
    assert sorted(n["name"] for n in pack.noises) == ["ambi_drone", "ambi_glass_hum", "elec_ping", "vinyl_hiss"]
    dog = next(s for s in pack.stamps if s["name"] == "animals/dogs/dog")
    spectrum = np.abs(np.fft.rfft(dog["sound"]))
    assert abs(spectrum.argmax() * 16000 / dog["sound"].size - 300) < 5
    assert dog["image"].shape[2] == 4 and dog["image"][..., 3].max() == 255


def test_collect_refuses_unreviewed_silent_or_shared_recordings(fake_root):
    stamps = fake_root / sources.STAMPS_DIR
    write_sound(stamps / "animals/cats/cat.ogg", 700)
    write_stamp(stamps / "animals/cats/cat.png", (1, 2, 3))
    with pytest.raises(sources.SourceError, match="neither a class nor dropped.*animals/cats/cat"):
        sources.collect(fake_root, progress=False)
    for p in (stamps / "animals/cats").iterdir():
        p.unlink()
    write_sound(stamps / "hobbies/violin.ogg", 0, silent=True)
    with pytest.raises(sources.SourceError, match="violin: the recording is"):
        sources.collect(fake_root, progress=False)
    shutil.copy(stamps / "animals/dogs/dog.ogg", stamps / "hobbies/violin.ogg")
    with pytest.raises(sources.SourceError, match="same recording"):
        sources.collect(fake_root, progress=False)


def test_collect_refuses_a_sample_not_listed_as_cc0(fake_root, monkeypatch):
    from training.embedded.catalog import Instance

    instances = dict(catalog.INSTANCES)
    instances["violin"] = (Instance("sonicpi:vinyl_scratch.flac", "openclipart:music/violin.png"),)  # CC-BY-SA-4.0
    monkeypatch.setattr(catalog, "INSTANCES", instances)
    with pytest.raises(sources.SourceError, match=r"not list as CC0: \['vinyl_scratch.flac'\]"):
        sources.collect(fake_root, progress=False)


def test_fetch_without_apt_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(sources.SourceError, match="needs `apt-get`.*--pack"):
        sources.fetch(tmp_path)


def test_pack_round_trip(fake_root, tmp_path):
    pack = sources.collect(fake_root, progress=False)
    path = sources.save_pack(pack, tmp_path / "pack.npz")
    np.load(path, allow_pickle=False)  # plain arrays only
    loaded = sources.load_pack(path)
    assert loaded.classes == pack.classes and len(loaded.noises) == len(pack.noises)
    for a, b in zip(pack.stamps, loaded.stamps):
        assert a["name"] == b["name"] and np.array_equal(a["image"], b["image"])
        normalised = a["sound"] / np.abs(a["sound"]).max() * 32000 / 32768
        assert np.abs(normalised - b["sound"]).max() < 1e-4
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(sources.SourceError, match="junk.npz"):
        sources.load_pack(tmp_path / "junk.npz")


@pytest.fixture
def fake_pack(fake_root, tmp_path):
    return sources.save_pack(sources.collect(fake_root, progress=False), tmp_path / "pack.npz")


def test_synthesis_modes(fake_pack):
    pack = sources.load_pack(fake_pack)
    config = SynthConfig()
    for mode in ("clean", "audio", "visual", "multi"):
        clip = synthesize(pack, "train", 3, seed=1, config=config, mode=mode, classes=[0, 1, 2])
        assert clip.frames.shape == (50, 224, 224, 3) and clip.masks.shape == (5, 224, 224)
        assert clip.audio.shape == (80000,) and np.abs(clip.audio).max() <= 0.9 + 1e-6
        assert clip.labels == ([0, 1] if mode == "multi" else [0])
        assert clip.info["mode"] == mode
        assert clip.masks.any(), mode  # the sounding object is visible
        if mode == "audio":
            assert clip.info["silent_on_screen"] == ["cow", "violin"] and clip.info["sounding"] == ["dog"]
    drowned = [synthesize(pack, "train", i, seed=2, mode="visual", classes=[0, 1, 2]) for i in range(8)]
    assert {c.info["audio"] for c in drowned} == {"drowned", "absent"}
    assert all(c.info["snr_db"] is None or c.info["snr_db"] <= -15 for c in drowned)


def test_test_split_uses_only_held_out_material(fake_pack):
    pack = sources.load_pack(fake_pack)
    held_backgrounds = {b["name"] for b in pack.backgrounds if b["split"] == "test"} | {"scene"}
    held_noise = {n["name"] for n in pack.noises if n["split"] == "test"}
    for i in range(10):
        test_clip = synthesize(pack, "test", i, seed=0)
        assert test_clip.info["background"] in held_backgrounds and test_clip.info["noise"] in held_noise
        train_clip = synthesize(pack, "train", i, seed=0)
        assert train_clip.info["noise"] not in held_noise
        assert train_clip.info["background"] not in held_backgrounds - {"scene"}


def test_new_instance_clips_use_held_out_instances_only(fake_pack):
    pack = sources.load_pack(fake_pack)
    split_of = {s["name"]: s["split"] for s in pack.stamps}
    held_out = {name for name, split in split_of.items() if split != "train"}
    for i in range(12):
        for split in ("train", "val", "test"):
            seen = synthesize(pack, split, i, seed=0)
            assert seen.info["part"] == "seen" and not set(seen.info["stamps"]) & held_out
        new = synthesize(pack, "test", i, seed=0, part="new")
        assert new.info["part"] == "new" and {split_of[n] for n in new.info["stamps"]} == {"test"}
        assert set(new.info["sounding"]) <= {"dog", "violin", "drum"}
    with pytest.raises(ValueError, match="no new-instance object"):
        synthesize(pack, "test", 0, seed=0, part="new", mode="clean", classes=[1, 0, 2])  # cow has none


def test_further_instance_pictures_and_sounds(fake_pack):
    pack = sources.load_pack(fake_pack)
    by_name = {s["name"]: s for s in pack.stamps}
    art = by_name["dog#2"]["image"]  # an Open Clip Art PNG: its own alpha, cropped to the opaque part
    assert art.shape[:2] == (40, 60) and art[0, 0, 3] == 100 and art[20, 30, 3] == 0 and art[10, 10, 3] == 255
    assert art[10, 10, :3].tolist() == [180, 90, 30]
    svg = by_name["dog#1"]["image"]  # the GCompris drawing, rendered from the bundle
    assert svg[svg.shape[0] // 2, svg.shape[1] // 2, :3].tolist() == [200, 120, 40]
    violin = by_name["violin#1"]["sound"]  # two SoundFont notes, 1000 and 1500 Hz, one after the other
    half = violin.size // 2
    for part, freq in ((violin[:half], 1000), (violin[half:], 1500)):
        spectrum = np.abs(np.fft.rfft(part))
        assert abs(spectrum.argmax() * 16000 / part.size - freq) < 20
    # the OpenTTD catalogue entry titled "Drum" (1700 Hz), not the one titled "Drumroll" (1750 Hz)
    drum = by_name["drum#1"]["sound"]
    assert abs(np.abs(np.fft.rfft(drum)).argmax() * 16000 / drum.size - 1700) < 10
    assert by_name["dog#2"]["origin"]["sound"] == "sonicpi:ambi_swoosh.flac"


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file's bytes, but for the mp4 clips (see same_clips)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "benchmark.json" and p.suffix != ".mp4"}


def decoded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return frames, audio


def same_clips(a: Path, b: Path) -> None:
    """x264 now and then decides a few macroblocks differently from one run to the next (seen even
    with one thread), so two encodings of the same clip are compared as pictures: the same frame
    count, at most codec-sized differences, identical audio."""
    names = sorted(p.name for p in (a / "vggsound" / "video").iterdir())
    assert names == sorted(p.name for p in (b / "vggsound" / "video").iterdir())
    for name in names:
        (fa, aa), (fb, ab) = decoded(a / "vggsound" / "video" / name), decoded(b / "vggsound" / "video" / name)
        assert fa.shape == fb.shape and np.array_equal(aa, ab), name
        assert np.abs(fa.astype(np.int16) - fb).mean() < 1.0, name


def small_build(root, pack, seed=0, workers=1):
    return benchmark.build(root, benchmark.SIZES["small"], seed, pack, benchmark.FORMATS, workers, progress=False)


def test_build_is_deterministic_and_readable(fake_pack, tmp_path):
    summary = small_build(tmp_path / "a", fake_pack, workers=2)
    # test: 6 seen-instance clips and 4 of the new instances (dog, violin, drum have test instances);
    # val has held-out instances of one class only, too few for clips of its own
    assert dict(summary["clips"]) == {"train": 12, "val": 4, "test": 10}
    assert dict(summary["new_instance_clips"]) == {"test": 4}
    small_build(tmp_path / "b", fake_pack, workers=1)
    small_build(tmp_path / "c", fake_pack, seed=1)
    a, b, c = (tree_hashes(tmp_path / x) for x in "abc")
    assert a == b  # same seed, any number of workers: the same frames, masks, audio and metadata
    same_clips(tmp_path / "a", tmp_path / "b")
    assert a != c
    assert not (tmp_path / "a.partial").exists()

    records = [json.loads(line) for line in (tmp_path / "a" / "clips.jsonl").read_text().splitlines()]
    labels = (tmp_path / "a" / "classes.txt").read_text().split("\n")[:-1]
    fbank = FbankConfig(num_frames=512)
    vgg = VGGSoundDataset(tmp_path / "a/vggsound/vggsound.csv", tmp_path / "a/vggsound/video", "test",
                          labels=labels, fbank=fbank, clip_s=None)
    assert len(vgg) == sum(r["split"] == "test" for r in records) and not vgg.manifest.missing
    batch, errors = collate([vgg[i] for i in range(len(vgg))])
    assert not errors and batch["frames"].shape[1:] == (1, 3, 224, 224)
    s4_labels = [label.replace(" ", "_") for label in labels]
    s4 = AVSBenchS4Dataset(tmp_path / "a/avsbench/Single-source", "test", labels=s4_labels, fbank=fbank)
    ms3 = AVSBenchMS3Dataset(tmp_path / "a/avsbench/Multi-sources", "test", labels=s4_labels, fbank=fbank)
    assert len(s4) + len(ms3) == len(vgg)
    sample = s4[0]
    assert sample["mask_valid"].all() and 0 < sample["masks"].mean() < 0.5
    record = next(r for r in records if r["id"] == s4.items[0]["id"])
    assert sample["target"].argmax().item() == s4_labels.index(record["labels"][0].replace(" ", "_"))


def test_interrupted_build_resumes(fake_pack, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = benchmark._build_one

    def flaky(task):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(benchmark, "_build_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        small_build(tmp_path / "r", fake_pack)
    assert len(list((tmp_path / "r.partial" / "done").glob("*.json"))) == 8
    monkeypatch.setattr(benchmark, "_build_one", real)
    small_build(tmp_path / "r", fake_pack)
    small_build(tmp_path / "clean", fake_pack)
    assert tree_hashes(tmp_path / "r") == tree_hashes(tmp_path / "clean")
    same_clips(tmp_path / "r", tmp_path / "clean")


def test_stats_and_contact_sheet(fake_pack, tmp_path):
    small_build(tmp_path / "s", fake_pack)
    text = benchmark.stats(tmp_path / "s")
    assert "| clips | 12 | 4 | 10 |" in text and "| new-instance clips | 0 | 0 | 4 |" in text
    assert "5 sounding classes" in text
    sheet = benchmark.contact_sheet(tmp_path / "s", tmp_path / "sheet.png", count=3)
    with Image.open(sheet) as image:
        assert image.size == (5 * 224, 3 * (224 + 22))


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get to fetch the Debian packages")
def test_real_debian_sources():
    cache = Path(__file__).resolve().parents[1] / ".cache" / "emktd"
    pack_path = benchmark.ensure_pack(None, cache)
    assert pack_path.stat().st_size <= 40 * 2**20
    pack = sources.load_pack(pack_path)
    assert len(pack.classes) >= 60
    names = {s["name"] for s in pack.stamps}
    assert not names & set(sources.DROPPED)
    assert all("_desc" not in n and not n.startswith("symbols/") for n in names)
    assert {pack.classes[s["class"]] for s in pack.stamps} == set(pack.classes)
    assert all(np.sqrt(np.mean(s["sound"] ** 2)) > 1e-3 for s in pack.stamps)
    assert {"train", "test"} <= {b["split"] for b in pack.backgrounds}
    # the catalogue's aim: new instances of at least 10 classes in val to select on
    assert len({s["class"] for s in pack.stamps if s["split"] == "val"}) >= 10


def test_a_cached_pack_from_other_choices_is_rebuilt(fake_root, monkeypatch):
    cache = fake_root.parent
    (cache / "fetched.json").write_text(json.dumps({"packages": sorted(sources.PACKAGES), "debs": []}))
    path = benchmark.ensure_pack(None, cache)
    first, built_at = sources.load_pack(path).meta["recipe"], path.stat().st_mtime_ns
    assert benchmark.ensure_pack(None, cache) == path and path.stat().st_mtime_ns == built_at  # reused
    monkeypatch.setattr(sources, "DROPPED", {**DROPPED, "hobbies/violin": "changed our mind"})
    monkeypatch.setattr(sources, "CLASSES", {k: v for k, v in CLASSES.items() if k != "violin"})
    benchmark.ensure_pack(None, cache)
    rebuilt = sources.load_pack(path)
    assert rebuilt.meta["recipe"] != first and "violin" not in rebuilt.classes
