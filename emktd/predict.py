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

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .export import OnnxModel, onnx_file
from .features import SAMPLE_RATE_HZ, FbankConfig, audio_fbank, frames_to_tensor
from .media import Clip, load_clip
from .hub import load_pretrained, resolve_folder
from .models import AVConfig, AVOutput

HOP_S = FbankConfig().frame_shift_ms / 1000.0
BACKENDS = ("torch", "onnx", "auto")


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
    """One model (torch or onnxruntime) with its label list and input geometry.

    ``timings`` holds, after ``load(..., backend="auto")``, each runtime's model time (seconds)
    measured at load time, from which the faster was chosen."""

    def __init__(self, model, config: AVConfig, backend: str, parameters: int, device: str = "cpu"):
        self.model, self.config, self.backend, self.parameters = model, config, backend, parameters
        self.device = torch.device(device)
        labels = config.labels or tuple(f"class {i}" for i in range(config.num_classes))
        self.labels = tuple(labels)
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []  # what went differently at load time (a damaged graph replaced, say)

    @classmethod
    def load(cls, name_or_path: str | Path, backend: str = "torch", device: str = "auto",
             onnx_cache: str | Path | None = None, frames: int = 5) -> "Predictor":
        """A model folder or Hub id.  ``backend='onnx'`` runs ``model.onnx`` (exported when missing or
        stale); ``'auto'`` times both runtimes on a clip of ``frames`` frames and keeps the faster."""
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        folder = resolve_folder(name_or_path)
        model = load_pretrained(folder, device=device)
        parameters = model.num_parameters()
        candidates = []
        if backend in ("torch", "auto"):
            candidates.append(cls(model, model.config, "torch", parameters, device))
        notes: list[str] = []
        if backend in ("onnx", "auto"):
            onnx_path = onnx_file(folder, model, onnx_cache, notes)
            try:
                candidates.append(cls(OnnxModel(onnx_path, model.config), model.config, "onnx", parameters, "cpu"))
            except Exception as exc:  # onnxruntime refuses the graph: torch runs the same weights
                notes.append(f"onnxruntime cannot load {onnx_path} ({type(exc).__name__}: {exc}"[:300]
                             + "); the model runs through torch")
                if backend == "onnx":
                    candidates.append(cls(model, model.config, "torch", parameters, device))
        for candidate in candidates:
            candidate.notes = notes
        if len(candidates) == 1:
            return candidates[0]
        timings = {c.backend: c.time_model(frames) for c in candidates}
        chosen = min(candidates, key=lambda c: timings[c.backend])
        chosen.timings = timings
        return chosen

    def time_model(self, frames: int = 5, repeats: int = 7) -> float:
        """Median seconds of one forward pass on a clip of ``frames`` frames (after warm-ups)."""
        c = self.config
        audio = torch.zeros(1, c.audio_frames, c.num_mel_bins)
        pictures = torch.zeros(1, frames, 3, c.image_size, c.image_size)
        times = []
        for i in range(repeats + 2):
            started = time.perf_counter()
            self.forward(audio, pictures)
            if i >= 2:
                times.append(time.perf_counter() - started)
        return sorted(times)[len(times) // 2]

    def features(self, clip: Clip) -> tuple[torch.Tensor, torch.Tensor]:
        """The clip's fbank ``[1, frames, bins]`` and its sampled frames ``[1, T, 3, S, S]``: one clip,
        whose audio the model encodes once for all its frames."""
        c = self.config
        fbank = audio_fbank(clip.audio, clip.sample_rate_hz, FbankConfig(num_frames=c.audio_frames,
                                                                          num_mel_bins=c.num_mel_bins))
        frames = frames_to_tensor(clip.frames, c.image_size)
        return fbank[None], frames[None]

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


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two models' object pixels over all frames (masks resized to the larger grid); 1 when both are empty."""
    size = max(a.shape[-1], b.shape[-1])

    def binary(m):
        t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[:, None]
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy() >= 0.5

    a, b = binary(a), binary(b)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


__all__ = ["Predictor", "Prediction", "decode", "window_s", "mask_iou", "BACKENDS"]
