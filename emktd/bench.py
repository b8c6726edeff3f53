"""Benchmarks that print tables.  ``python -m emktd.bench {loss,decode,infer,latency,presets} --help``.

``loss``: time and peak memory of the EM-KTD loss (forward + backward) beside
the student's own forward + backward, at the paper's token shapes (audio 512,
visual 196, fused 708 tokens; teacher width 768, student cavmae-tiny at 192).
Each case runs in a fresh process so that its peak memory is its own: on CUDA
the allocator's peak, on CPU the growth of the process's peak resident set
over what the inputs already occupied.

``infer``: what the demo does with a clip (default: 10 s of 720p), for the teacher (torch) and
the student (torch and onnxruntime): decode, features, model, overlay video, whole request.

``latency``: model time of ``cavmae-base`` (the paper's teacher) and ``cavmae-tiny`` (its student)
at the paper's shapes, one clip of five frames and batches of clips (the paper: 9.5 -> 1.5 ms on
an A10G).

``decode``: ``load_clip`` time and peak memory growth on a long, high-resolution
clip that the command writes first (10 minutes of 1080p H.264 + AAC stereo by default).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch

from .losses import KERNELS, em_ktd_loss
from .models import PRESETS, create_model
from .monitor import entropy_weights

TEACHER_WIDTH = PRESETS["cavmae-base"].embed_dim


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


class PeakMemory:
    """Peak memory growth of this process over a stretch of code, in MB.

    CUDA: the caching allocator's peak.  CPU: Linux's resident-set high-water
    mark (VmHWM), reset through /proc/self/clear_refs at the start, so neither
    earlier work nor a parent process (whose peak survives exec in ru_maxrss)
    leaks in.
    """

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
            self.start = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
        else:
            self.mb = max(0, _status_kb("VmHWM") - self.start) / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up, waiting for the GPU."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _run_case(case: str, batch: int, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    torch.manual_seed(0)
    student = create_model("cavmae-tiny").to(device).train()
    cfg = student.config
    grids = {"audio": cfg.audio_grid, "visual": cfg.visual_grid}
    counts = {m: g[0] * g[1] for m, g in grids.items()}
    counts["fused"] = counts["audio"] + counts["visual"]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    if case == "student":
        fbank = torch.randn(batch, cfg.audio_frames, cfg.num_mel_bins, device=device)
        frames = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
        labels = torch.randint(0, cfg.num_classes, (batch,), device=device)

        def step():
            with autocast:
                out = student(fbank, frames)
                loss = torch.nn.functional.cross_entropy(out.logits.float(), labels)
            loss.backward()
    else:
        kernel = case
        teacher = {m: torch.randn(batch, n, TEACHER_WIDTH, device=device, dtype=dtype) for m, n in counts.items()}
        student_tokens = {m: torch.randn(batch, n, cfg.embed_dim, device=device, dtype=dtype, requires_grad=True)
                          for m, n in counts.items()}
        probe_logits = {m: torch.randn(batch, cfg.num_classes, device=device) for m in counts}

        def step():
            with autocast:
                weights = {m: entropy_weights(logits, lam=1.0) for m, logits in probe_logits.items()}
                loss, _ = em_ktd_loss(teacher, student_tokens, weights, kernel=kernel, gamma=0.5)
            loss.backward()

    _sync(device)
    with PeakMemory(device) as peak:
        seconds = median_seconds(step, repeats, device)
    return {"case": case, "ms": 1000 * seconds, "peak_mb": peak.mb}


def hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and torch's thread count: what every timing names."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"{model}, {threads} thread{'s' * (threads != 1)}"


def bench_loss(args) -> None:
    device = _device(args.device)
    cases = ["student", *args.kernels]
    rows = []
    for case in cases:
        cmd = [sys.executable, "-m", "emktd.bench", "_case", case, "--batch", str(args.batch),
               "--device", str(device), "--dtype", args.dtype, "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    student_ms = rows[0]["ms"]
    print(f"EM-KTD loss vs student step: batch {args.batch}, {args.dtype}, {hardware(device)}, torch {torch.__version__}")
    print(f"tokens audio 512 / visual 196 / fused 708; teacher width {TEACHER_WIDTH}, student cavmae-tiny width 192")
    print()
    print(f"| {'what (forward + backward)':<34} | {'median ms':>10} | {'peak MB':>8} | {'share of student step':>21} |")
    print(f"|{'-' * 36}|{'-' * 11}:|{'-' * 9}:|{'-' * 22}:|")
    for row in rows:
        label = "student (cavmae-tiny) step" if row["case"] == "student" else f"EM-KTD loss, {row['case']} kernel"
        share = "" if row["case"] == "student" else f"{100 * row['ms'] / student_ms:.1f} %"
        print(f"| {label:<34} | {row['ms']:>10.1f} | {row['peak_mb']:>8.1f} | {share:>21} |")


def _write_long_clip(path, minutes: float, height: int, fps: int) -> None:
    """A long H.264 + AAC stereo 48 kHz clip of a scrolling noise picture, written frame by frame."""
    import numpy as np

    from .media import write_video

    width = height * 16 // 9 // 2 * 2
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frames = (np.roll(base, 8 * i, axis=1) for i in range(int(minutes * 60 * fps)))
    audio = (0.1 * rng.standard_normal((2, int(minutes * 60 * 48000)))).astype(np.float32)
    write_video(path, frames, fps, audio, 48000, options={"preset": "ultrafast", "g": str(2 * fps)})


def _run_decode(path: str, frames: int, max_side: int) -> dict:
    from .media import load_clip

    with PeakMemory(torch.device("cpu")) as peak:
        start = time.perf_counter()
        clip = load_clip(path, frames, max_side=max_side)
        seconds = time.perf_counter() - start
    return {"s": seconds, "mb": peak.mb, "shape": list(clip.frames.shape), "audio": int(clip.audio.size)}


def bench_decode(args) -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.mp4"
        _write_long_clip(path, args.minutes, args.height, args.fps)
        cmd = [sys.executable, "-m", "emktd.bench", "_decode", str(path), str(args.frames), str(args.max_side)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        size_mb = path.stat().st_size / 2**20
    print(f"load_clip on {args.minutes:g} min of {args.height}p H.264 ({args.fps} fps) + AAC stereo 48 kHz, "
          f"{size_mb:.0f} MB file; {hardware(torch.device('cpu'))}")
    print()
    print("| frames | max_side | frames out | audio samples | seconds | peak memory growth MB |")
    print("|---:|---:|---|---:|---:|---:|")
    print(f"| {args.frames} | {args.max_side} | {result['shape']} | {result['audio']} | {result['s']:.1f} | "
          f"{result['mb']:.0f} |")


def write_test_clip(path, seconds: float = 10.0, height: int = 720, fps: int = 25, source=None) -> None:
    """A ``seconds`` long H.264 + AAC clip at ``height`` p: the frames and sound of ``source`` (one of
    the demo's examples by default), scaled up and looped."""
    import cv2
    import numpy as np

    from .media import load_clip, write_video

    if source is None:
        from pathlib import Path

        examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.mp4"))
        if not examples:
            raise SystemExit("no example clip to build the test clip from: pass CLIP")
        source = examples[0]
    clip = load_clip(source, int(fps * 5), max_side=None)
    width = height * 16 // 9 // 2 * 2
    frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in clip.frames])
    count = int(seconds * fps)
    frames = frames[np.arange(count) % len(frames)]
    audio = clip.audio[np.arange(int(seconds * clip.sample_rate_hz)) % clip.audio.size]
    write_video(path, frames, fps, audio, clip.sample_rate_hz, options={"preset": "fast"})


