"""The transfer pool: what it takes, what it leaves out (digests, numbered series, perceptual
near-duplicates), its pack, and the unlabelled clips a student trains on."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fake_debian_root, textured_picture, textured_sound
from emktd.features import FbankConfig
from training.embedded import pool, sources
from training.embedded.stream import PoolReader


def test_the_picture_hash_finds_a_resized_recoloured_or_mirrored_copy_and_no_other_drawing():
    drawing = textured_picture(1)
    reference = pool.dhash(drawing)
    smaller = np.asarray(Image.fromarray(drawing, "RGBA").resize((96, 72), Image.Resampling.BILINEAR))
    brighter = drawing.copy()
    brighter[..., :3] = np.clip(brighter[..., :3].astype(int) + 12, 0, 255)
    hashes = np.array([reference], dtype=np.uint64)
    for copy in (smaller, brighter):
        assert pool.hamming(pool.dhash(copy), hashes)[0] <= pool.PICTURE_HAMMING
    mirrored = drawing[:, ::-1]
    assert pool.hamming(pool.dhash(mirrored[:, ::-1]), hashes)[0] == 0  # the check also hashes the mirror image
    others = [pool.hamming(pool.dhash(textured_picture(seed)), hashes)[0] for seed in range(2, 12)]
    assert min(others) > pool.PICTURE_HAMMING, others


def test_the_sound_fingerprint_finds_a_trimmed_resampled_quieter_copy_and_no_other_recording():
    rate = 16000
    recording = textured_sound(1, 4.0, rate)
    index = pool.SoundIndex(["recording"], [pool.fingerprint(recording, rate)])
    # 0.3 s cut from the start, through 22.05 kHz and back, at half the level, with a little noise
    copy = recording[int(0.3 * rate):]
    up = np.interp(np.linspace(0, copy.size - 1, int(copy.size * 22050 / rate)), np.arange(copy.size), copy)
    down = np.interp(np.linspace(0, up.size - 1, copy.size), np.arange(up.size), up)
    noisy = 0.5 * down + 0.003 * np.random.default_rng(0).standard_normal(down.size)
    found = index.match(pool.fingerprint(noisy.astype(np.float32), rate))
    assert found is not None and found[0] == "recording" and found[1] <= pool.SOUND_BER
    for seed in range(2, 8):
        assert index.match(pool.fingerprint(textured_sound(seed, 4.0, rate), rate)) is None


@pytest.fixture
def fake_pool(tmp_path, monkeypatch):
    root = fake_debian_root(tmp_path / "root", monkeypatch)
    pack = sources.collect(root, progress=False)
    return root, pack, pool.collect_pool(root, pack, progress=False)


def test_the_pool_takes_new_material_and_leaves_the_benchmark_s_out(fake_pool, tmp_path):
    root, pack, found = fake_pool
    pictures = {p["origin"] for p in found.pictures}
    sounds = {s["origin"] for s in found.sounds}
    excluded = {e["origin"]: " ".join(e["why"]) for e in found.excluded}
    assert {f"openclipart:objects/thing{seed}.png" for seed in (5, 6, 7)} <= pictures
    assert "lmms:misc/bell01.ogg" in sounds and "opensfx:Drumroll" in sounds
    # every instance's own file, by its digest
    for origin in ("openclipart:animals/dog3.png", "openclipart:music/violin.png", "lmms:drums/snare.ogg",
                   "opensfx:Drum", "sonicpi:ambi_swoosh.flac", "gcompris:farm/bark.ogg"):
        assert "file digest of" in excluded[origin], origin
    # a background sound is benchmark material too (it may be a test clip's)
    assert "file digest of background sound ambi_drone" in excluded["sonicpi:ambi_drone.flac"]
    # another file of an instance's numbered series; a resized copy of an instance's drawing
    assert "one numbered series with drum#0 (lmms:drums/snare.ogg)" in excluded["lmms:drums/snare02.ogg"]
    assert excluded["openclipart:objects/dog_copy.png"].startswith("dHash")
    assert not pictures & set(excluded) and not sounds & set(excluded)
    # a sample its copyright file does not list as CC0 is not a candidate at all
    assert "sonicpi:vinyl_scratch.flac" not in sounds | set(excluded)
    path = pool.save_pool(found, tmp_path / "pool_pack.npz")
    np.load(path, allow_pickle=False)
    loaded = pool.load_pool(path)
    assert [p["origin"] for p in loaded.pictures] == [p["origin"] for p in found.pictures]
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(loaded.pictures, found.pictures))
    assert loaded.excluded == found.excluded and loaded.meta["pack_recipe"] == pack.meta["recipe"]
    assert "left out as benchmark material" in pool.summary(loaded)


def test_the_pool_pack_is_reused_for_its_recipe_and_rebuilt_for_another(fake_pool, tmp_path, monkeypatch):
    root, pack, found = fake_pool
    pack_path = sources.save_pack(pack, tmp_path / "cache" / "source_pack.npz")
    pool.save_pool(found, pool.default_pool_path(pack_path.parent))
    monkeypatch.setattr(sources, "fetch", lambda cache: (_ for _ in ()).throw(AssertionError("no fetch")))
    assert pool.ensure_pool(pack_path) == pool.default_pool_path(pack_path.parent)  # reused
    stale = pool.Pool(found.pictures, found.sounds, [], {**found.meta, "pack_recipe": "other"})
    pool.save_pool(stale, pool.default_pool_path(pack_path.parent))
    monkeypatch.setattr(sources, "fetch", lambda cache: root)
    rebuilt = pool.load_pool(pool.ensure_pool(pack_path, progress=False))
    assert rebuilt.meta["pack_recipe"] == pack.meta["recipe"]


def test_pool_clips_carry_no_label_and_change_with_the_epoch(small_bench):
    labels = (small_bench / "classes.txt").read_text().split()
    summary = json.loads((small_bench / "benchmark.json").read_text())
    assert summary["pack"]
    reader = PoolReader(small_bench, [c.replace(" ", "_") for c in labels], FbankConfig(num_frames=512), 64, 3, 0)
    first = reader.load(reader.items[1], [2])
    assert first["id"] == "pool-e0-000001" and first["target"].sum() == 0 and not first["mask_valid"].any()
    assert first["frames"].shape == (1, 3, 64, 64) and first["audio"].shape == (512, 128)
    assert torch.equal(reader.load(reader.items[1], [2])["frames"], first["frames"])  # reproducible
    reader.set_epoch(1)
    again = reader.load(reader.items[1], [2])
    assert again["id"] == "pool-e1-000001" and not torch.equal(again["frames"], first["frames"])
