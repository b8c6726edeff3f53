"""Each loader on a small fixture that the test writes itself in that dataset's layout."""

import csv
import json
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import indexed_frames, tone
from training.readers.avsbench import MS3Dataset as AVSBenchMS3Dataset
from training.readers.avsbench import S4Dataset as AVSBenchS4Dataset
from training.readers.cavmae import CavMaeJsonDataset
from training.readers.common import ClipCache, FormatError, collate, read_wav
from training.readers.vggsound import VGGSoundDataset
from emktd.features import FbankConfig
from emktd.media import write_video

FBANK = FbankConfig(num_frames=256)


def wav_file(path, seconds=5.0, rate=16000, channels=1, freq=440.0):
    audio = np.stack([tone(freq, seconds, rate)] * channels, axis=1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((audio * 32767).astype("<i2").tobytes())


def png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def test_read_wav_resamples_and_mixes(tmp_path):
    wav_file(tmp_path / "a.wav", seconds=1.0, rate=44100, channels=2, freq=1000)
    audio = read_wav(tmp_path / "a.wav")
    assert audio.shape == (16000,) and abs(np.abs(np.fft.rfft(audio)).argmax() - 1000) <= 2
    (tmp_path / "bad.wav").write_bytes(b"RIFF....")
    with pytest.raises(FormatError, match="bad.wav"):
        read_wav(tmp_path / "bad.wav")


def test_vggsound(tmp_path):
    clips = tmp_path / "video"
    clips.mkdir()
    rows = [("abcdefghijk", 30, "dog barking", "test"), ("abcdefghijk", 30, "donkey, ass braying", "test"),
            ("lmnopqrstuv", 0, "dog barking", "test"), ("missingclip", 10, "dog barking", "test"),
            ("brokenclip0", 0, "donkey, ass braying", "test"), ("trainonly00", 0, "dog barking", "train")]
    with open(tmp_path / "vggsound.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert '"donkey, ass braying"' in (tmp_path / "vggsound.csv").read_text()
    for name in ("abcdefghijk_000030", "lmnopqrstuv_000000"):
        write_video(clips / f"{name}.mp4", indexed_frames(20, 64, 64), 10, tone(440, 2.0, 16000), 16000)
    (clips / "brokenclip0_000000.mp4").write_text("not a video")
    data = VGGSoundDataset(tmp_path / "vggsound.csv", clips, "test", fbank=FBANK, image_size=32, num_frames=4)
    assert data.labels == ["dog barking", "donkey, ass braying"]
    assert data.manifest.rows == 4 and data.manifest.missing == ["missingclip_000010.mp4"]
    samples = [data[i] for i in range(len(data))]
    batch, errors = collate(samples)
    assert [e["id"] for e in errors] == ["brokenclip0_000000"] and "brokenclip0" in next(iter(data.manifest.corrupt))
    assert batch["audio"].shape == (2, 256, 128) and batch["frames"].shape == (2, 1, 3, 32, 32)
    torch.testing.assert_close(batch["target"], torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert "4 clips listed, 1 missing, 1 unreadable, 2 used" in data.manifest.report()


def test_vggsound_rejects_a_header(tmp_path):
    (tmp_path / "vggsound.csv").write_text("youtube_id,start_seconds,label,split\nabc,0,dog,train\n")
    with pytest.raises(FormatError, match="no header"):
        VGGSoundDataset(tmp_path / "vggsound.csv", tmp_path, "train")


def test_cavmae_json(tmp_path):
    with open(tmp_path / "labels.csv", "w") as f:
        f.write("index,mid,display_name\n1,/m/b,\"donkey, ass braying\"\n0,/m/a,dog barking\n")
    entries = []
    for vid, labels in (("clip1", "/m/a"), ("clip2", "/m/a,/m/b"), ("gone", "/m/b")):
        wav = tmp_path / "audio" / f"{vid}.wav"
        wav.parent.mkdir(exist_ok=True)
        if vid != "gone":
            wav_file(wav, seconds=2.0)
            for k in range(10):
                png(tmp_path / "frames" / f"frame_{k}" / f"{vid}.jpg", indexed_frames(10, 48, 64)[k])
        entries.append({"video_id": vid, "wav": str(wav), "video_path": str(tmp_path / "frames"), "labels": labels})
    (tmp_path / "data.json").write_text(json.dumps({"data": entries}))
    data = CavMaeJsonDataset(tmp_path / "data.json", tmp_path / "labels.csv", fbank=FBANK, image_size=32)
    assert data.labels == ["dog barking", "donkey, ass braying"]
    assert data.manifest.missing == ["gone"]
    batch, errors = collate([data[0], data[1]])
    assert not errors and batch["frames"].shape == (2, 1, 3, 32, 32)
    torch.testing.assert_close(batch["target"], torch.tensor([[1.0, 0.0], [1.0, 1.0]]))


def s4_fixture(tmp_path):
    """An S4 folder: vid_a (train, first mask only), vid_b (test, five masks), vid_c (listed, no files)."""
    root = tmp_path / "Single-source"
    data = root / "s4_data"
    root.mkdir(parents=True)
    with open(root / "s4_meta_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "start_time", "category", "split"])
        w.writerows([["vid_a", 0, "dog", "train"], ["vid_b", 0, "female_singing", "test"], ["vid_c", 0, "dog", "test"]])
    for split, cat, name in (("train", "dog", "vid_a"), ("test", "female_singing", "vid_b")):
        for k in range(1, 6):
            png(data / "visual_frames" / split / cat / name / f"{name}_{k}.png", indexed_frames(5, 224, 224)[k - 1])
            if split == "test" or k == 1:
                mask = np.zeros((224, 224), np.uint8)
                mask[: 56 * k] = 255
                png(data / "gt_masks" / split / cat / name / f"{name}_{k}.png", mask)
        (data / "audio_wav" / split / cat).mkdir(parents=True)
        wav_file(data / "audio_wav" / split / cat / f"{name}.wav")
    return root


def test_avsbench_s4(tmp_path):
    root = s4_fixture(tmp_path)
    train = AVSBenchS4Dataset(root, "train", labels=["dog", "female_singing"], fbank=FBANK, image_size=112)
    sample = train[0]
    assert sample["frames"].shape == (5, 3, 112, 112) and sample["masks"].shape == (5, 1, 112, 112)
    assert sample["mask_valid"].tolist() == [True, False, False, False, False]  # S4 train: first frame only
    assert sample["masks"][0].mean().item() == pytest.approx(0.25)
    test = AVSBenchS4Dataset(root, "test", labels=["dog", "female_singing"], fbank=FBANK, image_size=112,
                             audio_windows=5)
    assert test.manifest.missing == ["vid_c"]
    sample = test[0]
    assert sample["mask_valid"].all() and sample["audio"].shape == (5, 256, 128)
    assert [round(m.mean().item(), 2) for m in sample["masks"]] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert sample["target"].tolist() == [0.0, 1.0]


def test_avsbench_ms3_palette_masks(tmp_path):
    root = tmp_path / "Multi-sources"
    data = root / "ms3_data"
    root.mkdir()
    (root / "ms3_meta_data.csv").write_text("video_id,split\nvid_m,test\n")
    for k in range(1, 6):
        png(data / "visual_frames" / "vid_m" / f"vid_m.mp4_{k}.png", indexed_frames(5, 224, 224)[k - 1])
        mask = Image.fromarray((np.arange(224)[None, :].repeat(224, 0) < 112).astype(np.uint8)).convert("P")
        mask.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        (data / "gt_masks" / "test" / "vid_m").mkdir(parents=True, exist_ok=True)
        mask.save(data / "gt_masks" / "test" / "vid_m" / f"vid_m_{k}.png")
    (data / "audio_wav" / "test").mkdir(parents=True)
    wav_file(data / "audio_wav" / "test" / "vid_m.wav")
    ms3 = AVSBenchMS3Dataset(root, "test", fbank=FBANK, image_size=224)
    sample = ms3[0]
    assert sample["masks"].shape == (5, 1, 224, 224) and sample["masks"].mean().item() == pytest.approx(0.5)
    assert sample["mask_valid"].all()


def test_avsbench_wrong_layout(tmp_path):
    with pytest.raises(FormatError, match="AVSBench layout"):
        AVSBenchS4Dataset(tmp_path, "test")


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert (torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key]), key


def test_avsbench_clip_cache_gives_what_decoding_gives(tmp_path, monkeypatch):
    root = s4_fixture(tmp_path)
    common = dict(labels=["dog", "female_singing"], fbank=FBANK, image_size=112)
    cache = tmp_path / "clips"
    for split, windows in (("train", None), ("test", 5)):
        plain = AVSBenchS4Dataset(root, split, audio_windows=windows, **common)
        cached = AVSBenchS4Dataset(root, split, audio_windows=windows, **common)
        assert cached.use_clip_cache(cache)
        item = plain.items[0]
        for frames in ([2], [0], None, [4, 1]):  # a miss fills the whole clip; the rest are hits
            _same(plain.load(item, frames), cached.load(item, frames))
    assert len(list(cache.glob("*/*.npz"))) == 2  # one entry per clip (train and test apart)
    assert len({p.parent for p in cache.glob("*/*.npz")}) == 2  # audio windows or not: another folder

    # a new reader reads the entry back without decoding
    reread = AVSBenchS4Dataset(root, "train", **common)
    reread.use_clip_cache(cache)
    expected = AVSBenchS4Dataset(root, "train", **common).load(reread.items[0], [0])
    monkeypatch.setattr(AVSBenchS4Dataset, "decode", lambda *a: pytest.fail("decoded a cached clip"))
    _same(reread.load(reread.items[0], [0]), expected)
    monkeypatch.undo()

    # a changed source file (a rebuilt dataset) is decoded again, as is an entry cut short
    wav = reread.items[0]["wav"]
    wav_file(wav, freq=1000.0)
    fresh = AVSBenchS4Dataset(root, "train", **common).load(reread.items[0], [0])
    assert not torch.equal(fresh["audio"], expected["audio"])
    _same(reread.load(reread.items[0], [0]), fresh)
    entry = next(iter(reread.clip_cache.folder.glob("*.npz")))
    entry.write_bytes(entry.read_bytes()[:100])
    _same(reread.load(reread.items[0], [0]), fresh)
    assert not list(cache.glob("*/*tmp*"))  # no temporary file is left behind


def test_clip_cache_stamp_marks_missing_files(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    stamp = ClipCache.stamp([tmp_path / "a", tmp_path / "b"])
    assert stamp[0, 0] == 3 and stamp[1].tolist() == [-1, -1]
