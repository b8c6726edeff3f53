"""What the demo draws: the masks over the frames the model saw, as pictures and as a browser-
playable video with the clip's sound, and the per-model request (prediction + overlay video)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .media import Clip, write_video
from .predict import Prediction, Predictor


OVERLAY_RGB = np.array([255, 64, 160], np.float32)


def crop_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the centre square the model sees in a frame."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


OUTSIDE_DIM = 0.45  # brightness kept outside the centre square, which the model does not see
SQUARE_RGB = np.array([255, 255, 255], np.uint8)  # the square's outline


def overlay(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint the object pixels (mask >= 0.5) of each frame, inside the centre square the model saw,
    and draw their outline; outside the square the frame is dimmed, with a line along its edge, so
    that a viewer sees why an object there gets no mask."""
    import cv2

    out = frames.copy()
    top, left, side = crop_box(*frames.shape[1:3])
    height, width = frames.shape[1:3]
    if side < max(height, width):  # mark the square the model sees
        # the parts outside it are two strips (above and below, or left and right): dim them as slices
        strips = ((np.s_[:, :top], np.s_[:, top + side:]) if height > side
                  else (np.s_[:, :, :left], np.s_[:, :, left + side:]))
        for strip in strips:
            out[strip] = (out[strip] * np.float32(OUTSIDE_DIM)).astype(np.uint8)
        line = max(1, side // 160)
        if height > side:
            out[:, max(0, top - line):top, left:left + side] = SQUARE_RGB
            out[:, top + side:top + side + line, left:left + side] = SQUARE_RGB
        else:
            out[:, top:top + side, max(0, left - line):left] = SQUARE_RGB
            out[:, top:top + side, left + side:left + side + line] = SQUARE_RGB
    tint = OVERLAY_RGB.astype(np.uint8)
    tinted = np.empty((side, side, 3), np.uint8)
    tinted[:] = tint  # one contiguous tint image: cv2 blends it several times faster than a broadcast view
    for frame, mask in zip(out, masks):
        m = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR) >= 0.5
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if not rows.size:
            continue
        # work on the mask's bounding box, one pixel wider where the square allows (the outline's erosion)
        y0, y1 = max(0, rows[0] - 1), min(side, rows[-1] + 2)
        x0, x1 = max(0, cols[0] - 1), min(side, cols[-1] + 2)
        m = m[y0:y1, x0:x1]
        region = frame[top + y0:top + y1, left + x0:left + x1]
        blended = cv2.addWeighted(region, 1 - alpha, tinted[:y1 - y0, :x1 - x0], alpha, 0.0)
        region[m] = blended[m]
        edges = m ^ cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        region[edges] = tint
    return out


OVERLAY_MAX_SIDE = 640  # the overlay video's longer side at most, in pixels (a demo player's width)


def display_frames(frames: np.ndarray, max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """The frames scaled down (area interpolation) so that their longer side is at most ``max_side``."""
    import cv2

    height, width = frames.shape[1:3]
    scale = max_side / max(height, width)
    if scale >= 1:
        return frames
    size = (max(2, round(width * scale)), max(2, round(height * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def overlay_video(path: str | Path, clip: Clip, masks: np.ndarray, window: float,
                  max_side: int = OVERLAY_MAX_SIDE) -> Path:
    """An H.264 + AAC mp4 of the sampled frames with their masks, each shown for its share of the
    analysed part (variable frame timing: one encoded frame per sampled frame), with its sound: the
    file's own AAC packets where it has them (copied, which is faster than encoding), else encoded.
    Frames larger than ``max_side`` are scaled down first: a demo shows the video at about that
    width, and encoding 720p or 4K frames would take most of the request's time."""
    frames = overlay(display_frames(clip.frames, max_side), masks)
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # yuv420p needs even sides
    frames = frames[:, :h, :w]
    span = min(window, max(clip.duration_s, 1e-3))
    starts = [span * k / len(frames) for k in range(len(frames))]
    audio = clip.audio if clip.has_audio else None
    # the file's own AAC sound is copied, not encoded again, where the clip is the file's start read whole
    copy = clip.path if clip.has_audio and clip.start_s == 0 and not clip.skipped_packets else None

    def write(audio_copy_from):
        return write_video(path, frames, len(frames) / span, audio, clip.sample_rate_hz,
                           options={"preset": "ultrafast", "tune": "zerolatency", "threads": "1"},
                           frame_starts_s=starts, end_s=span, audio_copy_from=audio_copy_from)

    if copy is None:
        return write(None)
    import av

    try:
        return write(copy)
    except av.FFmpegError:  # packets the mp4 muxer will not take as they are: encode the decoded sound
        return write(None)


def predict_with_overlay(predictor: Predictor, clip: Clip, window: float,
                         video_path: str | Path) -> tuple[Prediction, Path | None]:
    """What the demo does per model: predict, then write the overlay video (when the model segments);
    its time joins ``prediction.seconds`` as "overlay video"."""
    prediction = predictor.predict(clip)
    if prediction.masks is None:
        return prediction, None
    started = time.perf_counter()
    video = overlay_video(video_path, clip, prediction.masks, window)
    prediction.seconds["overlay video"] = time.perf_counter() - started
    return prediction, video


__all__ = ["OVERLAY_MAX_SIDE", "OVERLAY_RGB", "crop_box", "display_frames", "overlay", "overlay_video",
           "predict_with_overlay"]
