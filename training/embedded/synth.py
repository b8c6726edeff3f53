"""Clip synthesis for the embedded benchmark: numpy and OpenCV only (no PyAV).

A clip is a background (a photograph or a scene of silent stamps), one or two
sounding objects composited with their alpha at a varied position, scale and
motion, silent distractors, and the objects' real recordings placed in time
with gain and pitch/time jitter over a real background sound at a chosen SNR.
The ground truth is the class(es) of what sounds and per-frame binary masks of
the visible part of the sounding object(s).

Which modality tells the class varies by construction (``MODES``):
  clean   one sounding object, audible and visible
  audio   the sounding object plus objects of other classes on screen, silent:
          only the audio says which one it is
  visual  one object on screen whose sound is drowned (SNR -25..-15 dB) or absent:
          only the picture tells
  multi   two sounding objects of different classes (multi-source)
Every clip carries this record, so results can be split by it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from emktd.features import SAMPLE_RATE_HZ

from .sources import Pack

MODES = ("clean", "audio", "visual", "multi")
MODE_WEIGHTS = (0.4, 0.2, 0.2, 0.2)


@dataclass(frozen=True)
class SynthConfig:
    clip_s: float = 5.0
    fps: int = 10
    image_size: int = 224
    sample_rate_hz: int = SAMPLE_RATE_HZ
    annotated_frames: int = 5  # one per second, at the middle of each second (AVSBench's rate)
    snr_db: tuple[float, float] = (0.0, 20.0)
    drowned_snr_db: tuple[float, float] = (-25.0, -15.0)
    object_scale: tuple[float, float] = (0.3, 0.55)  # longest side, as a fraction of the frame
    jitter: tuple[float, float] = (0.9, 1.1)  # resampling factor: pitch and speed together
    gain_db: tuple[float, float] = (-6.0, 6.0)

    @property
    def num_frames(self) -> int:
        return int(round(self.clip_s * self.fps))

    @property
    def annotated_indices(self) -> list[int]:
        """Indices (into the rendered frames) of the annotated frames, at k + 0.5 seconds."""
        step_s = self.clip_s / self.annotated_frames
        return [int(round((k + 0.5) * step_s * self.fps)) for k in range(self.annotated_frames)]


@dataclass
class Clip:
    """A synthesised clip. frames ``[T, S, S, 3]`` uint8; masks ``[A, S, S]`` uint8 {0, 1}
    for the annotated frames; audio ``[clip_s * rate]`` float32."""

    clip_id: str
    split: str
    labels: list[int]
    frames: np.ndarray
    masks: np.ndarray
    audio: np.ndarray
    info: dict = field(default_factory=dict)


def clip_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """Each clip's own generator (``stream`` tells independent uses apart), so a clip does not
    depend on which worker or in what order it was made."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index, stream])


PARTS = ("seen", "new")


def instances_by_class(pack: Pack, split: str, part: str) -> dict[int, list[dict]]:
    """The class objects a clip may show and sound: the training instances for the seen-instance
    part (every split), the split's own held-out instances for the new-instance part."""
    wanted = "train" if part == "seen" else split
    by_class: dict[int, list[dict]] = {}
    for stamp in pack.stamps:
        if stamp.get("split", "train") == wanted:
            by_class.setdefault(stamp["class"], []).append(stamp)
    return by_class


def _pool(items: list[dict], split: str) -> list[dict]:
    """Test draws from the held-out items only; train and val from the rest."""
    wanted = "test" if split == "test" else "train"
    pool = [item for item in items if item["split"] == wanted]
    return pool or items


def _jitter_sound(sound: np.ndarray, factor: float) -> np.ndarray:
    """Resample by ``factor`` (>1 is higher and shorter), linear interpolation."""
    n = max(2, int(round(sound.size / factor)))
    return np.interp(np.linspace(0, sound.size - 1, n), np.arange(sound.size), sound).astype(np.float32)


def _place_sound(sound: np.ndarray, length: int, rng: np.random.Generator, rate: int) -> np.ndarray:
    """Repeat a recording through the clip: first onset in the first half second, gaps of 0.2-1 s."""
    out = np.zeros(length, np.float32)
    if sound.size >= length:
        start = int(rng.integers(0, sound.size - length + 1))
        return sound[start:start + length].copy()
    position = int(rng.uniform(0, 0.5) * rate)
    while position < length:
        end = min(length, position + sound.size)
        out[position:end] += sound[: end - position]
        position = end + int(rng.uniform(0.2, 1.0) * rate)
    return out


