"""Prediction on a clip: decode once, then each model's features, forward pass and outputs.

    from emktd.predict import Predictor, decode, window_s
    student = Predictor.load("weights/student", backend="onnx")
    clip, seconds = decode("clip.mp4", num_frames=5, window=window_s(student.config))
    prediction = student.predict(clip)
    prediction.top(5), prediction.masks            # [(label, probability)], [T, S, S] in [0, 1]

The model sees the first ``audio_frames`` x 10 ms of the clip (its audio window) and
``num_frames`` frames sampled uniformly in that window.  Classification averages the
logits over the frames (as the evaluation does); segmentation gives one mask per frame,
over the centre square the model sees (:func:`emktd.features.frames_to_tensor`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .features import FbankConfig, audio_fbank, frames_to_tensor
from .media import Clip, load_clip, write_video
from .models import AVConfig, AVOutput

SAMPLE_RATE_HZ = 16000
HOP_S = FbankConfig().frame_shift_ms / 1000.0
BACKENDS = ("torch", "onnx")


def window_s(config: AVConfig) -> float:
    """The length of audio the model's fbank covers."""
    return config.audio_frames * HOP_S


def decode(path: str | Path, num_frames: int, window: float, max_side: int = 512) -> tuple[Clip, float]:
    """The clip's first ``window`` seconds: ``num_frames`` frames and the audio. Returns (clip, seconds)."""
    started = time.perf_counter()
    clip = load_clip(path, num_frames, SAMPLE_RATE_HZ, max_side=max_side, start_s=0.0, duration_s=window)
    return clip, time.perf_counter() - started


@dataclass
class Prediction:
    labels: tuple[str, ...]
    probabilities: np.ndarray  # [C], softmax of the frame-averaged logits
    masks: np.ndarray | None  # [T, S, S] object probabilities per sampled frame, or None
    tokens: dict[str, torch.Tensor]  # audio / visual / fused tokens [T, N, D] (for the entropy monitor)
    seconds: dict[str, float] = field(default_factory=dict)  # features, model

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities)[:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]


class Predictor:
    """One model (torch or onnxruntime) with its label list and input geometry."""

    def __init__(self, model, config: AVConfig, backend: str, parameters: int, device: str = "cpu"):
        self.model, self.config, self.backend, self.parameters = model, config, backend, parameters
        self.device = torch.device(device)
        labels = config.labels or tuple(f"class {i}" for i in range(config.num_classes))
        self.labels = tuple(labels)

    @classmethod
    def load(cls, name_or_path: str | Path, backend: str = "torch", device: str = "auto",
             onnx_cache: str | Path | None = None) -> "Predictor":
        """A model folder or Hub id; ``backend='onnx'`` runs ``model.onnx`` (exported when missing or stale)."""
        from .hub import load_pretrained, resolve_folder

        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        folder = resolve_folder(name_or_path)
        model = load_pretrained(folder, device=device)
        parameters = model.num_parameters()
        if backend == "onnx":
            from .export import OnnxModel

            onnx_path = onnx_file(folder, model, onnx_cache)
            return cls(OnnxModel(onnx_path, model.config), model.config, "onnx", parameters, "cpu")
        return cls(model, model.config, "torch", parameters, device)

    def features(self, clip: Clip) -> tuple[torch.Tensor, torch.Tensor]:
        """fbank ``[T, frames, bins]`` (one copy per sampled frame) and frames ``[T, 3, S, S]``."""
        c = self.config
        fbank = audio_fbank(clip.audio, clip.sample_rate_hz, FbankConfig(num_frames=c.audio_frames,
                                                                          num_mel_bins=c.num_mel_bins))
        frames = frames_to_tensor(clip.frames, c.image_size)
        return fbank.unsqueeze(0).expand(frames.shape[0], -1, -1), frames

    def forward(self, audio: torch.Tensor, frames: torch.Tensor) -> AVOutput:
        with torch.no_grad():
            if self.backend == "torch":
                out = self.model(audio.to(self.device), frames.to(self.device))
                return AVOutput(*(t.float().cpu() if t is not None else None for t in
                                  (out.logits, out.audio_tokens, out.visual_tokens, out.fused_tokens,
                                   out.mask_logits)))
            return self.model(audio.contiguous(), frames.contiguous())

    def predict(self, clip: Clip) -> Prediction:
        started = time.perf_counter()
        audio, frames = self.features(clip)
        featured = time.perf_counter()
        out = self.forward(audio, frames)
        finished = time.perf_counter()
        probabilities = torch.softmax(out.logits.float().mean(dim=0), dim=-1).numpy()
        masks = torch.sigmoid(out.mask_logits.float()[:, 0]).numpy() if out.mask_logits is not None else None
        return Prediction(self.labels, probabilities, masks, out.tokens(),
                          {"features": featured - started, "model": finished - featured})


