"""Decode a clip into a few RGB frames and mono 16 kHz audio with PyAV.

Only what the model needs is kept in memory: frames are chosen by timestamp
before they are converted, are downscaled by the converter itself, and long
gaps between the sampled timestamps are crossed with a seek instead of a
decode.  A ten-minute 1080p file therefore costs a handful of frames, not ten
minutes of them.

``load_clip`` is the single entry point; everything a caller can get wrong
(a missing, empty, truncated or non-media file, a still image, an audio-only
file) raises :class:`MediaError` naming the file and the reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from . import SAMPLE_RATE_HZ

__all__ = ["Clip", "MediaError", "load_clip", "load_audio", "probe", "write_video"]

# FFmpeg's "tty" demuxer renders any text file as ANSI art, a video stream: not a clip.
_TEXT_FORMATS = ("tty",)
# Demuxers that read single pictures rather than video streams.
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe")

# Seeking only pays off when the next wanted frame is further away than a
# typical keyframe interval; below that, decoding forward is cheaper.
_SEEK_GAP_S = 2.0
# Frames no other frame refers to are decoded only this close to a wanted time: beyond it,
# no sampled frame can be among them (decode order runs at most a few frames ahead of display).
_SKIP_MARGIN_S = 0.3


class MediaError(ValueError):
    """A file could not be read as a clip. The message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Clip:
    """What :func:`load_clip` returns.

    frames: ``[T, H, W, 3]`` uint8 RGB, sampled uniformly over the clip.
    frame_times_s: ``[T]`` presentation time of each returned frame, seconds from the clip start.
    audio: ``[S]`` float32 mono in [-1, 1] at ``sample_rate_hz``; zeros when ``has_audio`` is False.
    """

    path: str
    frames: np.ndarray
    frame_times_s: np.ndarray
    audio: np.ndarray
    sample_rate_hz: int
    duration_s: float
    has_audio: bool
    source_size: tuple[int, int]  # (width, height) of the decoded video stream
    skipped_packets: int = 0  # corrupt packets that were dropped while decoding
    decoded_frames: int = 0  # video frames decoded to find the sampled ones (seeking keeps this small)
    source_duration_s: float = 0.0  # the whole file's duration (duration_s is the segment read)
    notes: list[str] = field(default_factory=list)
    rotation: int = 0  # counter-clockwise degrees the frames were turned by, as the file's display matrix says
    video_end_s: float | None = None  # where the video track ends, when it ends early and its last frame is held
    start_s: float = 0.0  # where in the file the segment read starts


@dataclass
class MediaInfo:
    path: str
    format_name: str
    duration_s: float
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    size_bytes: int


def _open(path: Path):
    if not path.exists():
        raise MediaError(path, "file does not exist")
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"not a readable media file ({exc.strerror or exc})") from None


def _video_stream(container, path: Path):
    demuxer = container.format.name.split(",")[0]
    if demuxer in _TEXT_FORMATS:
        raise MediaError(path, "not a readable media file (a text file; a video clip is expected)")
    if demuxer in _IMAGE_FORMATS:
        raise MediaError(path, "is a still image; a video clip is expected")
    if demuxer == "gif" and not _animated(path):
        raise MediaError(path, "is a still image (a GIF of one frame); a video clip is expected")
    if not container.streams.video:
        if container.streams.audio:
            raise MediaError(path, "an audio-only file; a video clip with a video stream is expected")
        raise MediaError(path, "no audio or video streams (truncated, or not a media file)")
    return container.streams.video[0]


def _animated(path: Path) -> bool:
    """Whether a GIF holds more than one frame (an animated GIF is read as a silent video)."""
    with av.open(str(path)) as container:
        packets = container.demux(container.streams.video[0])
        return sum(1 for _, packet in zip(range(3), packets) if packet.size) > 1


