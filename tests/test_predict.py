import numpy as np
import onnx
import pytest
import torch

from emktd.export import DIGEST_KEY, onnx_file, weights_digest
from emktd.hub import save_pretrained
from conftest import indexed_frames, tone
from emktd.media import load_clip, probe, write_video
from emktd.models import create_model
from emktd.monitor import EntropyMonitor, load_monitor, save_monitor
from emktd.overlay import crop_box, display_frames, overlay, overlay_video
from emktd.predict import Predictor, decode, mask_iou, window_s


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("bench-student", num_classes=6, labels=tuple("abcdef"))
    return save_pretrained(model, tmp_path_factory.mktemp("m") / "student")


def test_decode_reads_the_window_only(make_clip):
    path = make_clip("long.mp4", seconds=12.0, fps=10)
    clip, seconds = decode(path, 5, 5.12)
    assert clip.frames.shape[0] == 5 and seconds > 0
    assert clip.frame_times_s.max() < 5.12 and clip.source_duration_s == pytest.approx(12.0, abs=0.2)
    assert clip.audio.size == round(5.12 * 16000)


def test_torch_and_onnx_predictions_agree(student_dir, make_clip, tmp_path):
    clip = load_clip(make_clip(seconds=5.2), 5, duration_s=5.12)
    torch_p = Predictor.load(student_dir, "torch").predict(clip)
    onnx_p = Predictor.load(student_dir, "onnx", onnx_cache=tmp_path / "cache").predict(clip)
    assert torch_p.probabilities.shape == (6,) and torch_p.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(onnx_p.probabilities, torch_p.probabilities, atol=1e-5)
    assert torch_p.masks.shape == (5, 128, 128)
    assert ((onnx_p.masks >= 0.5) == (torch_p.masks >= 0.5)).mean() >= 0.999
    top = torch_p.top(3)
    assert [p for _, p in top] == sorted(torch_p.probabilities, reverse=True)[:3]
    assert {label for label, _ in top} <= set("abcdef")
    assert set(torch_p.seconds) == {"features", "model"}


def test_onnx_file_follows_the_weights(student_dir, tmp_path):
    model = Predictor.load(student_dir).model
    cache = tmp_path / "cache"
    first = onnx_file(student_dir, model, cache)
    assert first.parent.parent == cache  # nothing beside the weights: exported into the cache
    meta = {p.key: p.value for p in onnx.load(str(first)).metadata_props}
    assert meta[DIGEST_KEY] == weights_digest(student_dir)
    assert onnx_file(student_dir, model, cache) == first  # reused, not re-exported
    mtime = first.stat().st_mtime_ns
    # Other weights in the same folder: the cached graph no longer matches and a new one is made.
    torch.manual_seed(1)
    changed = save_pretrained(create_model("bench-student", num_classes=6, labels=tuple("abcdef")), tmp_path / "s2")
    second = onnx_file(changed, Predictor.load(changed).model, cache)
    assert second != first and first.stat().st_mtime_ns == mtime


def test_overlay_tints_only_the_masked_part_of_the_centre_square():
    frames = np.full((1, 60, 100, 3), 100, np.uint8)
    masks = np.zeros((1, 16, 16), np.float32)
    masks[0, :, :8] = 1.0  # left half of what the model saw
    out = overlay(frames, masks)
    top, left, side = crop_box(60, 100)
    assert (top, left, side) == (0, 20, 60)
    # outside the square: dimmed, and a line along its edges, the marks of what the model does not see
    assert (out[0, :, :left - 1] == 45).all() and (out[0, :, left + side + 1:] == 45).all()
    assert (out[0, :, left - 1] == 255).all() and (out[0, :, left + side] == 255).all()
    assert (out[0, 10:50, left + 5:left + 25] != 100).any(axis=-1).all()  # inside the mask
    assert (out[0, 10:50, left + 35:left + side - 2] == 100).all()  # the unmasked half


def test_overlay_video_plays_in_browsers(tmp_path):
    # odd frame sizes (lossless FFV1 allows them; H.264 in yuv420p does not)
    source = write_video(tmp_path / "odd.mkv", indexed_frames(30, 63, 95), 10, tone(440, 3.0, 16000), 16000,
                         "ffv1", "flac", pixel_format="yuv444p")
    clip = load_clip(source, 5)
    assert clip.frames.shape[1:3] == (63, 95)
    masks = np.zeros((5, 16, 16), np.float32)
    masks[:, 4:12, 4:12] = 1
    path = overlay_video(tmp_path / "o.mp4", clip, masks, 3.0)
    info = probe(path)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.width % 2 == 0 and info.height % 2 == 0
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    # one encoded frame per sampled frame (and the last again at the end), each shown for its share
    import av

    with av.open(str(path)) as container:
        times = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    assert times == pytest.approx([0.0, 0.6, 1.2, 1.8, 2.4, 2.999], abs=1e-3)
    # a large clip's overlay is scaled down to the player's size, its aspect kept
    small = overlay_video(tmp_path / "small.mp4", clip, masks, 3.0, max_side=48)
    assert (probe(small).width, probe(small).height) == (48, 32)