# ------------------------------------------------------------------ ONNX files that follow their weights

def weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((Path(folder) / name).read_bytes())
    return digest.hexdigest()


def onnx_file(folder: Path, model, cache: str | Path | None = None) -> Path:
    """``folder/model.onnx`` when it was exported from these weights, else a fresh export in the cache."""
    import onnx

    from .export import DIGEST_KEY, export_onnx

    digest = weights_digest(folder)
    candidates = [Path(folder) / "model.onnx"]
    cache_dir = Path(cache) if cache is not None else Path.home() / ".cache" / "emktd" / "onnx"
    candidates.append(cache_dir / digest[:16] / "model.onnx")
    for path in candidates:
        if path.is_file():
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            if meta.get(DIGEST_KEY) == digest:
                return path
    target = candidates[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"{folder}: exporting model.onnx for these weights to {target}", flush=True)
    return export_onnx(model.float().cpu(), target, digest=digest)


# ------------------------------------------------------------------ overlays and agreement

OVERLAY_RGB = np.array([255, 64, 160], np.float32)


def crop_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the centre square the model sees in a frame."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def overlay(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint the object pixels (mask >= 0.5) of each frame, inside the centre square the model saw."""
    import cv2

    out = frames.astype(np.float32).copy()
    top, left, side = crop_box(*frames.shape[1:3])
    for frame, mask in zip(out, masks):
        m = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR) >= 0.5
        region = frame[top:top + side, left:left + side]
        region[m] = (1 - alpha) * region[m] + alpha * OVERLAY_RGB
        edges = m ^ cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        region[edges] = OVERLAY_RGB
    return out.round().clip(0, 255).astype(np.uint8)


def overlay_video(path: str | Path, clip: Clip, masks: np.ndarray, window: float, fps: int = 10) -> Path:
    """An H.264 + AAC mp4 of the sampled frames with their masks, each held for its share of the
    window, with the window's sound."""
    frames = overlay(clip.frames, masks)
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # yuv420p needs even sides
    frames = frames[:, :h, :w]
    hold = max(1, round(fps * min(window, max(clip.duration_s, 1e-3)) / len(frames)))
    audio = clip.audio if clip.has_audio else None
    return write_video(path, np.repeat(frames, hold, axis=0), fps, audio, clip.sample_rate_hz,
                       options={"preset": "veryfast"})


def predict_with_overlay(predictor: "Predictor", clip: Clip, window: float,
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


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two models' object pixels over all frames (masks resized to the larger grid); 1 when both are empty."""
    size = max(a.shape[-1], b.shape[-1])

    def binary(m):
        t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[:, None]
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy() >= 0.5

    a, b = binary(a), binary(b)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# ------------------------------------------------------------------ the entropy monitor beside a teacher

MONITOR_WEIGHTS, MONITOR_CONFIG = "monitor.safetensors", "monitor.json"


def save_monitor(monitor, folder: str | Path, lam: float) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in monitor.state_dict().items()},
              str(folder / MONITOR_WEIGHTS))
    probe = next(iter(monitor.probes.values()))
    (folder / MONITOR_CONFIG).write_text(json.dumps(
        {"task": monitor.task, "lam": lam, "dim": probe.linear.in_features,
         "num_classes": probe.linear.out_features if monitor.task == "classification" else 0}, indent=1) + "\n")


def load_monitor(folder: str | Path, config: AVConfig):
    """The teacher's entropy monitor (probes on its tokens) and its lambda, or None when the folder has none."""
    from safetensors.torch import load_file

    from .distill import EntropyMonitor

    folder = Path(folder)
    if not (folder / MONITOR_CONFIG).is_file():
        return None
    meta = json.loads((folder / MONITOR_CONFIG).read_text())
    monitor = EntropyMonitor(meta["dim"], meta["num_classes"], meta["task"], config.visual_grid, config.image_size)
    monitor.load_state_dict(load_file(str(folder / MONITOR_WEIGHTS)))
    return monitor.eval(), float(meta["lam"])


__all__ = ["Predictor", "Prediction", "decode", "window_s", "overlay", "overlay_video", "predict_with_overlay",
           "mask_iou", "onnx_file",
           "save_monitor", "load_monitor", "BACKENDS"]