def _own_duration_s(stream) -> float | None:
    """The stream's own duration: from its header, or Matroska's per-track DURATION tag; None when the
    file states none (the container's duration may then be another track's)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    return None


def _duration_s(container, stream) -> float:
    own = _own_duration_s(stream)
    if own is not None:
        return own
    if container.duration is not None:
        return container.duration / av.time_base
    if stream.frames and stream.average_rate:
        return stream.frames / float(stream.average_rate)
    return 0.0


def probe(path: str | Path) -> MediaInfo:
    """Read a file's container header only: format, duration, frame size and codecs."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        audio = container.streams.audio[0] if container.streams.audio else None
        return MediaInfo(
            path=str(path),
            format_name=container.format.name,
            duration_s=_duration_s(container, stream),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            video_codec=stream.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else None,
            size_bytes=path.stat().st_size,
        )


def _stream_start_s(stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _scan_duration_s(container, stream) -> float:
    """Duration from the last packet's timestamp, reading packets without decoding them."""
    end = 0.0
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and packet.duration is not None:
                end = max(end, float((packet.pts + packet.duration) * packet.time_base))
            elif packet.pts is not None:
                end = max(end, float(packet.pts * packet.time_base))
    except av.error.FFmpegError:
        pass
    return max(0.0, end - _stream_start_s(stream))


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    # Even sizes keep every pixel format's chroma planes whole.
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _timed_frames(container, stream, counter):
    """Yield ``(time_s, frame)`` for every decodable frame from the current position."""
    step_s = 1.0 / float(stream.average_rate or 25)
    time_s = None
    for frame in _decoded(container, stream, counter):
        counter["decoded"] += 1
        time_s = frame.time if frame.time is not None else (0.0 if time_s is None else time_s + step_s)
        yield time_s, frame


def _decode_frames(container, stream, targets_s, size, path, counter, promised_s=None):
    """Pick, for each absolute target time (ascending), the frame on screen at that time.

    That is the last frame starting at or before the target, or the first frame
    when the target precedes every frame; past the last frame of a video track that
    ends before the clip does (a shorter video than sound, one picture with a
    soundtrack), the last frame stays on screen.  Only a track that ends well before
    the duration its own header promises (``promised_s``, absolute) is truncated.
    At most two decoded frames are held at once; only the picked ones are converted
    (downscaled, and turned upright as the display matrix says) to RGB.  Frames
    that no other frame refers to are skipped unless a target is near, and the
    decoder runs without frame threads, whose pipeline would keep decoding what
    is skipped and cost more than it saves for the few frames a clip needs.

    Returns (frames, times, the display matrix's rotation in degrees).
    """
    stream.thread_type = "SLICE"
    time_base = float(stream.time_base)
    # How far past the last decodable frame a target may lie before the file
    # counts as truncated rather than ending on a long last frame.
    step_s = 1.0 / float(stream.average_rate or 25)
    tolerance_s = max(0.5, 3 * step_s)
    frames_rotation = 0.0  # the display matrix's rotation, read off the decoded frames
    frames: list[np.ndarray] = []
    times: list[float] = []
    decoded = None  # generator over (time_s, frame)
    exhausted = False
    current = None  # last frame at or before the target
    upcoming = None  # first frame after the target
    converted = (None, None)  # (frame, ndarray) so a frame picked twice converts once
    for target in targets_s:
        latest = upcoming or current
        ahead_s = target - (latest[0] if latest else 0.0)
        if decoded is None or (not exhausted and ahead_s > _SEEK_GAP_S):
            if ahead_s > _SEEK_GAP_S:
                try:
                    container.seek(int(target / time_base), stream=stream, backward=True)
                    current = upcoming = None
                except av.error.FFmpegError:
                    pass  # unseekable: keep decoding forward
            if decoded is None or current is None:
                decoded = _timed_frames(container, stream, counter)
                exhausted = False
        while upcoming is None or upcoming[0] <= target + 1e-6:
            if upcoming is not None:
                current = upcoming
            # Frames no other frame refers to (B-frames, mostly) are only decoded near a target.
            near = upcoming is None or target - upcoming[0] <= _SKIP_MARGIN_S
            stream.codec_context.skip_frame = "DEFAULT" if near else "NONREF"
            upcoming = next(decoded, None)
            if upcoming is None:
                exhausted = True
                break
        pick = current or upcoming
        if pick is None:
            raise MediaError(path, "no decodable video frames (empty, truncated or corrupt file)")
        if exhausted and target - pick[0] > tolerance_s and promised_s is not None \
                and promised_s - pick[0] > tolerance_s:
            raise MediaError(path, f"truncated or corrupt: video data ends at {pick[0]:.2f} s, "
                                   f"before the {promised_s:.2f} s the stream's duration promises")
        if converted[0] is not pick[1]:
            frames_rotation = pick[1].rotation or 0.0
            converted = (pick[1], _upright(pick[1].to_ndarray(width=size[0], height=size[1], format="rgb24"),
                                           frames_rotation))
        frames.append(converted[1])
        times.append(pick[0])
        if exhausted and target - pick[0] > tolerance_s:  # held past the track's end
            counter["video_end_s"] = pick[0] + step_s
    return np.stack(frames), np.asarray(times, dtype=np.float64), frames_rotation


def _quarter_turns(rotation: float | None) -> int:
    """Counter-clockwise quarter turns of a display matrix's rotation (0 to 3)."""
    return int(round((rotation or 0) / 90.0)) % 4


def _upright(image: np.ndarray, rotation: float | None) -> np.ndarray:
    """A decoded picture turned as its display matrix says it is shown (phones record portrait
    clips as landscape pictures plus a rotation)."""
    turns = _quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _decoded(container, stream, counter):
    """Decode one stream from the current position, skipping packets the decoder rejects.

    A demuxer error ends the stream early, like a truncated file does; the
    callers judge whether what was decoded covers what they need.
    """
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError:
            counter["unreadable"] += 1
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            counter["skipped"] += 1
            continue
        yield from frames


def _mono_chunks(frames, sample_rate_hz: int):
    """Audio frames -> mono float32 chunks at ``sample_rate_hz``, flushed at the end.

    Every channel goes through the resampler and is averaged afterwards: FFmpeg's own downmix
    weights surround channels, a plain mean is what CAV-MAE sees."""
    resampler = av.AudioResampler(format="fltp", rate=sample_rate_hz)
    for frame in frames:
        for out in resampler.resample(frame):
            yield frame, out.to_ndarray().mean(axis=0, dtype=np.float32)
    for out in resampler.resample(None):
        yield None, out.to_ndarray().mean(axis=0, dtype=np.float32)


def _clip_audio(container, path: Path, start_s, span_s, sample_rate_hz, counter, notes: list[str]) -> np.ndarray:
    """The segment's audio from the container the video was read from (sought back to the segment's
    start; a container that cannot seek is opened again), or an empty array with a note why."""
    audio = np.zeros(0, np.float32)
    if not container.streams.audio:
        notes.append("no audio track; using silence")
        return audio
    try:
        stream = container.streams.audio[0]
        try:
            container.seek(int((_stream_start_s(stream) + start_s) / float(stream.time_base)), stream=stream,
                           backward=True)
            audio = _decode_audio(container, stream, start_s, span_s, sample_rate_hz, counter)
        except av.error.FFmpegError:
            with _open(path) as again:
                audio = _decode_audio(again, again.streams.audio[0], start_s, span_s, sample_rate_hz, counter,
                                      seek=start_s > 0)
    except av.error.FFmpegError as exc:
        notes.append(f"audio track cannot be decoded ({exc}); using silence")
    if audio.size == 0 and not notes:
        notes.append("audio track holds no decodable audio; using silence")
    return audio


def _decode_audio(container, stream, start_s, duration_s, sample_rate_hz, counter, seek: bool = False) -> np.ndarray:
    """Decode from the current position (after seeking to ``start_s`` when ``seek``), trimmed to the segment."""
    stream.thread_type = "AUTO"
    stream_start_s = _stream_start_s(stream)
    if seek:
        container.seek(int((stream_start_s + start_s) / float(stream.time_base)), stream=stream, backward=True)
    chunks: list[np.ndarray] = []
    decoded_samples = 0
    first_time_s = None
    end_s = None if duration_s is None else start_s + duration_s
    frames = _decoded(container, stream, counter)
    for frame, chunk in _mono_chunks(frames, sample_rate_hz):
        if first_time_s is None and frame is not None and frame.pts is not None:
            first_time_s = float(frame.pts * frame.time_base) - stream_start_s
        chunks.append(chunk)
        decoded_samples += chunk.size
        if end_s is not None and first_time_s is not None and frame is not None:
            if first_time_s + decoded_samples / sample_rate_hz >= end_s:
                frames.close()  # stop decoding; the resampler's rest is flushed
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    offset = int(round((start_s - (first_time_s or 0.0)) * sample_rate_hz))
    if offset > 0:
        audio = audio[offset:]
    elif offset < 0:  # the audio track starts after the requested start
        audio = np.concatenate([np.zeros(-offset, np.float32), audio])
    return audio


def load_audio(path: str | Path, sample_rate_hz: int = SAMPLE_RATE_HZ, max_s: float | None = None) -> np.ndarray:
    """The first audio track of any file FFmpeg reads, from its first decoded sample, as mono
    float32 at ``sample_rate_hz`` (channels averaged); at most ``max_s`` seconds."""
    path = Path(path)
    counter = {"skipped": 0, "unreadable": 0}
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "no audio track; a sound recording is expected")
        stream = container.streams.audio[0]
        chunks, samples = [], 0
        frames = _decoded(container, stream, counter)
        for frame, chunk in _mono_chunks(frames, sample_rate_hz):
            chunks.append(chunk)
            samples += chunk.size
            if max_s is not None and frame is not None and samples >= max_s * sample_rate_hz:
                frames.close()
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return audio[: int(max_s * sample_rate_hz)] if max_s is not None else audio


