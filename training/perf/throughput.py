"""Training throughput: samples/s of teacher training and of a distillation step per method,
and the share of the step spent in the distillation loss.

    python -m training.perf.throughput                     # embedded shapes (bench-teacher -> bench-student), CPU
    python -m training.perf.throughput --paper --device cuda --batch 48 --bf16   # the paper's scale on a GPU

Inputs are random tensors of the real shapes, so the numbers do not depend on data loading.
A distillation step = the teacher's forward (uncached; skipped for method none) + the
student's forward and backward + every loss term.  The loss share times the method's own terms (forward and backward into the
student's tokens, as a leaf) against the whole step.
"""

from __future__ import annotations

import argparse

import torch

from emktd.bench import hardware, median_seconds
from emktd.models import create_model
from emktd.monitor import EntropyMonitor
from training.run.config import RunConfig
from training.run.loop import student_frames
from training.run.methods import METHODS, names, parse
from training.run.objective import Grids, Trainee, as_dict, distill_terms, task_losses, total_loss
from training.run.probes import RunMonitor
from training.run.teacher import teacher_outputs


def _teacher_training_s(paper: bool, objective: str, batch: dict, autocast, repeats: int, device) -> float:
    """Seconds per step of training a teacher from scratch on the task losses."""
    model = (create_model("cavmae-base") if paper else create_model("bench-teacher")).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    config = RunConfig(objective=objective)

    def step():
        with autocast:
            out = as_dict(model(batch["audio"], batch["frames"]))
            loss = total_loss(config, task_losses(config, out, batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return median_seconds(step, repeats, device)


def _time_method(method: str, args, objective: str, teacher, batch: dict, autocast, grids: Grids, monitor,
                 device) -> tuple[float, float | None]:
    """Seconds of one distillation step with ``method``, and of its loss terms alone (None without any)."""
    config = RunConfig(objective=objective, method=method)
    entry, _ = parse(method)
    tc = teacher.config
    trainee = Trainee(create_model("cavmae-tiny") if args.paper else create_model("bench-student"),
                      tc.embed_dim, entry).to(device).train()
    size = trainee.student.config.image_size
    opt = torch.optim.AdamW(trainee.parameters(), lr=1e-4)
    use_monitor = monitor if entry.uses_monitor else None

    def step():
        with autocast:
            s = trainee(batch["audio"], student_frames(batch["frames"], size))
            terms = task_losses(config, s, batch)
            if method != "none":  # as in training: without distillation the teacher idles
                t = teacher_outputs(teacher, use_monitor, batch["audio"], batch["frames"], config.lam)
                terms.update(distill_terms(config, t, s, grids))
            loss = total_loss(config, terms)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step_s = median_seconds(step, args.repeats, device)
    with torch.no_grad(), autocast:
        t = teacher_outputs(teacher, use_monitor, batch["audio"], batch["frames"], config.lam)
        s_ref = trainee(batch["audio"], student_frames(batch["frames"], size))
    leaves = {k: v.detach().float().requires_grad_() for k, v in s_ref.items()}

    def loss_only():
        with autocast:
            terms = distill_terms(config, t, leaves, grids)
        if terms:
            sum(terms.values()).backward()

    return step_s, (median_seconds(loss_only, args.repeats, device) if entry.name != "none" else None)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper", action="store_true", help="cavmae-base -> cavmae-tiny, 1024 frames, 224 px")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=[*METHODS, "emktd+kd"], choices=names(), metavar="METHOD",
                   help="methods to time (default: every registered method, and EM-KTD + KD)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.paper:
        teacher, student = create_model("cavmae-base"), create_model("cavmae-tiny")
        objective = "classification"
    else:
        teacher, student = create_model("bench-teacher"), create_model("bench-student")
        objective = "multitask"
    teacher.to(device).eval().requires_grad_(False)
    tc, sc = teacher.config, student.config
    b = args.batch
    batch = {"audio": torch.randn(b, tc.audio_frames, tc.num_mel_bins, device=device),
             "frames": torch.randn(b, 3, tc.image_size, tc.image_size, device=device),
             "target": torch.nn.functional.one_hot(torch.randint(0, sc.num_classes, (b,)), sc.num_classes).float().to(device)}
    if objective == "multitask":
        batch["masks"] = (torch.rand(b, 1, tc.image_size, tc.image_size, device=device) > 0.8).float()
        batch["mask_valid"] = torch.ones(b, dtype=torch.bool, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    grids = Grids(tc.token_grids, sc.token_grids)
    monitor = RunMonitor(EntropyMonitor.for_model(tc).to(device).eval().requires_grad_(False))

    rows = [("teacher training", b / _teacher_training_s(args.paper, objective, batch, autocast, args.repeats,
                                                       device), None)]

    for method in args.methods:
        step_s, loss_s = _time_method(method, args, objective, teacher, batch, autocast, grids, monitor, device)
        rows.append((f"distill {method}", b / step_s, None if loss_s is None else loss_s / step_s))

    scale = "paper: cavmae-base -> cavmae-tiny, 1024 frames, 224 px" if args.paper else \
        "embedded: bench-teacher -> bench-student, 512 frames, 128 px"
    print(f"training throughput, {scale}; batch {b}, {'bf16' if args.bf16 else 'fp32'}, {hardware(device)}, "
          f"torch {torch.__version__}")
    print()
    print("| step | samples/s | distillation loss share |")
    print("|---|---:|---:|")
    for name, rate, share in rows:
        print(f"| {name} | {rate:.1f} | {'' if share is None else f'{100 * share:.1f} %'} |")


if __name__ == "__main__":
    main()
