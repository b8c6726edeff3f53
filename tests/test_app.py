"""The demo's handler, called as a plain function on clips the tests make and on the example clips."""

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import app
from conftest import indexed_frames, tone
from emktd.media import probe, write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return app.Demo(backend="onnx", out_dir=root / "out", onnx_cache=root / "onnx")


def outputs(values) -> dict:
    assert len(values) == len(app.Demo.OUTPUTS)
    return dict(zip(app.Demo.OUTPUTS, values))


def assert_analysed(out: dict, demo) -> None:
    for name in ("teacher", "student"):
        label = out[f"{name}_label"]
        assert len(label) == 5 and all(k in demo.teacher.labels for k in label)
        assert 0 < sum(label.values()) <= 1.0 + 1e-5
        video = Path(out[f"{name}_video"])
        info = probe(video)
        assert info.video_codec == "h264" and video.suffix == ".mp4"
        parameters = getattr(demo, name).parameters
        assert f"{parameters:,} parameters" in out[f"{name}_info"]
        for stage in ("decode", "features", "model", "overlay video", "total"):
            assert f"| {stage} |" in out[f"{name}_info"] or f"**{stage}**" in out[f"{name}_info"]
    teacher_top, student_top = next(iter(out["teacher_label"])), next(iter(out["student_label"]))
    assert ("agrees" in out["agreement"]) == (teacher_top == student_top)
    assert "Mask IoU, teacher vs student:" in out["agreement"]


def test_models_load_once_and_have_the_bundled_sizes(demo):
    assert demo.student.backend == "onnx" and demo.teacher.backend == "torch"
    assert demo.student.parameters <= 0.06 * demo.teacher.parameters
    assert demo.teacher.labels == tuple((REPO / "weights" / "teacher" / "labels.txt").read_text().split())


def test_a_clip_made_with_pyav(demo, make_clip):
    out = outputs(demo.handle(str(make_clip("ok.mp4", seconds=5.0, size=(120, 160)))))
    assert_analysed(out, demo)
    assert "Analysed 5.0 s" in out["status"] and "Note" not in out["status"]
    if demo.monitor is not None:
        assert set(out["monitor"]) == {"audio", "visual", "fused"}
        assert all(0 < w <= 1 for w in out["monitor"].values())


@pytest.mark.parametrize("example", app.examples(), ids=lambda p: Path(p).name)
def test_example_clips(demo, example):
    assert Path(example).stat().st_size < 2 * 2**20
    out = outputs(demo.handle(example))
    assert_analysed(out, demo)
    # On seen-instance clips whose sound tells the class, a sounding class is among the teacher's
    # top 5 (the ground truth is the benchmark's record, written in the examples' notice; the
    # teacher's seen-instance top-1 there is 85-98 %); on new instances it may not be (see
    # docs/results.md), so nothing is asserted there.
    stem = Path(example).stem
    sounding, mode = stem.rsplit("-", 1)[0].split("-"), stem.rsplit("-", 1)[1]
    if mode not in ("visual", "new"):
        assert set(out["teacher_label"]) & set(sounding)


def test_no_audio_track_is_processed_with_a_note(demo, make_clip):
    out = outputs(demo.handle(str(make_clip("silent.mp4", seconds=5.0, audio=False))))
    assert_analysed(out, demo)
    assert "No usable sound" in out["status"] and "no audio track" in out["status"]


def test_long_clip_analyses_its_first_window(demo, make_clip):
    out = outputs(demo.handle(str(make_clip("long.mp4", seconds=150.0, fps=2, size=(32, 48)))))
    assert_analysed(out, demo)
    assert "2.5 min long" in out["status"] and "first 5.1 s" in out["status"]


def test_4k_clip_is_downscaled_with_a_note(demo, make_clip):
    out = outputs(demo.handle(str(make_clip("uhd.mp4", seconds=1.0, fps=4, size=(2160, 3840)))))
    assert_analysed(out, demo)
    assert "3840x2160" in out["status"] and "512x288" in out["status"]
    assert "1.0 s long, shorter than" in out["status"]