def load_clip(
    path: str | Path,
    num_frames: int,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    max_side: int | None = 512,
    start_s: float = 0.0,
    duration_s: float | None = None,
) -> Clip:
    """Decode ``num_frames`` frames and the mono audio of a clip.

    Args:
        path: any container FFmpeg reads (mp4, mov, mkv, webm, avi, ...).
        num_frames: frames to sample, uniformly: frame k is the one shown at
            ``(k + 0.5) * duration / num_frames`` seconds.
        sample_rate_hz: output audio rate; channels are averaged to mono.
        max_side: frames are downscaled while converting so that their longer
            side is at most this many pixels (``None`` keeps the source size).
        start_s, duration_s: the segment to read (the whole file by default).

    A file without an audio track yields silence and ``has_audio=False``.
    Corrupt packets are skipped and counted in ``skipped_packets``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    path = Path(path)
    counter = {"skipped": 0, "unreadable": 0, "decoded": 0, "video_end_s": None}
    notes: list[str] = []
    with _open(path) as container:
        stream = _video_stream(container, path)
        # The clip lasts as long as its longer track: a short video over a longer sound (or a single
        # picture with a soundtrack) keeps its last frame on screen while the sound plays on.
        audio_s = _duration_s(container, container.streams.audio[0]) if container.streams.audio else 0.0
        total_s = max(_duration_s(container, stream), audio_s)
        if total_s <= 0:  # e.g. browser recordings, which carry no duration
            total_s = _scan_duration_s(container, stream)
            container.seek(0)
        promised_s = _own_duration_s(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise MediaError(path, "video stream has no frame size (corrupt header?)")
        if start_s < 0 or (total_s > 0 and start_s >= total_s):
            raise MediaError(path, f"start {start_s:.2f} s lies outside the clip ({total_s:.2f} s long)")
        span_s = (total_s - start_s) if duration_s is None else duration_s
        if total_s > 0 and duration_s is not None and start_s + duration_s > total_s + 1e-3:
            notes.append(f"clip ends at {total_s:.2f} s, before the requested {start_s + duration_s:.2f} s")
            span_s = total_s - start_s
        span_s = max(span_s, 0.0)
        origin_s = _stream_start_s(stream) + start_s
        targets = origin_s + (np.arange(num_frames) + 0.5) * span_s / num_frames
        size = _target_size(width, height, max_side)
        try:
            promised = None if promised_s is None else _stream_start_s(stream) + promised_s
            frames, times, rotation = _decode_frames(container, stream, targets, size, path, counter, promised)
            times = times - origin_s
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"video stream cannot be decoded ({exc})") from None
        audio = _clip_audio(container, path, start_s, span_s, sample_rate_hz, counter, notes)
    has_audio = audio.size > 0
    expected = int(round(span_s * sample_rate_hz))
    if not has_audio:
        audio = np.zeros(expected, np.float32)
    elif expected > 0:
        audio = audio[:expected] if audio.size >= expected else np.pad(audio, (0, expected - audio.size))
    if counter["skipped"]:
        notes.append(f"{counter['skipped']} corrupt packet(s) skipped")
    if _quarter_turns(rotation) % 2:  # the size as the clip is shown
        width, height = height, width
    video_end_s = None
    if counter["video_end_s"] is not None and counter["video_end_s"] - origin_s < span_s - 0.5:
        video_end_s = max(0.0, counter["video_end_s"] - origin_s)
        notes.append(f"the video track ends at {video_end_s:.2f} s, before the {span_s:.2f} s read; "
                     "its last frame is held")
    return Clip(
        path=str(path),
        frames=frames,
        frame_times_s=times,
        audio=np.ascontiguousarray(audio, dtype=np.float32),
        sample_rate_hz=sample_rate_hz,
        duration_s=span_s,
        has_audio=has_audio,
        source_size=(width, height),
        skipped_packets=counter["skipped"],
        decoded_frames=counter["decoded"],
        source_duration_s=float(total_s),
        notes=notes,
        rotation=_quarter_turns(rotation) * 90,
        video_end_s=video_end_s,
        start_s=float(start_s),
    )


def write_video(
    path: str | Path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    pixel_format: str = "yuv420p",
    options: dict[str, str] | None = None,
    frame_starts_s: Sequence[float] | None = None,
    end_s: float | None = None,
    audio_copy_from: str | Path | None = None,
) -> Path:
    """Write ``[T, H, W, 3]`` uint8 RGB frames (an array, or any iterable of ``[H, W, 3]`` frames,
    so that long clips need not fit in memory) and optional ``[S]`` or ``[C, S]`` float audio.

    Frames follow one another at ``fps``; or, with ``frame_starts_s`` (one time per frame,
    increasing, from 0) and ``end_s``, frame k is shown from its start to the next one's, the last
    until ``end_s``: a few frames can span a whole clip without being repeated (variable frame
    timing, millisecond steps).  The defaults (H.264 in yuv420p + AAC, moov atom first) play in
    every browser.

    ``audio_copy_from``: a file whose first audio stream, when it is AAC, is copied into the output
    (its packets up to the video's end, not decoded or encoded again) instead of encoding ``audio``;
    when that file has no AAC stream, ``audio`` is encoded as usual.
    """
    path = Path(path)
    frames = iter(frames)
    first = next(frames, None)
    if first is None or first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
        got = "no frames" if first is None else f"{first.shape} {first.dtype} frames"
        raise ValueError(f"frames must be [T, H, W, 3] uint8, got {got}")
    height, width = first.shape[:2]
    if video_codec in ("libx264", "h264", "mpeg4", "libvpx-vp9") and (height % 2 or width % 2):
        raise ValueError(f"{video_codec} with {pixel_format} needs even frame sizes, got {width}x{height}")
    container_options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), mode="w", options=container_options) as container:
        rate = Fraction(fps).limit_denominator(1001)
        vstream = container.add_stream(video_codec, rate=rate, options=options or {})
        vstream.width, vstream.height, vstream.pix_fmt = width, height, pixel_format
        astream = source = None
        if audio_copy_from is not None:
            source = av.open(str(audio_copy_from))
            if source.streams.audio and source.streams.audio[0].codec_context.name == "aac":
                astream = container.add_stream_from_template(source.streams.audio[0])
            else:
                source.close()
                source = None
        if audio is not None and source is None:
            audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
            # FFmpeg's AAC encoder: the "fast" coder halves the time of the default one
            astream = container.add_stream(audio_codec, rate=sample_rate_hz,
                                           options={"aac_coder": "fast"} if audio_codec == "aac" else {})
            astream.layout = "mono" if audio.shape[0] == 1 else "stereo" if audio.shape[0] == 2 else "5.1"
        time_base = 1 / rate if frame_starts_s is None else Fraction(1, 1000)
        durations = {}
        vstream.codec_context.time_base = time_base
        images = itertools.chain([first], frames)
        if frame_starts_s is None:
            timed = enumerate(images)
        else:  # the last frame again at the end, so that it is shown until then
            if end_s is None:
                raise ValueError("frame_starts_s needs end_s, where the last frame stops")
            images = list(images)
            starts = [int(round(1000 * t)) for t in frame_starts_s] + [int(round(1000 * end_s)) - 1]
            if len(starts) != len(images) + 1 or any(b <= a for a, b in zip(starts, starts[1:])):
                raise ValueError(f"frame_starts_s must give an increasing time before end_s for each of "
                                 f"{len(images)} frames")
            timed = zip(starts, images + images[-1:])
            durations = {a: b - a for a, b in zip(starts, starts[1:])} | {starts[-1]: 1}
        count = 0
        for pts, image in timed:
            count += 1
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            _mux(container, vstream.encode(frame), durations)
        _mux(container, vstream.encode(None), durations)
        if source is not None:
            with source:
                _copy_audio(container, astream, source, end_s if end_s is not None else count / float(rate))
        elif astream is not None:
            _encode_audio(container, astream, audio, sample_rate_hz)
    return path


def _copy_audio(container, stream, source, until_s: float) -> None:
    """Mux the packets of ``source``'s first audio stream that start before ``until_s``."""
    src = source.streams.audio[0]
    start = src.start_time or 0
    for packet in source.demux(src):
        if packet.dts is None:  # the demuxer's flush packet
            continue
        if packet.pts is not None and float((packet.pts - start) * src.time_base) >= until_s:
            break
        packet.stream = stream
        container.mux(packet)


def _mux(container, packets, durations: dict[int, int]) -> None:
    """Mux encoded packets, each with its frame's duration where one is given (in the stream's time base)."""
    for packet in packets:
        if packet.pts in durations:
            packet.duration = int(durations[packet.pts] * packet.time_base.denominator
                                  / packet.time_base.numerator / 1000) or 1
        container.mux(packet)


def _encode_audio(container, stream, audio: np.ndarray, sample_rate_hz: int) -> None:
    codec = stream.codec_context
    fmt = codec.format.name if codec.format is not None else "fltp"
    resampler = av.AudioResampler(format=fmt, layout=stream.layout.name, rate=sample_rate_hz)
    chunk = 1024
    pts = 0
    for begin in range(0, audio.shape[1], chunk):
        block = np.ascontiguousarray(audio[:, begin:begin + chunk])
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=stream.layout.name)
        frame.sample_rate = sample_rate_hz
        frame.pts = pts
        pts += block.shape[1]
        for out in resampler.resample(frame):
            container.mux(stream.encode(out))
    for out in resampler.resample(None):
        container.mux(stream.encode(out))
    container.mux(stream.encode(None))
