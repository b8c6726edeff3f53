"""ONNX export of the network and an onnxruntime wrapper with the model's interface.

    python -m emktd.export MODEL_DIR            # writes MODEL_DIR/model.onnx and checks it against torch

The graph is the network only: fbank ``[B, T, F]`` and frames ``[B, K, 3, S, S]`` (K frames of
each of B clips: the audio blocks run once per clip) in; logits, mask logits (when the model
has a decoder) and the audio, visual and fused tokens out, in ``[B * K, ...]`` order, with B and
K dynamic.  Feature extraction (Kaldi fbank) stays in Python: it does not export.
"""

from __future__ import annotations

import argparse
import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from .files import atomic_path
from .models import AVOutput, AVTransformer

DIGEST_KEY = "emktd_weights_sha256"  # metadata: the config + weights the graph was exported from
GRAPH_KEY, GRAPH_VERSION = "emktd_graph", "clip-frames-1"  # metadata: the graph's inputs, as above
OUTPUTS = ("logits", "mask_logits", "audio_tokens", "visual_tokens", "fused_tokens")


class _Graph(torch.nn.Module):
    """A tuple-returning view of the joint forward, for the exporter."""

    def __init__(self, model: AVTransformer):
        super().__init__()
        self.model = model

    def forward(self, audio, frames):
        out = self.model(audio, frames)
        items = [out.logits, out.mask_logits, out.audio_tokens, out.visual_tokens, out.fused_tokens]
        return tuple(t for t in items if t is not None)


def output_names(model: AVTransformer) -> list[str]:
    return [n for n in OUTPUTS if n != "mask_logits" or model.mask_decoder is not None]


def export_onnx(model: AVTransformer, path: str | Path, opset: int = 18, digest: str | None = None) -> Path:
    """Write the graph to ``path`` (atomically); ``digest`` (of the weights) goes into its metadata."""
    import onnx

    path = Path(path)
    model = model.eval()
    c = model.config
    audio = torch.randn(2, c.audio_frames, c.num_mel_bins)
    frames = torch.randn(2, 3, 3, c.image_size, c.image_size)
    batch, per_clip = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("frames", min=1, max=256)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # Both inputs share the one batch dimension; the exporter says so for each.
        warnings.filterwarnings("ignore", message="# The axis name")
        torch.onnx.export(_Graph(model).eval(), (audio, frames), str(tmp), dynamo=True, opset_version=opset,
                          input_names=["audio", "frames"], output_names=output_names(model),
                          dynamic_shapes={"audio": {0: batch}, "frames": {0: batch, 1: per_clip}},
                          external_data=False, verbose=False)
        graph = onnx.load(str(tmp))
        graph.metadata_props.add(key=GRAPH_KEY, value=GRAPH_VERSION)
        if digest is not None:
            graph.metadata_props.add(key=DIGEST_KEY, value=digest)
        onnx.save(graph, str(tmp))
    return path


def providers() -> list[str]:
    """CUDA where onnxruntime offers it and a GPU is present, else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        wanted.insert(0, "CUDAExecutionProvider")
    return wanted


class OnnxModel:
    """Runs ``model.onnx`` with onnxruntime and answers like :class:`AVTransformer` (joint forward)."""

    def __init__(self, path: str | Path, config, threads: int = 0):
        """``threads``: onnxruntime's intra-op threads; 0 takes torch's count (all cores by default),
        where onnxruntime's own default may count physical cores only.  The threads do not spin
        while they wait: in a process that also runs torch (the features, another model), spinning
        threads of the two runtimes take the cores from each other."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers())
        self.config = config
        self.names = [o.name for o in self.session.get_outputs()]

    def __call__(self, audio: torch.Tensor, frames: torch.Tensor) -> AVOutput:
        """As :meth:`AVTransformer.forward` with both inputs: frames ``[B, 3, S, S]`` or ``[B, K, 3, S, S]``."""
        if frames.ndim == 4:
            frames = frames[:, None]
        feeds = {"audio": np.ascontiguousarray(audio.detach().cpu().numpy(), dtype=np.float32),
                 "frames": np.ascontiguousarray(frames.detach().cpu().numpy(), dtype=np.float32)}
        values = dict(zip(self.names, (torch.from_numpy(v) for v in self.session.run(None, feeds))))
        return AVOutput(values["logits"], values["audio_tokens"], values["visual_tokens"], values["fused_tokens"],
                        values.get("mask_logits"))


