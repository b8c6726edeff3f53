"""Training augmentation (training/run/augment.py) and the pretraining stream (training/embedded/stream.py)."""

import json

import numpy as np
import pytest
import torch

from emktd.features import CAVMAE_FBANK_MEAN, CAVMAE_FBANK_STD, FbankConfig, IMAGENET_MEAN, IMAGENET_STD
from training.run.augment import SILENCE_LOG_ENERGY, audio_augment, image_augment, modality_dropout


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_audio_augmentation_is_seeded_and_off_at_zero():
    audio = torch.randn(4, 256, 128)
    assert torch.allclose(audio_augment(audio, 0.0, generator()), audio, atol=1e-5)
    a, b = audio_augment(audio, 1.0, generator(1)), audio_augment(audio, 1.0, generator(1))
    assert torch.equal(a, b) and a.shape == audio.shape and torch.isfinite(a).all()
    assert not torch.allclose(a, audio, atol=1e-3)
    assert not torch.equal(a, audio_augment(audio, 1.0, generator(2)))


def test_reverberation_and_mixing_only_add_energy():
    """A click in silence: a tail after it, and nothing before it (the reverberation is causal)."""
    log_mel = torch.full((2, 200, 16), -15.0)
    log_mel[:, 50] = 5.0
    audio = (log_mel - CAVMAE_FBANK_MEAN) / CAVMAE_FBANK_STD
    out = audio_augment(audio, 1.0, generator(3)) * CAVMAE_FBANK_STD + CAVMAE_FBANK_MEAN
    peak = out.mean(2).argmax(1)
    assert (peak >= 40).all() and (peak <= 60).all()  # speed changes move the click a little
    for i in range(2):
        p = int(peak[i])
        assert out[i, p + 5:p + 10].mean() > out[i, :max(1, p - 10)].mean() + 1.0


def test_image_augmentation_moves_the_mask_with_the_object():
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    picture = torch.zeros(6, 3, 64, 64)
    picture[:, 2] = 0.8  # blue ground
    mask = torch.zeros(6, 1, 64, 64)
    picture[:, :, 20:40, 10:30] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)  # a red object
    mask[:, :, 20:40, 10:30] = 1
    frames, masks = image_augment((picture - mean) / std, mask, 1.0, generator(4))
    rgb = frames * std + mean
    red = rgb[:, 0] > rgb[:, 2]
    inside = masks[:, 0] > 0.5
    assert inside.sum() > 0 and masks.unique().tolist() == [0.0, 1.0]
    agree = (red == inside).float().mean()
    assert agree > 0.97  # the object's pixels and its mask agree but for the blurred edge
    assert not torch.equal(mask, masks)  # it did zoom


def test_modality_dropout_blanks_one_modality_per_sample():
    batch = {"audio": torch.randn(64, 10, 8), "frames": torch.randn(64, 3, 4, 4),
             "mask_valid": torch.ones(64, dtype=torch.bool)}
    original = {k: v.clone() for k, v in batch.items()}
    modality_dropout(batch, 1.0, generator(5))
    silence = (SILENCE_LOG_ENERGY - CAVMAE_FBANK_MEAN) / CAVMAE_FBANK_STD
    no_audio = (batch["audio"] == silence).flatten(1).all(1)
    no_picture = (batch["frames"] == 0).flatten(1).all(1)
    assert torch.equal(no_audio ^ no_picture, torch.ones(64, dtype=torch.bool))  # exactly one of the two
    assert 16 < int(no_audio.sum()) < 48
    assert torch.equal(batch["mask_valid"], ~no_picture)
    assert torch.equal(batch["audio"][no_picture], original["audio"][no_picture])


def test_stream_composes_new_train_side_clips_every_epoch(small_bench, tmp_path):
    from training.embedded.clips import read_classes
    from training.readers.common import FormatError
    from training.embedded.stream import StreamReader

    labels = read_classes(small_bench)
    stream = StreamReader(small_bench, labels, FbankConfig(num_frames=512), 64, clips=6, seed=0)
    first = [stream.clip(i) for i in range(6)]
    again = stream.clip(2)
    assert np.array_equal(again.frames, first[2].frames) and np.array_equal(again.audio, first[2].audio)
    stream.set_epoch(1)
    assert not np.array_equal(stream.clip(2).audio, first[2].audio)
    train_backgrounds = {b["name"] for b in stream.pack.backgrounds if b["split"] == "train"} | {"scene"}
    train_noises = {n["name"] for n in stream.pack.noises if n["split"] == "train"}
    split_of = {s["name"]: s["split"] for s in stream.pack.stamps}
    for clip in first:
        assert clip.info["background"] in train_backgrounds and clip.info["noise"] in train_noises
        assert {split_of[n] for n in clip.info["stamps"]} == {"train"}
    sample = stream.load(stream.items[0], [3])
    assert sample["frames"].shape == (1, 3, 64, 64) and sample["masks"].shape == (1, 1, 64, 64)
    assert sample["audio"].shape == (512, 128) and sample["target"].sum() >= 1 and sample["mask_valid"].all()
    other = tmp_path / "other"  # a benchmark built from a pack of another recipe
    other.mkdir()
    summary = json.loads((small_bench / "benchmark.json").read_text())
    (other / "benchmark.json").write_text(json.dumps({**summary, "pack_recipe": "another"}))
    with pytest.raises(FormatError, match="not a source pack of the recipe"):
        StreamReader(other, labels, FbankConfig(num_frames=512), 64, clips=6, seed=0)
