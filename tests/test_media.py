import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest
from PIL import Image

from conftest import frame_index, indexed_frames, portrait_phone_clip, tone
from emktd.media import MediaError, load_clip, probe, write_video


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.argmax(spectrum) * rate / audio.size)


FORMATS = [
    ("clip.mp4", "libx264", "aac", 16000),
    ("clip.mov", "libx264", "pcm_s16le", 16000),
    ("clip.mkv", "libx264", "ac3", 48000),
    ("clip.webm", "libvpx-vp9", "libopus", 48000),
    ("clip.avi", "mpeg4", "libmp3lame", 44100),
]


@pytest.mark.parametrize("name,video_codec,audio_codec,rate", FORMATS, ids=[f[0] for f in FORMATS])
def test_containers_and_codecs(make_clip, name, video_codec, audio_codec, rate):
    path = make_clip(name, seconds=2.0, fps=25, video_codec=video_codec, audio_codec=audio_codec,
                     audio_rate=rate, channels=2 if audio_codec == "ac3" else 1)
    clip = load_clip(path, num_frames=8)
    assert clip.frames.shape == (8, 64, 96, 3) and clip.frames.dtype == np.uint8
    assert clip.has_audio and clip.sample_rate_hz == 16000
    assert clip.audio.dtype == np.float32
    assert abs(clip.audio.size - 2.0 * 16000) <= 0.1 * 16000
    assert abs(dominant_hz(clip.audio, 16000) - 440) < 5
    # Frame k is the one on screen at (k + 0.5) * duration / 8.
    expected = np.floor((np.arange(8) + 0.5) * clip.duration_s / 8 * 25 + 1e-6).astype(int)
    decoded = np.array([frame_index(f) for f in clip.frames])
    # AVI stores no presentation times; its MPEG-4 stream shows frame 1 one tick late.
    tolerance = 2 if name.endswith(".avi") else 1
    assert np.abs(decoded - expected).max() <= tolerance, (decoded, expected)
    assert np.all(np.diff(clip.frame_times_s) > 0)


def test_channels_are_averaged_and_resampled(tmp_path):
    rate = 48000
    audio = np.zeros((6, 2 * rate), np.float32)
    audio[0] = tone(1000, 2.0, rate, amplitude=0.6)  # front-left only
    path = write_video(tmp_path / "surround.mkv", indexed_frames(20), 10, audio, rate, "libx264", "pcm_s16le")
    clip = load_clip(path, 2)
    # A plain mean of six channels: amplitude 0.6 / 6 (FFmpeg's downmix would weight it otherwise).
    assert clip.audio.std() * np.sqrt(2) == pytest.approx(0.1, rel=0.02)
    assert abs(dominant_hz(clip.audio, 16000) - 1000) < 5
    assert clip.audio.size == 32000


def test_no_audio_track_gives_silence_and_flag(make_clip):
    clip = load_clip(make_clip("silent.mp4", audio=False), 4)
    assert not clip.has_audio
    assert clip.audio.shape == (32000,) and not clip.audio.any()
    assert any("no audio track" in note for note in clip.notes)


def test_segment(make_clip):
    clip = load_clip(make_clip(seconds=4.0), num_frames=4, start_s=1.0, duration_s=2.0)
    assert clip.audio.size == 32000
    expected = np.floor((1.0 + (np.arange(4) + 0.5) * 0.5) * 25 + 1e-6).astype(int)
    assert [frame_index(f) for f in clip.frames] == pytest.approx(expected, abs=1)
    assert np.all((clip.frame_times_s >= 0) & (clip.frame_times_s < 2.0))


def test_downscale_keeps_aspect(make_clip):
    clip = load_clip(make_clip(size=(240, 320)), 2, max_side=160)
    assert clip.frames.shape[1:] == (120, 160, 3)
    assert clip.source_size == (320, 240)


def test_probe(make_clip):
    info = probe(make_clip(seconds=2.0))
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert (info.width, info.height) == (96, 64)