def check(model: AVTransformer, onnx_path: str | Path, batch: int = 3, frames_per_clip: int = 5,
          seed: int = 0) -> dict[str, float]:
    """onnxruntime against torch on random inputs, ``batch`` clips of ``frames_per_clip`` frames:
    largest logit and token differences, mask pixel agreement."""
    torch.manual_seed(seed)
    c = model.config
    audio = torch.randn(batch, c.audio_frames, c.num_mel_bins)
    frames = torch.randn(batch, frames_per_clip, 3, c.image_size, c.image_size)
    with torch.no_grad():
        ref = model.eval()(audio, frames)
    got = OnnxModel(onnx_path, c)(audio, frames)
    result = {"logits_max_abs_diff": float((ref.logits - got.logits).abs().max()),
              "tokens_max_abs_diff": max(float((ref.tokens()[m] - got.tokens()[m]).abs().max()) for m in ref.tokens())}
    if ref.mask_logits is not None:
        result["mask_agreement"] = float(((ref.mask_logits > 0) == (got.mask_logits > 0)).float().mean())
    return result


# ------------------------------------------------------------------ ONNX files that follow their weights

def weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((Path(folder) / name).read_bytes())
    return digest.hexdigest()


def _graph_digest(path: Path) -> tuple[str | None, str | None]:
    """(weights digest, graph version) from a graph file's metadata; an unreadable file raises."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return meta.get(DIGEST_KEY), meta.get(GRAPH_KEY)


def onnx_file(folder: Path, model, cache: str | Path | None = None, notes: list[str] | None = None) -> Path:
    """``folder/model.onnx`` when it was exported from these weights as this version's graph, else a
    fresh export in the cache.  A graph file that cannot be read (damaged, cut short) is passed over
    like a stale one, and a line saying so goes to ``notes``."""
    digest = weights_digest(folder)
    candidates = [Path(folder) / "model.onnx"]
    cache_dir = Path(cache) if cache is not None else Path.home() / ".cache" / "emktd" / "onnx"
    candidates.append(cache_dir / f"{digest[:16]}-{GRAPH_VERSION}" / "model.onnx")
    damaged = []
    for path in candidates:
        if path.is_file():
            try:
                if _graph_digest(path) == (digest, GRAPH_VERSION):
                    return path
            except Exception as exc:  # protobuf's DecodeError, an OSError, onnx's own checks: all "unreadable"
                damaged.append(f"{path} is not a readable ONNX graph ({type(exc).__name__}: {exc})"[:300])
    target = candidates[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"{folder}: exporting model.onnx for these weights to {target}", flush=True)
    exported = export_onnx(model.float().cpu(), target, digest=digest)
    if damaged and notes is not None:
        notes.append("; ".join(damaged) + f"; a fresh export of the weights ({target}) is used instead")
    return exported


def main(argv=None) -> None:
    from .hub import load_pretrained

    p = argparse.ArgumentParser(prog="python -m emktd.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path, help="a model folder (config.json + model.safetensors)")
    p.add_argument("--out", type=Path, default=None, help="default MODEL_DIR/model.onnx")
    p.add_argument("--opset", type=int, default=18)
    args = p.parse_args(argv)
    model = load_pretrained(args.model_dir)
    out = export_onnx(model, args.out or args.model_dir / "model.onnx", args.opset, digest=weights_digest(args.model_dir))
    result = check(model, out)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MB; onnxruntime vs torch: "
          + ", ".join(f"{k} {v:.2e}" if "diff" in k else f"{k} {100 * v:.3f} %" for k, v in result.items()))


if __name__ == "__main__":
    main()
