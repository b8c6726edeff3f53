"""What a training step minimises: the task losses, the method's distillation term (from the
method registry), KD, and the module that trains (the student plus the method's extras)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from emktd.losses import kd_loss
from emktd.models import AVOutput, AVTransformer

from .config import RunConfig
from .methods import Context, Method, parse


def as_dict(out: AVOutput) -> dict[str, torch.Tensor]:
    """A forward pass as the losses read it: logits, tokens per modality, and masks when there are any."""
    d = {"logits": out.logits, **out.tokens()}
    if out.mask_logits is not None:
        d["masks"] = out.mask_logits
    return d


class Trainee(nn.Module):
    """The student plus the modules its method trains beside it (FitNets' projections), so DDP sees
    one module and the extras run inside its forward."""

    def __init__(self, student: AVTransformer, teacher_dim: int | None, method: Method | None = None):
        super().__init__()
        self.student = student
        self.extras = method.extra_modules(student.config.embed_dim, teacher_dim) \
            if method is not None and method.extra_modules is not None and teacher_dim else None

    def forward(self, audio, frames) -> dict[str, torch.Tensor]:
        out = as_dict(self.student(audio, frames))
        if self.extras is not None:
            out.update(self.extras(out))
        return out


@dataclass
class Grids:
    teacher: dict
    student: dict


def task_losses(config: RunConfig, s: dict, batch: dict) -> dict[str, torch.Tensor]:
    """Cross-entropy against the multi-hot target normalised to a distribution (with label
    smoothing), and per-pixel BCE on the annotated frames' masks."""
    terms = {}
    if config.objective in ("multitask", "classification"):
        labelled = batch.get("labelled")  # a batch with transfer-pool clips: only labelled ones have targets
        logits, target = s["logits"].float(), batch["target"]
        if labelled is not None:
            logits, target = logits[labelled], target[labelled]
        target = target / target.sum(dim=1, keepdim=True).clamp_min(1e-8)
        terms["cls"] = (F.cross_entropy(logits, target, label_smoothing=config.label_smoothing) if len(target)
                        else s["logits"].sum() * 0.0)
    if config.contrastive and s.get("audio") is not None and s.get("visual") is not None:
        terms["contrast"] = contrastive_loss(s["audio"], s["visual"], batch.get("paired"))
    if config.objective in ("multitask", "segmentation") and "masks" in s and "masks" in batch:
        valid = batch["mask_valid"]
        if valid.any():
            pred = F.interpolate(s["masks"][valid].float(), size=batch["masks"].shape[-2:], mode="bilinear",
                                 align_corners=False)
            terms["seg"] = F.binary_cross_entropy_with_logits(pred, batch["masks"][valid])
        else:
            terms["seg"] = s["masks"].sum() * 0.0
    return terms


CONTRASTIVE_TEMPERATURE = 0.05  # CAV-MAE's (Gong et al., ICLR 2023)


def contrastive_loss(audio: torch.Tensor, visual: torch.Tensor, paired: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between each sample's mean-pooled audio tokens and its visual tokens, the
    batch's other samples the negatives; samples that lost a modality (``paired`` False) sit out.
    Zero (with the graph) when fewer than two samples take part."""
    a, v = audio.float().mean(dim=1), visual.float().mean(dim=1)
    if paired is not None:
        a, v = a[paired], v[paired]
    if a.shape[0] < 2:
        return audio.sum() * 0.0 + visual.sum() * 0.0
    logits = F.normalize(a, dim=-1) @ F.normalize(v, dim=-1).t() / CONTRASTIVE_TEMPERATURE
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def distill_terms(config: RunConfig, t: dict, s: dict, grids: Grids) -> dict[str, torch.Tensor]:
    """The method's terms, unweighted, plus 'distill' = beta * (the method's term) and 'kd'."""
    method, with_kd = parse(config.method)
    terms = {}
    if with_kd and config.objective != "segmentation":
        terms["kd"] = kd_loss(t["logits"], s["logits"], config.kd_temperature)
    if method.term is not None:
        context = Context(t, s, grids.teacher, grids.student, config.kernel, config.gamma, config.degree,
                          config.coef0)
        term, parts = method.term(context)
        terms.update(parts)
        terms["method"] = term
        terms["distill"] = config.resolved_beta() * term
    return terms


def total_loss(config: RunConfig, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    total = sum(terms[k] for k in ("cls", "seg", "distill") if k in terms)
    if "kd" in terms:
        total = total + config.kd_weight * terms["kd"]
    if "contrast" in terms:
        total = total + config.contrastive * terms["contrast"]
    return total
