"""Benchmarks that print tables.  ``python -m emktd.bench loss --help``.

``loss``: time and peak memory of the EM-KTD loss (forward + backward) beside
the student's own forward + backward, at the paper's token shapes (audio 512,
visual 196, fused 708 tokens; teacher width 768, student cavmae-tiny at 192).
Each case runs in a fresh process so that its peak memory is its own: on CUDA
the allocator's peak, on CPU the growth of the process's peak resident set
over what the inputs already occupied.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch

from .distill import KERNELS, em_ktd_loss, entropy_weights
from .models import PRESETS, create_model

TEACHER_WIDTH = PRESETS["cavmae-base"].embed_dim


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _peak_mb(device: torch.device, baseline_kb: int) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"case": case, "ms": 1000 * times[len(times) // 2], "peak_mb": _peak_mb(device, baseline_kb)}


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


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
    print(f"EM-KTD loss vs student step: batch {args.batch}, {args.dtype}, {_hardware(device)}, torch {torch.__version__}")
    print(f"tokens audio 512 / visual 196 / fused 708; teacher width {TEACHER_WIDTH}, student cavmae-tiny width 192")
    print()
    print(f"| {'what (forward + backward)':<34} | {'median ms':>10} | {'peak MB':>8} | {'share of student step':>21} |")
    print(f"|{'-' * 36}|{'-' * 12}:|{'-' * 9}:|{'-' * 22}:|")
    for row in rows:
        label = "student (cavmae-tiny) step" if row["case"] == "student" else f"EM-KTD loss, {row['case']} kernel"
        share = "" if row["case"] == "student" else f"{100 * row['ms'] / student_ms:.1f} %"
        print(f"| {label:<34} | {row['ms']:>10.1f} | {row['peak_mb']:>8.1f} | {share:>21} |")


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
    case = sub.add_parser("_case")  # internal: one measurement in a fresh process
    case.add_argument("case")
    case.add_argument("--batch", type=int, required=True)
    case.add_argument("--device", required=True)
    case.add_argument("--dtype", required=True)
    case.add_argument("--repeats", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "loss":
        bench_loss(args)
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
        print(json.dumps(_run_case(args.case, args.batch, torch.device(args.device), dtype, args.repeats)))


if __name__ == "__main__":
    main()