def test_an_aac_clip_keeps_its_own_sound_in_the_overlay_video(tmp_path):
    import av

    stereo = np.stack([tone(440, 4.0, 48000), tone(660, 4.0, 48000)])
    source = write_video(tmp_path / "aac.mp4", indexed_frames(40, 64, 96), 10, stereo, 48000)
    clip = load_clip(source, 5, duration_s=3.0)
    masks = np.zeros((5, 16, 16), np.float32)
    path = overlay_video(tmp_path / "o.mp4", clip, masks, 3.0)
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        # the file's own 48 kHz stereo AAC, copied up to the window's end, not the decoded 16 kHz mono
        assert (audio.codec_context.name, audio.rate, audio.channels) == ("aac", 48000, 2)
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert 3.0 <= samples / 48000 <= 3.0 + 2048 / 48000
    with av.open(str(source)) as original, av.open(str(path)) as copied:
        first = [bytes(p) for p in original.demux(audio=0) if p.size][:10]
        assert first == [bytes(p) for p in copied.demux(audio=0) if p.size][:10]  # the same packets



def test_sound_that_cannot_be_copied_is_encoded_instead(tmp_path, monkeypatch):
    import av

    from emktd import media

    source = write_video(tmp_path / "aac.mp4", indexed_frames(40, 64, 96), 10, tone(440, 4.0, 48000), 48000)
    clip = load_clip(source, 5, duration_s=3.0)

    def refuse(*args):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(media, "_copy_audio", refuse)
    path = overlay_video(tmp_path / "o.mp4", clip, np.zeros((5, 16, 16), np.float32), 3.0)
    with av.open(str(path)) as container:  # the decoded 16 kHz mono, encoded
        assert (container.streams.audio[0].rate, container.streams.audio[0].channels) == (16000, 1)


def test_display_frames_keep_the_aspect_and_never_scale_up():
    frames = np.zeros((2, 720, 1280, 3), np.uint8)
    frames[:, 300:420, 560:720] = 255  # a block in the middle stays in the middle
    shown = display_frames(frames)
    assert shown.shape == (2, 360, 640, 3)
    assert shown[:, 150:210, 280:360].min() == 255 and shown[:, :140].max() == 0
    portrait = display_frames(np.zeros((1, 1920, 1080, 3), np.uint8))
    assert portrait.shape == (1, 640, 360, 3)
    small = np.zeros((1, 100, 60, 3), np.uint8)
    assert display_frames(small) is small


def test_mask_iou_by_hand():
    a = np.zeros((2, 4, 4), np.float32)
    b = np.zeros((2, 4, 4), np.float32)
    assert mask_iou(a, b) == 1.0  # both empty
    a[0, :2] = 1  # 8 pixels
    b[0, :, :2] = 1  # 8 pixels, 4 shared
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    big = np.zeros((2, 8, 8), np.float32)
    big[0, :4] = 1  # a at twice the resolution
    assert mask_iou(a, big) == pytest.approx(1.0)


def test_monitor_round_trip(tmp_path):
    config = create_model("bench-student", num_classes=5).config
    monitor = EntropyMonitor(config.embed_dim, 5)
    save_monitor(monitor, tmp_path, lam=0.5)
    loaded, lam = load_monitor(tmp_path, config)
    assert lam == 0.5
    tokens = {m: torch.randn(2, 7, config.embed_dim) for m in ("audio", "visual", "fused")}
    for m, w in monitor.weights(tokens, 0.5).items():
        torch.testing.assert_close(loaded.weights(tokens, 0.5)[m], w)
    assert load_monitor(tmp_path / "none", config) is None


def test_window_is_the_fbank_span():
    assert window_s(create_model("bench-teacher").config) == pytest.approx(5.12)


def test_auto_backend_keeps_the_faster_runtime(student_dir, tmp_path):
    chosen = Predictor.load(student_dir, "auto", onnx_cache=tmp_path / "cache")
    assert set(chosen.timings) == {"torch", "onnx"} and all(t > 0 for t in chosen.timings.values())
    assert chosen.backend == min(chosen.timings, key=chosen.timings.get)
    with pytest.raises(ValueError, match="backend 'tensorrt'"):
        Predictor.load(student_dir, "tensorrt")


def test_a_damaged_graph_beside_the_weights_is_exported_again_with_a_note(student_dir, tmp_path, make_clip):
    import shutil

    folder = tmp_path / "student"
    shutil.copytree(student_dir, folder)
    (folder / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf" * 50)
    predictor = Predictor.load(folder, "onnx", onnx_cache=tmp_path / "cache")
    assert predictor.backend == "onnx" and len(predictor.notes) == 1
    assert f"{folder / 'model.onnx'} is not a readable ONNX graph" in predictor.notes[0]
    assert "a fresh export" in predictor.notes[0]
    clip = load_clip(make_clip(seconds=1.0), 5)
    np.testing.assert_allclose(predictor.predict(clip).probabilities,
                               Predictor.load(folder, "torch").predict(clip).probabilities, atol=1e-5)


def test_a_graph_onnxruntime_refuses_falls_back_to_torch_with_a_note(student_dir, tmp_path, monkeypatch):
    import emktd.predict

    def refuse(path, config):
        raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH")

    monkeypatch.setattr(emktd.predict, "OnnxModel", refuse)
    predictor = Predictor.load(student_dir, "onnx", onnx_cache=tmp_path / "cache")
    assert predictor.backend == "torch" and "INVALID_GRAPH" in predictor.notes[0]
    assert "runs through torch" in predictor.notes[0]