def bench_infer(args) -> None:
    """Decode, features and model time of the teacher (torch) and the student (torch, onnxruntime)
    on one clip, and the student's whole request as the demo serves it."""
    import statistics
    import tempfile
    from pathlib import Path

    from .media import probe
    from .overlay import predict_with_overlay
    from .predict import Predictor, decode, window_s

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        clip_path = args.clip
        if clip_path is None:
            clip_path = Path(tmp) / "clip-10s-720p.mp4"
            write_test_clip(clip_path)
        info = probe(clip_path)
        models = [("teacher", "torch", Predictor.load(args.teacher, "torch", "cpu")),
                  ("student", "torch", Predictor.load(args.student, "torch", "cpu")),
                  ("student", "onnxruntime", Predictor.load(args.student, "onnx", "cpu",
                                                            onnx_cache=Path(tmp) / "onnx"))]
        window = max(window_s(p.config) for _, _, p in models)
        rows = []
        for name, backend, predictor in models:
            times = {"decode": [], "features": [], "model": [], "overlay video": [], "request": []}
            for i in range(args.repeats + 1):
                start = time.perf_counter()
                clip, decode_s = decode(clip_path, 5, window)
                prediction, _ = predict_with_overlay(predictor, clip, window, Path(tmp) / f"{name}-{backend}.mp4")
                request_s = time.perf_counter() - start
                if i == 0:
                    continue  # warm-up
                for key, value in {"decode": decode_s, **prediction.seconds, "request": request_s}.items():
                    times[key].append(value)
            rows.append((name, backend, predictor.parameters, {k: statistics.median(v) for k, v in times.items()}))
    print(f"{Path(clip_path).name}: {info.duration_s:.1f} s, {info.width}x{info.height} {info.video_codec}"
          f" + {info.audio_codec}; {hardware(torch.device('cpu'))}; median of {args.repeats} after a warm-up")
    print()
    print("| model | runtime | parameters | decode ms | features ms | model ms | overlay video ms | request ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, backend, parameters, t in rows:
        print(f"| {name} | {backend} | {parameters:,} | " + " | ".join(
            f"{1000 * t[k]:.0f}" for k in ("decode", "features", "model", "overlay video", "request")) + " |")
    teacher, student_torch, student_ort = (r[3] for r in rows)
    fast = student_ort if student_ort["model"] < student_torch["model"] else student_torch
    runtime = "onnxruntime" if fast is student_ort else "torch"
    print()
    print(f"- the demo's student runtime (`--backend auto`, the faster at start-up; here {runtime}): whole "
          f"request {1000 * fast['request']:.0f} ms, {fast['request'] / fast['decode']:.2f}x its decode time "
          "(target at most 1.6x)")
    print(f"- student model time {teacher['model'] / fast['model']:.1f}x below the teacher's (target at least 6x)")
    print(f"- onnxruntime {student_torch['model'] / student_ort['model']:.2f}x the speed of torch for the student "
          "(target at least 1x)")


def _forward_s(model, audio, frames, repeats: int, device, dtype) -> float:
    """Median seconds of one forward pass (after one warm-up)."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return median_seconds(lambda: model(audio, frames), repeats, device)


def bench_latency(args) -> None:
    """Model time of the paper's teacher and student at the paper's shapes: one clip (its audio once,
    ``--frames`` frames), and throughput on batches of ``--batch`` clips."""
    device = _device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    rows = []
    for name in ("cavmae-base", "cavmae-tiny"):
        torch.manual_seed(0)
        model = create_model(name).to(device).eval()
        c = model.config
        parameters = model.num_parameters()
        if args.compile != "none":  # one-clip and batch shapes each compile (and, on CUDA, graph) once, in the warm-up
            model = torch.compile(model, mode=args.compile)

        def inputs(clips):
            return (torch.randn(clips, c.audio_frames, c.num_mel_bins, device=device),
                    torch.randn(clips, args.frames, 3, c.image_size, c.image_size, device=device))

        one = _forward_s(model, *inputs(1), args.repeats, device, dtype)
        batch = _forward_s(model, *inputs(args.batch), args.repeats, device, dtype)
        rows.append((name, parameters, one, args.batch / batch))
        del model
    compiled = "" if args.compile == "none" else f", torch.compile mode {args.compile}"
    print(f"model time at the paper's shapes (fbank {PRESETS['cavmae-base'].audio_frames} x "
          f"{PRESETS['cavmae-base'].num_mel_bins}, {PRESETS['cavmae-base'].image_size} px, {args.frames} frames a "
          f"clip, the audio encoded once per clip); {args.dtype}{compiled}, {hardware(device)}, "
          f"torch {torch.__version__}, median of {args.repeats} after a warm-up")
    print()
    print(f"| model | parameters | one clip ms | clips/s at batch {args.batch} |")
    print("|---|---:|---:|---:|")
    for name, parameters, one, rate in rows:
        print(f"| {name} | {parameters:,} | {1000 * one:.1f} | {rate:.2f} |")
    (_, _, base_one, base_rate), (_, _, tiny_one, tiny_rate) = rows
    print()
    print(f"- cavmae-tiny is {base_one / tiny_one:.1f}x faster than cavmae-base on one clip and "
          f"{tiny_rate / base_rate:.1f}x on batches (target at least 10x on CPU)")


def bench_presets(args) -> None:
    from .models import create_model

    print("| preset | width | blocks (a + v + fused) | parameters | of cavmae-base |")
    print("|---|---:|---|---:|---:|")
    with torch.device("meta"):
        base = create_model("cavmae-base").num_parameters()
        for name, config in PRESETS.items():
            n = create_model(name).num_parameters()
            print(f"| `{name}` | {config.embed_dim} | {config.depth_audio} + {config.depth_visual} + "
                  f"{config.depth_fused} | {n:,} | {100 * n / base:.2f} % |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emktd.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    loss = sub.add_parser("loss", help="EM-KTD loss cost against the student's step")
    loss.add_argument("--batch", type=int, default=4, help="batch size (default 4; the paper's is 48)")
    loss.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    loss.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="autocast dtype")
    loss.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    loss.add_argument("--repeats", type=int, default=5, help="timed repetitions after one warm-up")
    sub.add_parser("presets", help="parameter counts of the model presets")
    latency = sub.add_parser("latency", help="cavmae-base against cavmae-tiny at the paper's shapes")
    latency.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    latency.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="autocast dtype")
    latency.add_argument("--frames", type=int, default=5, help="frames per clip (default 5)")
    latency.add_argument("--batch", type=int, default=4, help="clips per batch for the throughput (default 4)")
    latency.add_argument("--repeats", type=int, default=3, help="timed repetitions after one warm-up")
    latency.add_argument("--compile", default="none", choices=["none", "default", "reduce-overhead", "max-autotune"],
                         help="torch.compile the models in this mode (reduce-overhead: CUDA graphs; default none)")
    decode = sub.add_parser("decode", help="load_clip on a long high-resolution clip")
    decode.add_argument("--minutes", type=float, default=10.0)
    decode.add_argument("--height", type=int, default=1080)
    decode.add_argument("--fps", type=int, default=2, help="frame rate of the written clip (default 2)")
    decode.add_argument("--frames", type=int, default=10, help="frames to sample")
    decode.add_argument("--max-side", type=int, default=512)
    infer = sub.add_parser("infer", help="the demo's request: decode, features, model for teacher and student")
    infer.add_argument("clip", nargs="?", default=None,
                       help="a video (default: a 10 s 720p clip made from an example clip)")
    infer.add_argument("--teacher", default="weights/teacher")
    infer.add_argument("--student", default="weights/student")
    infer.add_argument("--repeats", type=int, default=5)
    infer.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    case = sub.add_parser("_case")  # internal: one measurement in a fresh process
    case.add_argument("case")
    case.add_argument("--batch", type=int, required=True)
    case.add_argument("--device", required=True)
    case.add_argument("--dtype", required=True)
    case.add_argument("--repeats", type=int, required=True)
    decode_case = sub.add_parser("_decode")  # internal: one load_clip in a fresh process
    decode_case.add_argument("path")
    decode_case.add_argument("frames", type=int)
    decode_case.add_argument("max_side", type=int)
    args = parser.parse_args(argv)
    if args.command == "loss":
        bench_loss(args)
    elif args.command == "decode":
        bench_decode(args)
    elif args.command == "presets":
        bench_presets(args)
    elif args.command == "infer":
        bench_infer(args)
    elif args.command == "latency":
        bench_latency(args)
    elif args.command == "_decode":
        print(json.dumps(_run_decode(args.path, args.frames, args.max_side)))
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
        print(json.dumps(_run_case(args.case, args.batch, torch.device(args.device), dtype, args.repeats)))


if __name__ == "__main__":
    main()
