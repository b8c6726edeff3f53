"""Distillation losses: KTD (EM-KTD when given the entropy monitor's weights) and the baselines.

Every loss is a small function of teacher and student tensors, selected by
name elsewhere; nothing here touches a training loop.  Teacher tensors never
receive gradients: the losses detach them, so a caller cannot leak gradient
into a frozen teacher by forgetting ``torch.no_grad``.

Shapes: tokens ``[B, N, C]`` (C may differ between teacher and student),
logits ``[B, K]``, token grids ``(h, w)``.  A token set made of several grids
(the fused tokens: audio grid, then visual grid) takes a list of grids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import MODALITIES

__all__ = [
    "KERNELS",
    "MODALITIES",
    "gram",
    "pool_tokens",
    "ktd_loss",
    "em_ktd_loss",
    "kd_loss",
    "at_loss",
    "spkd_loss",
    "mtst_loss",
    "FitNetsProjection",
    "fitnets_loss",
]

KERNELS = ("linear", "poly", "rbf")

Grid = tuple[int, int]


def gram(tokens: torch.Tensor, kernel: str = "rbf", gamma: float = 0.5, degree: int = 2,
         coef0: float = 1.0) -> torch.Tensor:
    """Per-sample token Gram matrix: ``[B, N, C]`` -> ``[B, N, N]``.

    Tokens are L2-normalised first, so the kernels see only directions:
    ``linear`` k = <zi, zj> (cosine), ``poly`` k = (<zi, zj> + coef0)^degree,
    ``rbf`` k = exp(-gamma * ||zi - zj||^2) = exp(-gamma * (2 - 2 <zi, zj>)).
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [B, N, C], got {tuple(tokens.shape)}")
    z = F.normalize(tokens.float(), dim=-1)
    cosine = torch.bmm(z, z.transpose(1, 2))
    if kernel == "linear":
        return cosine
    if kernel == "poly":
        return (cosine + coef0).pow(degree)
    if kernel == "rbf":
        # ||zi - zj||^2 = 2 - 2 <zi, zj> on unit vectors; written as one scale, shift and exp.
        return torch.exp(cosine.mul(2.0 * gamma).sub_(2.0 * gamma))
    raise ValueError(f"unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")


def _grids(grid: Grid | Sequence[Grid] | None) -> list[Grid] | None:
    if grid is None:
        return None
    if len(grid) == 2 and all(isinstance(g, int) for g in grid):
        return [tuple(grid)]
    return [tuple(g) for g in grid]


