"""The demo's handler, called as a plain function on clips the tests make and on the example clips."""

import os
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import app
from conftest import indexed_frames, plain, tone
from emktd.media import probe, write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return app.Demo(backend="onnx", out_dir=root / "out", onnx_cache=root / "onnx")


def outputs(values) -> dict:
    """The handler's outputs by name, Markdown ones as the characters they show (:func:`plain`)."""
    assert len(values) == len(app.Demo.OUTPUTS)
    return {name: plain(value) if app.OUTPUT_KINDS[name] == "markdown" else value
            for name, value in zip(app.Demo.OUTPUTS, values)}


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
    path = make_clip("ok.mp4", seconds=5.0, size=(120, 160))
    out = outputs(demo.handle(str(path)))
    assert_analysed(out, demo)
    assert "Analysed 5.0 s" in out["status"] and "Note" not in out["status"]
    assert demo.monitor is not None  # the bundled teacher carries its monitor
    weights = demo.analyze(path).monitor
    assert set(weights) == {"audio", "visual", "fused"} and all(0 < w <= 1 for w in weights.values())
    # shown as one trust weight per modality's tokens, each with its bar, not as a classification
    for modality, weight in weights.items():
        row = next(line for line in out["monitor"].splitlines() if line.startswith(f"| {app.MODALITY_NAMES[modality]} |"))
        assert f"| {weight:.2f} |" in row and row.count("█") == round(20 * weight)


@pytest.mark.parametrize("example", app.examples(), ids=lambda p: Path(p).name)
def test_example_clips(demo, example):
    assert Path(example).stat().st_size < 2 * 2**20
    out = outputs(demo.handle(example))
    assert_analysed(out, demo)
    # On seen-instance clips whose sound tells the class, a sounding class is among the teacher's
    # top 5 (the ground truth is the benchmark's record, written in the examples' notice; the
    # teacher's seen-instance top-1 there is 85-98 %); on new instances it may not be (see
    # docs/results.md), nor on the photographs (new pictures), so nothing is asserted there.
    stem = Path(example).stem
    sounding, mode = stem.rsplit("-", 1)[0].split("-"), stem.rsplit("-", 1)[1]
    if mode not in ("visual", "new", "photo"):
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
    monkeypatch.setattr(demo.storage, "keep_s", 0.0)
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
    assert out["status"].startswith("Analysed") and out["monitor"] == ""
    assert any("The entropy view is off" in n and "monitor.safetensors" in n for n in demo.notices)
    (teacher / "monitor.json").write_text("[1, 2")
    demo = app.Demo(teacher=teacher, backend="torch", out_dir=tmp_path / "out2")
    assert demo.monitor is None and "monitor.json" in demo.monitor_problem