def test_corrupt_packets_are_skipped(make_clip):
    path = make_clip("clip.avi", seconds=4.0, video_codec="mpeg4", audio_codec="libmp3lame", audio_rate=44100)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.integers(len(data) // 4, 3 * len(data) // 4, 200):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    clip = load_clip(path, 8)
    assert clip.skipped_packets >= 1
    assert clip.frames.shape[0] == 8
    assert any("corrupt packet" in note for note in clip.notes)


def _errors(tmp_path, make_clip):
    good = make_clip(seconds=2.0).read_bytes()
    cases = {}
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases["empty.mp4"] = "empty"
    (tmp_path / "notes.mp4").write_text("these are not frames\n" * 50)
    cases["notes.mp4"] = "not a readable media file"
    (tmp_path / "notes.txt").write_text("FFmpeg would draw this as ANSI art\n" * 50)
    cases["notes.txt"] = "a text file"
    (tmp_path / "half.mp4").write_bytes(good[: len(good) // 2])
    cases["half.mp4"] = "truncated"
    (tmp_path / "header.mp4").write_bytes(good[:200])
    cases["header.mp4"] = "truncated"
    Image.fromarray(indexed_frames(1, 64, 64)[0]).save(tmp_path / "still.png")
    cases["still.png"] = "still image"
    with av.open(str(tmp_path / "speech.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(tone(300, 1.0, 16000)[None], format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    cases["speech.m4a"] = "audio-only"
    cases["missing.mp4"] = "does not exist"
    return cases


def test_bad_files_raise_media_error_naming_file(tmp_path, make_clip):
    for name, reason in _errors(tmp_path, make_clip).items():
        with pytest.raises(MediaError) as info:
            load_clip(tmp_path / name, 4)
        assert name in str(info.value) and reason in str(info.value), str(info.value)


def test_truncated_without_index_is_unreadable(tmp_path):
    # Without +faststart the index (moov) comes last; cutting the file loses it.
    path = tmp_path / "plain.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for image in indexed_frames(50, 64, 64):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 400])
    with pytest.raises(MediaError, match="plain.mp4"):
        load_clip(path, 4)


def test_long_high_resolution_clip_stays_in_bounded_memory(tmp_path):
    """A 60 s 1080p clip: holding its frames would take 3.7 GB; decoding must not."""
    path = tmp_path / "long.mp4"
    fps, seconds = 10, 60
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": "20"})
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for image in indexed_frames(fps * seconds, 1080, 1920):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    script = textwrap.dedent(f"""
        import json
        import torch
        from emktd.bench import PeakMemory
        from emktd.media import load_clip
        from conftest import frame_index
        with PeakMemory(torch.device("cpu")) as peak:
            clip = load_clip({str(path)!r}, 10, max_side=512)
        print(json.dumps({{"growth_mb": peak.mb, "shape": clip.frames.shape,
                          "index": [frame_index(f) for f in clip.frames], "decoded": clip.decoded_frames}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).parent))
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [10, 288, 512, 3]
    assert 0 < result["growth_mb"] < 200, result
    # Seeking lands on the frame shown at (k + 0.5) * 6 s, decoding at most a keyframe interval
    # (20 frames) per sampled frame instead of all 600.
    assert result["index"] == [int((k + 0.5) * 6 * fps) for k in range(10)]
    assert result["decoded"] <= 10 * 21, result


def test_a_rotated_phone_clip_is_decoded_upright(tmp_path):
    clip = load_clip(portrait_phone_clip(tmp_path / "portrait.mp4"), 3)
    assert clip.rotation == 270 and clip.source_size == (48, 96)
    assert clip.frames.shape == (3, 96, 48, 3)  # portrait, as the phone showed it
    top, bottom = clip.frames[:, :24].mean(), clip.frames[:, 24:].mean()
    assert top > 200 and bottom < 40, (top, bottom)


def test_a_video_track_shorter_than_its_sound_holds_its_last_frame(tmp_path):
    """A WebM whose VP9 video (1.96 s) stops before its Opus sound (5.06 s): every packet decodes, so
    it is analysed whole, the last frame held over the rest of the sound."""
    path = write_video(tmp_path / "short-video.webm", indexed_frames(49, 64, 96), 25, tone(440, 5.06, 48000), 48000,
                       "libvpx-vp9", "libopus", options={"deadline": "realtime", "cpu-used": "8"})
    clip = load_clip(path, 5, duration_s=5.12)
    assert abs(clip.source_duration_s - 5.06) < 0.05 and abs(clip.duration_s - 5.06) < 0.05
    shown = [min(48, int((k + 0.5) * clip.duration_s / 5 * 25 + 1e-6)) for k in range(5)]
    assert shown[1:] == [shown[1], 48, 48, 48]  # frames at 0.5 and 1.5 s, then the last one held
    assert [frame_index(f) for f in clip.frames] == shown
    assert abs(clip.video_end_s - 1.96) < 0.05
    assert any("video track ends at 1.96 s" in note and "held" in note for note in clip.notes), clip.notes
    assert clip.has_audio and np.abs(clip.audio[int(4.5 * 16000):]).max() > 0.2  # the sound to its end


def test_one_picture_with_a_second_of_sound_is_read_for_the_whole_second(tmp_path):
    path = write_video(tmp_path / "one-frame.mp4", indexed_frames(1, 64, 96), 25, tone(440, 1.0, 16000), 16000)
    clip = load_clip(path, 5, duration_s=5.12)
    assert abs(clip.duration_s - 1.0) < 0.05 and clip.frames.shape[0] == 5
    assert clip.audio.size == int(round(clip.duration_s * 16000)) and np.abs(clip.audio[-1600:]).max() > 0.2