def test_corrupt_stream_is_processed_with_a_note(demo, make_clip):
    path = make_clip("damaged.avi", seconds=5.0, video_codec="mpeg4", audio_codec="libmp3lame", audio_rate=44100)
    data = bytearray(path.read_bytes())
    for i in np.random.default_rng(0).integers(len(data) // 4, 3 * len(data) // 4, 200):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    out = outputs(demo.handle(str(path)))
    assert_analysed(out, demo)
    assert "corrupt packet(s) were skipped" in out["status"]


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        wave = tone(440, 1.0, 16000)
        for start in range(0, wave.size, 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _truncated(path: Path) -> Path:
    with av.open(str(path), "w") as container:  # no +faststart: the index comes last
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for image in indexed_frames(50, 64, 64):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    path.write_bytes(path.read_bytes()[:-400])
    return path


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 50)
    image = tmp_path / "photo.png"
    Image.fromarray(indexed_frames(1, 64, 64)[0]).save(image)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    return {"text": (text, "not a readable media file"), "image": (image, "still image"),
            "audio only": (_audio_only(tmp_path / "song.m4a"), "audio-only"),
            "empty": (empty, "the file is empty"),
            "truncated": (_truncated(tmp_path / "cut.mp4"), "cut.mp4")}


def test_bad_input_gets_a_message_and_the_next_request_works(demo, make_clip, tmp_path, monkeypatch):
    for kind, (path, expected) in bad_files(tmp_path).items():
        out = outputs(demo.handle(str(path)))
        assert out["status"].startswith("**Cannot use this file.**"), kind
        assert path.name in out["status"] and expected in out["status"], (kind, out["status"])
        assert out["teacher_label"] is None and out["student_video"] is None
    assert "Upload a video clip" in outputs(demo.handle(None))["status"]
    big = make_clip("big.mp4", seconds=2.0)
    monkeypatch.setattr(demo, "max_bytes", big.stat().st_size - 1)
    out = outputs(demo.handle(str(big)))
    assert "big.mp4" in out["status"] and "upload limit" in out["status"]
    monkeypatch.undo()
    assert_analysed(outputs(demo.handle(str(big))), demo)


def test_an_unexpected_error_is_reported_not_raised(demo, make_clip, monkeypatch):
    def broken(clip):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(demo.student, "predict", broken)
    out = outputs(demo.handle(str(make_clip(seconds=1.0))))
    assert "Something went wrong" in out["status"] and "out of memory" in out["status"]


def test_old_outputs_are_deleted(demo, make_clip, monkeypatch):
    clip = str(make_clip(seconds=1.0))
    first = Path(outputs(demo.handle(clip))["teacher_video"]).parent
    assert first.is_dir()
    monkeypatch.setattr(demo, "keep_outputs_s", 0.0)
    second = Path(outputs(demo.handle(clip))["teacher_video"]).parent
    assert not first.exists() and second.is_dir()


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        app.parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--host", "--port", "--teacher", "--student", "--backend", "--device", "Hub"):
        assert option in text


def test_examples_carry_their_licence_notice():
    notice = (REPO / "examples" / "README.md").read_text()
    assert "GPL-2+" in notice and "GPL-3+" in notice and "CC0" in notice
    for example in app.examples():
        assert Path(example).name in notice
    assert sum(Path(p).stat().st_size for p in app.examples()) <= 2 * 2**20


def test_tiny_frames_are_refused_with_their_size(demo, tmp_path):
    tiny = write_video(tmp_path / "dot.mkv", np.full((20, 1, 1, 3), 128, np.uint8), 10, tone(440, 2.0, 16000), 16000,
                       "ffv1", "flac", pixel_format="yuv444p")
    out = outputs(demo.handle(str(tiny)))
    assert out["status"].startswith("**Cannot use this file.**")
    assert "dot.mkv" in out["status"] and "1x1 pixels" in out["status"] and "16x16" in out["status"]


def test_an_animated_gif_is_a_silent_video_and_a_still_one_is_refused(demo, tmp_path):
    pictures = [Image.fromarray(frame) for frame in indexed_frames(12, 64, 64)]
    pictures[0].save(tmp_path / "moving.gif", save_all=True, append_images=pictures[1:], duration=100, loop=0)
    out = outputs(demo.handle(str(tmp_path / "moving.gif")))
    assert_analysed(out, demo)
    assert "No usable sound" in out["status"]
    pictures[0].save(tmp_path / "still.gif")
    out = outputs(demo.handle(str(tmp_path / "still.gif")))
    assert "still.gif" in out["status"] and "still image (a GIF of one frame)" in out["status"]


def test_a_damaged_monitor_turns_the_entropy_view_off_and_says_why(tmp_path, make_clip):
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(REPO / "weights" / "teacher", teacher)
    (teacher / "monitor.safetensors").write_bytes(b"not safetensors")
    demo = app.Demo(teacher=teacher, backend="torch", out_dir=tmp_path / "out")
    assert demo.monitor is None and "monitor.safetensors" in demo.monitor_problem
    out = outputs(demo.handle(str(make_clip(seconds=1.0))))
    assert out["status"].startswith("Analysed") and out["monitor"] is None
    (teacher / "monitor.json").write_text("[1, 2")
    demo = app.Demo(teacher=teacher, backend="torch", out_dir=tmp_path / "out2")
    assert demo.monitor is None and "monitor.json" in demo.monitor_problem


@pytest.mark.parametrize("argv,expected", [
    (["--max-upload-mb", "-1"], "--max-upload-mb: expected a number above 0"),
    (["--max-upload-mb", "lots"], "--max-upload-mb: expected a number"),
    (["--concurrency", "0"], "--concurrency: expected a number above 0"),
    (["--port", "70000"], "--port: expected a port from 0 to 65535"),
])
def test_bad_options_stop_with_a_message(capsys, argv, expected):
    with pytest.raises(SystemExit):
        app.parser().parse_args(argv)
    assert expected in capsys.readouterr().err


def test_fractional_upload_limits_are_taken():
    args = app.parser().parse_args(["--max-upload-mb", "1.5"])
    assert args.max_upload_mb == 1.5 and args.backend == "auto"
    script = app.upload_limit_script(int(1.5 * 2**20))
    assert "const limit = 1572864" in script and "1.5 MB" in script