@pytest.mark.parametrize("argv,expected", [
    (["--max-upload-mb", "-1"], "--max-upload-mb: expected a number from 0.1 to 100000, got -1"),
    (["--max-upload-mb", "lots"], "--max-upload-mb: expected a number from 0.1 to 100000, got 'lots'"),
    (["--max-upload-mb", "inf"], "--max-upload-mb: expected a number from 0.1 to 100000, got inf"),
    (["--max-upload-mb", "1e400"], "--max-upload-mb: expected a number from 0.1 to 100000, got 1e400"),
    (["--max-upload-mb", "nan"], "--max-upload-mb: expected a number from 0.1 to 100000, got nan"),
    (["--max-upload-mb", "1e-9"], "--max-upload-mb: expected a number from 0.1 to 100000, got 1e-9"),
    (["--concurrency", "0"], "--concurrency: expected a whole number from 1 to 64, got 0"),
    (["--port", "70000"], "--port: expected a whole number from 1 to 65535, got 70000"),
    (["--port", "0"], "--port: expected a whole number from 1 to 65535, got 0"),
    (["--keep-minutes", "0"], "--keep-minutes: expected a number from 0.1 to 10080, got 0"),
    (["--device", "gpu"], "--device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_bad_options_stop_with_a_message(capsys, argv, expected):
    with pytest.raises(SystemExit):
        app.parser().parse_args(argv)
    assert expected in capsys.readouterr().err


def _checked(argv):
    p = app.parser()
    app.check_options(p, p.parse_args(argv))


def test_options_the_types_cannot_check_stop_with_a_message_before_the_models_load(capsys, monkeypatch):
    import socket

    import torch

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit):
            _checked(["--port", str(port)])
        assert f"--port {port}: already in use on 127.0.0.1" in capsys.readouterr().err
    for host in ("192.0.2.1", "8.8.8.8"):  # addresses no interface here has (TEST-NET-1, a public one)
        with pytest.raises(SystemExit):
            _checked(["--host", host, "--port", str(port)])
        assert f"--host {host}: not an address of this machine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _checked(["--host", "no-such-host.invalid"])
    assert "--host no-such-host.invalid: not a known address" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _checked(["--max-upload-mb", "10", "--max-stored-mb", "5"])
    assert "--max-stored-mb: expected at least --max-upload-mb (10), got 5" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        _checked(["--device", "cuda"])
    assert "--device cuda: no CUDA GPU is available here" in capsys.readouterr().err
    _checked(["--port", str(port), "--device", "cpu"])  # free again: no message
    assert capsys.readouterr().err == ""


def test_fractional_upload_limits_are_taken():
    args = app.parser().parse_args(["--max-upload-mb", "1.5"])
    assert args.max_upload_mb == 1.5 and args.backend == "auto"
    script = app.upload_limit_script(int(1.5 * 2**20))
    assert "const limit = 1572864" in script and "1.5 MB" in script


# ------------------------------------------------------------------ clips that were refused or misread

def test_a_portrait_phone_clip_is_analysed_upright_and_its_overlay_is_portrait(demo, tmp_path):
    from conftest import portrait_phone_clip

    out = outputs(demo.handle(str(portrait_phone_clip(tmp_path / "phone.mp4", seconds=2.0))))
    assert_analysed(out, demo)
    for name in ("teacher", "student"):
        info = probe(out[f"{name}_video"])
        assert (info.width, info.height) == (48, 96)  # as the phone showed it, not as it was coded


def test_a_webm_whose_video_stops_before_its_sound_is_analysed_with_a_note(demo, tmp_path):
    path = write_video(tmp_path / "short-video.webm", indexed_frames(49, 64, 96), 25, tone(440, 5.06, 48000), 48000,
                       "libvpx-vp9", "libopus", options={"deadline": "realtime", "cpu-used": "8"})
    out = outputs(demo.handle(str(path)))
    assert_analysed(out, demo)
    assert "Analysed 5.1 s" in out["status"], out["status"]
    assert "video track ends at 1.96 s" in out["status"] and "last frame" in out["status"]


def test_one_frame_with_a_second_of_sound_is_analysed_for_the_second(demo, tmp_path):
    path = write_video(tmp_path / "one-frame.mp4", indexed_frames(1, 64, 96), 25, tone(440, 1.0, 16000), 16000)
    out = outputs(demo.handle(str(path)))
    assert_analysed(out, demo)
    assert "Analysed 1.0 s" in out["status"], out["status"]
    with av.open(out["student_video"]) as container:  # the overlay keeps the whole second of sound
        audio = container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(1.0, abs=0.1)


# ------------------------------------------------------------------ what a visitor controls, escaped

def test_markdown_in_a_file_name_is_shown_as_typed(demo, tmp_path):
    path = tmp_path / "**bold** [link](evil.example) <img src=x onerror=alert(1)> $$x$$ www.evil.example.mp4"
    path.write_text("not a video\n" * 50)
    status = dict(zip(app.OUTPUTS, demo.handle(str(path))))["status"]  # as sent to the page, escaped
    assert status.startswith("**Cannot use this file.** ")
    shown = status.removeprefix("**Cannot use this file.** ")
    assert "**" not in shown.replace("\\*", "") and "](" not in shown.replace("\\]\\(", "")
    import markdown_it

    html = markdown_it.MarkdownIt("commonmark").render(shown)
    assert "<a" not in html and "<strong>" not in html and "<img" not in html
    assert "www\\.evil\\.example" in shown  # GFM's autolinks need "www." as typed
    assert "**bold** [link](evil.example) &lt;img src=x onerror=alert(1)&gt; $$x$$ www.evil.example.mp4" in html


def test_escape_leaves_letters_and_digits_alone():
    assert app.escape("cat 3") == "cat 3"
    assert app.escape("a_b*c") == "a\\_b\\*c"
    assert app.escape("two\nlines") == "two lines"


def test_a_student_whose_weights_hold_nan_is_refused_at_load(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from emktd.hub import ModelLoadError

    student = tmp_path / "student"
    shutil.copytree(REPO / "weights" / "student", student, ignore=shutil.ignore_patterns("model.onnx"))
    state = load_file(student / "model.safetensors")
    name = sorted(state)[0]
    state[name] = state[name] * float("nan")
    save_file(state, str(student / "model.safetensors"))
    with pytest.raises(ModelLoadError) as info:
        app.Demo(student=student, backend="torch", out_dir=tmp_path / "out")
    assert str(student / "model.safetensors") in str(info.value) and "NaN or infinite" in str(info.value)


# ------------------------------------------------------------------ what visitors leave

def test_storage_bounds_bytes_and_files_and_deletes_old_files(tmp_path):
    storage = app.Storage(tmp_path / "files", max_bytes=1000, max_files=3, keep_s=60)
    (storage.root / "a").mkdir()
    (storage.root / "a" / "up.mp4").write_bytes(b"x" * 600)
    assert storage.usage() == (600, 1)
    assert storage.admit(300) is None  # 900 of 1000
    refusal = storage.admit(200)  # 600 held + 300 on its way + 200 > 1000
    assert refusal and "at most 1 MB" not in refusal and "Try again" in refusal
    storage.release(300)
    assert storage.admit(200) is None and storage.admit(50) is None
    assert "in 3 files" in storage.admit(10)  # 1 file held, 2 on their way: the count is full
    storage.release(200)
    storage.release(50)
    old = time.time() - 120
    (storage.root / "new").mkdir()  # made just now: its file is on its way
    os.utime(storage.root / "a" / "up.mp4", (old, old))
    storage.sweep()  # the old file goes, and the folder it leaves empty; the new empty folder stays
    assert storage.usage() == (0, 0) and [p.name for p in storage.root.iterdir()] == ["new"]
    os.utime(storage.root / "new", (old, old))  # an empty folder that no file came to
    storage.sweep()
    assert list(storage.root.iterdir()) == []


def test_each_request_leaves_its_outputs_in_the_bounded_folder(demo, make_clip):
    before = demo.storage.usage()[1]
    out = outputs(demo.handle(str(make_clip(seconds=1.0))))
    assert Path(out["teacher_video"]).parent.parent == demo.out_dir / "requests"
    assert demo.storage.usage()[1] == before + 2


def _asgi(guard, method, path, body=b"", headers=()):
    """One request through ``guard``: (status, body, whether the app behind it was reached)."""
    import asyncio

    reached, sent = [], []

    async def inner(scope, receive, send):
        message = await receive()
        reached.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard.app = inner

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), reached


def test_the_request_guard_refuses_addresses_and_uploads_over_the_bound(tmp_path):
    import json

    guard = app.RequestGuard(None, app.Storage(tmp_path / "files", max_bytes=1000, max_files=10, keep_s=60))
    for path in ("/gradio_api/file=https://example.invalid/x.mp4", "/gradio_api/file=http://10.0.0.1/x",
                 "/gradio_api/file=//example.invalid/x", "/gradio_api/proxy=https://example.invalid/x",
                 "/gradio_api/file=HTTPS://example.invalid/x"):
        status, body, reached = _asgi(guard, "GET", path)
        assert status == 403 and b"does not fetch" in body and not reached, path
    status, _, reached = _asgi(guard, "GET", "/gradio_api/file=/tmp/gradio/abc/clip.mp4")
    assert status == 200 and reached
    json_type = [(b"content-type", b"application/json")]
    remote = {"data": [{"path": "https://example.invalid/clip.mp4", "meta": {"_type": "gradio.FileData"}}],
              "fn_index": 0, "session_hash": "abc"}
    for body in (remote, {"data": ["https://example.invalid/clip.mp4"]}):
        status, answer, reached = _asgi(guard, "POST", "/gradio_api/queue/join", json.dumps(body).encode(), json_type)
        assert status == 400 and b"example.invalid/clip.mp4" in answer and not reached
    local = {"data": [{"path": "/tmp/gradio/abc/clip.mp4", "url": "http://127.0.0.1:7860/gradio_api/file=/tmp/x",
                       "meta": {"_type": "gradio.FileData"}}], "fn_index": 0, "session_hash": "abc"}
    status, _, reached = _asgi(guard, "POST", "/gradio_api/queue/join", json.dumps(local).encode(), json_type)
    assert status == 200 and reached == [json.dumps(local).encode()]  # the body reaches gradio whole
    upload = [(b"content-type", b"multipart/form-data; boundary=x")]
    status, _, reached = _asgi(guard, "POST", "/gradio_api/upload", b"x" * 900, [*upload, (b"content-length", b"900")])
    assert status == 200 and reached and guard.storage.incoming == {"bytes": 0, "files": 0}  # released after
    (guard.storage.root / "held.mp4").write_bytes(b"x" * 500)
    status, body, reached = _asgi(guard, "POST", "/gradio_api/upload", b"x" * 600, [*upload, (b"content-length", b"600")])
    assert status == 507 and b"Try again" in body and not reached
    status, _, reached = _asgi(guard, "POST", "/gradio_api/upload", b"x", upload)
    assert status == 411 and not reached


def test_gradio_cannot_fetch_a_url_once_fetches_are_closed(tmp_path, monkeypatch):
    import safehttpx
    from gradio import processing_utils

    for module, name in ((processing_utils, "ssrf_protected_download"), (processing_utils, "unsafe_download"),
                         (processing_utils, "save_url_to_cache"), (processing_utils, "async_ssrf_protected_get"),
                         (processing_utils, "async_ssrf_protected_download"), (safehttpx, "get"),
                         (safehttpx, "async_validate_url")):
        monkeypatch.setattr(module, name, getattr(module, name))  # put back after the test
    looked_up = []
    monkeypatch.setattr("socket.getaddrinfo", lambda *a, **k: looked_up.append(a) or 1 / 0)
    app.close_remote_fetches()
    with pytest.raises(app.RemoteFetchRefused, match="does not fetch"):
        processing_utils.ssrf_protected_download("https://example.invalid/x.mp4", str(tmp_path))
    with pytest.raises(app.RemoteFetchRefused):
        processing_utils.unsafe_download("https://example.invalid/x.mp4", str(tmp_path))
    import asyncio

    for call in (processing_utils.async_ssrf_protected_get("https://example.invalid/x"),
                 safehttpx.async_validate_url("example.invalid")):
        with pytest.raises(app.RemoteFetchRefused):
            asyncio.run(call)
    assert looked_up == [] and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the page explains itself

def test_example_labels_name_the_sounding_class_and_the_kind_of_clip():
    assert app.example_label("examples/bear-clean.mp4") == "bear · sound and picture"
    assert app.example_label("x/electric_guitar-frog-multi-new.mp4") == \
        "electric guitar + frog · two sounding objects · new instance"
    assert app.example_label("camel-visual.mp4") == "camel · only the picture tells"
    assert app.example_label("examples/dog-photo.mp4") == "dog · a photograph and its sound"


def test_docs_count_and_weigh_the_examples_as_they_are():
    import re

    text = " ".join((REPO / "docs" / "demo.md").read_text().split())
    found = re.search(r"one of the (\d+) examples from the benchmark's test split in `examples/`, (\d+) KB in all", text)
    assert found, "docs/demo.md no longer says how many examples there are and their size"
    assert int(found[1]) == len(app.examples())
    assert int(found[2]) == round(sum(Path(p).stat().st_size for p in app.examples()) / 1024)


def test_a_typo_in_a_weights_path_is_named_as_a_missing_folder(tmp_path, monkeypatch):
    from emktd.hub import ModelLoadError

    monkeypatch.chdir(REPO)
    with pytest.raises(ModelLoadError) as info:
        app.Demo(teacher="weights/techer", backend="torch", out_dir=tmp_path / "out")
    assert str(info.value).startswith("weights/techer: no such folder (weights/ holds student, teacher)")


def test_a_damaged_graph_beside_the_student_is_replaced_and_the_page_says_so(tmp_path):
    import shutil

    student = tmp_path / "student"
    shutil.copytree(REPO / "weights" / "student", student)
    (student / "model.onnx").write_bytes(b"\x0a\xff damaged" * 100)
    demo = app.Demo(student=student, backend="onnx", out_dir=tmp_path / "out", onnx_cache=tmp_path / "onnx")
    assert demo.student.backend == "onnx"
    assert any(f"{student / 'model.onnx'} is not a readable ONNX graph" in n for n in demo.notices), demo.notices
    ui = app.build_ui(demo)
    shown = [block.value for block in ui.blocks.values() if getattr(block, "elem_id", None) == "notices"]
    assert shown and "not a readable ONNX graph" in plain(shown[0])