def _loop(sound: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    reps = int(np.ceil(length / max(1, sound.size))) + 1
    looped = np.tile(sound, reps)
    start = int(rng.integers(0, max(1, looped.size - length)))
    return looped[start:start + length]


def _power(x: np.ndarray) -> float:
    return float(np.mean(x.astype(np.float64) ** 2)) + 1e-12


def _background(pack: Pack, split: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if rng.random() < 0.7:
        item = _pool(pack.backgrounds, split)[int(rng.integers(len(_pool(pack.backgrounds, split))))]
        image = item["image"]
        side = int(rng.uniform(0.6, 1.0) * image.shape[0])
        y, x = rng.integers(0, image.shape[0] - side + 1), rng.integers(0, image.shape[1] - side + 1)
        crop = cv2.resize(image[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
        return np.clip(crop.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8), item["name"]
    top, bottom = rng.integers(40, 256, 3), rng.integers(0, 200, 3)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    image = (1 - ramp) * top + ramp * bottom + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), "scene"


@dataclass
class _Sprite:
    rgba: np.ndarray
    sounding: bool
    start: np.ndarray  # (x, y) of the centre, pixels
    end: np.ndarray
    size: tuple[float, float]  # longest side at start and end, pixels


def _sprite(rgba, sounding, frame_size, scale_range, rng, avoid=()) -> _Sprite:
    side = rng.uniform(*scale_range) * frame_size
    if rng.random() < 0.5:
        rgba = rgba[:, ::-1]
    best = None
    for _ in range(8):  # keep objects apart so that each stays visible
        start = rng.uniform(0.25, 0.75, 2) * frame_size
        distance = min((np.linalg.norm(start - other.start) for other in avoid), default=frame_size)
        if best is None or distance > best[0]:
            best = (distance, start)
        if distance > 0.45 * frame_size:
            break
    start = best[1]
    end = np.clip(start + rng.uniform(-0.15, 0.15, 2) * frame_size, 0.15 * frame_size, 0.85 * frame_size)
    return _Sprite(np.ascontiguousarray(rgba), sounding, start, end, (side, side * rng.uniform(0.9, 1.1)))


def _blend(frame: np.ndarray, mask: np.ndarray, sprite: _Sprite, t: float) -> None:
    """Composite ``sprite`` at time fraction ``t`` in place; its opaque pixels set ``mask`` to its sounding flag."""
    h, w = sprite.rgba.shape[:2]
    side = sprite.size[0] + t * (sprite.size[1] - sprite.size[0])
    scale = side / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    image = cv2.resize(sprite.rgba, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    cx, cy = sprite.start + t * (sprite.end - sprite.start)
    x0, y0 = int(round(cx - nw / 2)), int(round(cy - nh / 2))
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + nw), min(frame.shape[0], y0 + nh)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    patch = image[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    alpha = patch[..., 3:4].astype(np.float32) / 255.0
    region = frame[fy0:fy1, fx0:fx1]
    region[:] = (alpha * patch[..., :3] + (1 - alpha) * region).astype(np.uint8)
    if mask is not None:
        opaque = patch[..., 3] > 127
        mask[fy0:fy1, fx0:fx1][opaque] = 1 if sprite.sounding else 0


def _mix_audio(pack: Pack, split: str, sounding: list[int], by_class: dict, mode: str, config: SynthConfig,
               rng: np.random.Generator) -> tuple[list, np.ndarray, str, float | None, str]:
    """The clip's sound: each sounding class's recording placed, jittered and scaled, over a noise
    recording at a drawn SNR (drowned or absent for picture-only clips).  Returns (sources, mix,
    audio state, SNR in dB or None, noise name)."""
    rate = config.sample_rate_hz
    length = int(round(config.clip_s * rate))
    sources = []
    for c in sounding:
        stamp = by_class[c][int(rng.integers(len(by_class[c])))]
        sound = _jitter_sound(stamp["sound"], rng.uniform(*config.jitter))
        sound = _place_sound(sound, length, rng, rate) * 10 ** (rng.uniform(*config.gain_db) / 20)
        sources.append((c, stamp, sound))
    noise_item = _pool(pack.noises, split)[int(rng.integers(len(_pool(pack.noises, split))))]
    noise = _loop(noise_item["sound"], length, rng)
    signal = np.sum([s for _, _, s in sources], axis=0)
    audio_state = "present"
    if mode == "visual":
        audio_state = "drowned" if rng.random() < 0.5 else "absent"
    if audio_state == "absent":
        snr_db = None
        mix = noise * (0.1 / np.sqrt(_power(noise)))
    else:
        snr_db = float(rng.uniform(*(config.drowned_snr_db if audio_state == "drowned" else config.snr_db)))
        noise = noise * np.sqrt(_power(signal) / (_power(noise) * 10 ** (snr_db / 10)))
        mix = signal + noise
    mix = (mix * (0.9 / max(0.9, float(np.abs(mix).max())))).astype(np.float32)
    return sources, mix, audio_state, snr_db, noise_item["name"]


def _render(pack: Pack, split: str, sources: list, silent_classes: list[int], by_class: dict, config: SynthConfig,
            rng: np.random.Generator, only: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, str, int]:
    """The clip's frames over a background, distractors below the class objects, and the masks of
    the sounding objects on the annotated frames.  Returns (frames, masks, background, distractors).
    ``only``: render just these annotated frames (0-based), frames and masks in that order."""
    size = config.image_size
    background, background_name = _background(pack, split, size, rng)
    sprites: list[_Sprite] = []
    distractors = _pool(pack.distractors, split)
    for _ in range(int(rng.integers(0, 4))):
        item = distractors[int(rng.integers(len(distractors)))]
        sprites.append(_sprite(item["image"], False, size, (0.15, 0.35), rng))
    objects = [(c, stamp["image"], True) for c, stamp, _ in sources]
    for c in silent_classes:
        stamp = by_class[c][int(rng.integers(len(by_class[c])))]
        objects.append((c, stamp["image"], False))
    placed: list[_Sprite] = []
    for order in rng.permutation(len(objects)):
        c, image, is_sounding = objects[order]
        placed.append(_sprite(image, is_sounding, size, config.object_scale, rng, avoid=placed))
    sprites.extend(placed)  # class objects above the distractors
    annotated = config.annotated_indices
    if only is not None:
        annotated = [annotated[k] for k in only]
    wanted = annotated if only is not None else list(range(config.num_frames))
    frames = np.empty((len(wanted), size, size, 3), np.uint8)
    masks = np.zeros((len(annotated), size, size), np.uint8)
    for n, i in enumerate(wanted):
        frame = background.copy()
        mask = masks[annotated.index(i)] if i in annotated else None
        t = i / max(1, config.num_frames - 1)
        for sprite in sprites:
            _blend(frame, mask, sprite, t)
        frames[n] = frame
    return frames, masks, background_name, len(sprites) - len(placed)


def synthesize(pack: Pack, split: str, index: int, seed: int, config: SynthConfig = SynthConfig(),
               mode: str | None = None, classes: list[int] | None = None, part: str = "seen",
               rng: np.random.Generator | None = None, only: list[int] | None = None) -> Clip:
    """Render clip ``index`` of ``split`` from the instances of ``part`` (see :func:`instances_by_class`).
    ``mode`` and ``classes`` (sounding first) may be fixed by the caller; ``rng`` replaces the clip's
    own generator (the pretraining stream draws from its own); ``only`` renders just those annotated
    frames (the frames and masks of the others are left out, everything else is the same)."""
    rng = clip_rng(seed, split, index) if rng is None else rng
    if mode is None:
        mode = MODES[int(rng.choice(len(MODES), p=MODE_WEIGHTS))]
    wanted = 2 if mode == "multi" else 1
    by_class = instances_by_class(pack, split, part)
    if classes is None:
        eligible = sorted(by_class)
        classes = [eligible[int(c)] for c in rng.choice(len(eligible), size=3, replace=False)]
    missing = [pack.classes[c] for c in classes[:wanted if mode != "audio" else 3] if c not in by_class]
    if missing:
        raise ValueError(f"no {part}-instance object of {missing} for the {split} split")
    sounding = classes[:wanted]
    silent_classes = classes[wanted:3] if mode == "audio" else []
    sources, mix, audio_state, snr_db, noise_name = _mix_audio(pack, split, sounding, by_class, mode, config, rng)
    frames, masks, background_name, distractors = _render(pack, split, sources, silent_classes, by_class, config,
                                                          rng, only)
    info = {
        "mode": mode,
        "audio": audio_state,
        "snr_db": None if snr_db is None else round(snr_db, 2),
        "sounding": [pack.classes[c] for c in sounding],
        "silent_on_screen": [pack.classes[c] for c in silent_classes],
        "stamps": [stamp["name"] for _, stamp, _ in sources],
        "background": background_name,
        "noise": noise_name,
        "distractors": distractors,
        "mask_fraction": round(float(masks.mean()), 4),
        "part": part,
    }
    return Clip(f"{split}_{index:05d}", split, sorted(sounding), frames, masks, mix, info)