def pool_tokens(tokens: torch.Tensor, grid: Grid | Sequence[Grid], target: Grid | Sequence[Grid]) -> torch.Tensor:
    """Average-pool a token grid ``[B, h*w, C]`` to a coarser grid ``[B, h'*w', C]``.

    ``grid`` and ``target`` may be lists of grids for token sets made of
    several grids laid end to end (fused tokens); each part is pooled to its
    counterpart.  Each target cell must cover a whole number of source cells.
    """
    grids, targets = _grids(grid), _grids(target)
    if len(grids) != len(targets):
        raise ValueError(f"{len(grids)} source grids but {len(targets)} target grids")
    if tokens.shape[1] != sum(h * w for h, w in grids):
        raise ValueError(f"{tokens.shape[1]} tokens do not fill the grids {grids}")
    parts, start = [], 0
    for (h, w), (th, tw) in zip(grids, targets):
        part = tokens[:, start:start + h * w]
        start += h * w
        if (h, w) == (th, tw):
            parts.append(part)
            continue
        if h % th or w % tw:
            raise ValueError(f"cannot average-pool a {h}x{w} token grid to {th}x{tw}: "
                             "the sizes must divide evenly")
        x = part.transpose(1, 2).reshape(part.shape[0], part.shape[2], h, w)
        x = F.avg_pool2d(x, kernel_size=(h // th, w // tw))
        parts.append(x.flatten(2).transpose(1, 2))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def ktd_loss(teacher_tokens: torch.Tensor, student_tokens: torch.Tensor, kernel: str = "rbf",
             gamma: float = 0.5, weights: torch.Tensor | None = None, degree: int = 2, coef0: float = 1.0,
             teacher_grid: Grid | Sequence[Grid] | None = None,
             student_grid: Grid | Sequence[Grid] | None = None) -> torch.Tensor:
    """Kernelized token distillation for one modality.

    Per sample: smooth-L1 (threshold 1) between the teacher's and the student's
    Gram matrices, summed over the N*N entries and divided by N*N, times
    ``weights[b]`` when given (``[B]``); then the batch mean.  When the token
    counts differ, the teacher's grid is average-pooled to the student's
    (``teacher_grid``/``student_grid`` are then required).
    """
    teacher_tokens = teacher_tokens.detach()
    if teacher_tokens.shape[1] != student_tokens.shape[1]:
        if teacher_grid is None or student_grid is None:
            raise ValueError(f"teacher has {teacher_tokens.shape[1]} tokens and student {student_tokens.shape[1]}: "
                             "pass teacher_grid and student_grid to pool the teacher's tokens")
        teacher_tokens = pool_tokens(teacher_tokens, teacher_grid, student_grid)
    if teacher_tokens.shape[:2] != student_tokens.shape[:2]:
        raise ValueError(f"teacher tokens {tuple(teacher_tokens.shape)} and student tokens "
                         f"{tuple(student_tokens.shape)} differ in batch or token count")
    with torch.no_grad():
        g_teacher = gram(teacher_tokens, kernel, gamma, degree, coef0)
    g_student = gram(student_tokens, kernel, gamma, degree, coef0)
    per_sample = F.smooth_l1_loss(g_student, g_teacher, reduction="none", beta=1.0).mean(dim=(1, 2))
    if weights is not None:
        per_sample = per_sample * weights.detach().to(per_sample.dtype)
    return per_sample.mean()


def em_ktd_loss(teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor],
                weights: dict[str, torch.Tensor] | None = None, kernel: str = "rbf", gamma: float = 0.5,
                teacher_grids: dict | None = None, student_grids: dict | None = None,
                **kernel_args) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(EM-)KTD summed over the modalities present in both ``teacher`` and ``student``
    (``{"audio": [B, N, C], ...}``). ``weights`` (``{modality: [B]}``) turns KTD
    into EM-KTD. Returns the total and the per-modality terms (for logging)."""
    terms = {}
    for m in MODALITIES:
        if teacher.get(m) is None or student.get(m) is None:
            continue
        terms[m] = ktd_loss(teacher[m], student[m], kernel, gamma,
                            weights=None if weights is None else weights[m],
                            teacher_grid=(teacher_grids or {}).get(m),
                            student_grid=(student_grids or {}).get(m), **kernel_args)
    if not terms:
        raise ValueError("no modality is present in both the teacher and the student tokens")
    return torch.stack(list(terms.values())).sum(), terms


def kd_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD: KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch."""
    t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature ** 2


def _attention_map(tokens: torch.Tensor) -> torch.Tensor:
    return F.normalize(tokens.float().pow(2).sum(dim=-1), dim=1)


def at_loss(teacher_tokens: torch.Tensor, student_tokens: torch.Tensor,
            teacher_grid: Grid | Sequence[Grid] | None = None,
            student_grid: Grid | Sequence[Grid] | None = None) -> torch.Tensor:
    """Attention transfer on tokens: per token the squared L2 norm over channels,
    the ``[B, N]`` map L2-normalised per sample; the squared L2 distance between
    the teacher's and the student's maps, averaged over the batch."""
    teacher_tokens = teacher_tokens.detach()
    if teacher_tokens.shape[1] != student_tokens.shape[1]:
        if teacher_grid is None or student_grid is None:
            raise ValueError("token counts differ: pass teacher_grid and student_grid")
        teacher_tokens = pool_tokens(teacher_tokens, teacher_grid, student_grid)
    diff = _attention_map(teacher_tokens) - _attention_map(student_tokens)
    return diff.pow(2).sum(dim=1).mean()


def spkd_loss(teacher_features: torch.Tensor, student_features: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori, 2019): the ``B x B`` Gram matrix across
    the batch of flattened features, rows L2-normalised; ``||G_t - G_s||_F^2 / B^2``."""
    b = student_features.shape[0]
    t = teacher_features.detach().float().reshape(b, -1)
    s = student_features.float().reshape(b, -1)
    g_t = F.normalize(t @ t.t(), dim=1)
    g_s = F.normalize(s @ s.t(), dim=1)
    return (g_t - g_s).pow(2).sum() / (b * b)


def mtst_loss(teacher_tokens: torch.Tensor, student_tokens: torch.Tensor, keep_ratio: float = 0.5,
              temperature: float = 0.1, generator: torch.Generator | None = None,
              keep: torch.Tensor | None = None) -> torch.Tensor:
    """Masked token similarity transfer (ICASSP 2023), token counts equal.

    A random keep-mask picks ``keep_ratio`` of the tokens (the same ones for
    teacher and student, per sample, or ``keep`` ``[B, K]`` indices given);
    every token's cosine similarities to the kept tokens, divided by
    ``temperature``, form a softmax; KL(teacher || student) summed over the
    kept tokens, averaged over tokens and batch.
    """
    teacher_tokens = teacher_tokens.detach()
    b, n = student_tokens.shape[:2]
    if teacher_tokens.shape[:2] != (b, n):
        raise ValueError("mtst_loss needs equal batch and token counts; pool the teacher first")
    if keep is None:
        k = max(1, int(round(n * keep_ratio)))
        keep = torch.rand(b, n, generator=generator, device=student_tokens.device).argsort(dim=1)[:, :k]

    def log_similarity(tokens):
        z = F.normalize(tokens.float(), dim=-1)
        kept = torch.gather(z, 1, keep.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
        return F.log_softmax(torch.bmm(z, kept.transpose(1, 2)) / temperature, dim=-1)

    t, s = log_similarity(teacher_tokens), log_similarity(student_tokens)
    return (t.exp() * (t - s)).sum(dim=-1).mean()


class FitNetsProjection(nn.Module):
    """FitNets regressor: a learned linear map from the student's width to the teacher's."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, student_tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(student_tokens)


def fitnets_loss(teacher_tokens: torch.Tensor, projected_student_tokens: torch.Tensor) -> torch.Tensor:
    """Mean squared error between teacher tokens and the projected student tokens (same shape)."""
    return F.mse_loss(projected_student_tokens.float(), teacher_tokens.detach().float())
