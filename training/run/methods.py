"""The distillation methods, one registry entry each.

An entry says everything the run needs to know about a method: its distillation term
(a function of the teacher's and the student's outputs), its default weight beta, whether
it reads the entropy monitor's weights, and the modules it trains beside the student
(FitNets' projections).  ``--method``, ``--help``, the results tables and the throughput
benchmark all read :data:`METHODS`; every base method also exists as ``<name>+kd``.

Adding a method: write its loss in ``emktd/losses.py`` (with a test against a hand-computed
value), then one :func:`register` call below (with a test that a run takes a step with it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from emktd import losses as L
from emktd.models import MODALITIES


@dataclass(frozen=True)
class Context:
    """What a distillation term reads: teacher outputs ``t`` and student outputs ``s`` (dicts of
    logits, tokens per modality, ``w_<modality>`` EM weights when the method uses the monitor,
    and whatever the method's extra modules added), the token grids and the run's settings."""

    t: dict[str, torch.Tensor]
    s: dict[str, torch.Tensor]
    teacher_grids: dict
    student_grids: dict
    kernel: str = "rbf"
    gamma: float = 0.5
    degree: int = 2
    coef0: float = 1.0


# A term returns the method's loss (unweighted) and named parts to log.
Term = Callable[[Context], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    term: Term | None = None  # None: no distillation term (no distillation, or KD alone)
    default_beta: float = 0.0
    uses_monitor: bool = False  # reads the entropy monitor's weights (``lam`` matters)
    uses_kernel: bool = False  # compares token Gram matrices (``kernel`` and its parameters matter)
    # (student width, teacher width) -> a module trained with the student; its forward takes the
    # student's outputs and returns extra outputs (it runs inside the student's forward, for DDP).
    extra_modules: Callable[[int, int], nn.Module] | None = None
    kd_only: bool = False  # the method is Hinton's KD itself
    static_weights: bool = False  # reads the monitor's mean weight per modality on train instead of each sample's


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS or "+" in method.name:
        raise ValueError(f"method name {method.name!r} is taken or contains '+'")
    METHODS[method.name] = method
    return method


def names() -> tuple[str, ...]:
    """Every value ``--method`` takes: the base methods, then ``<base>+kd`` for those with a term."""
    return tuple(METHODS) + tuple(f"{m.name}+kd" for m in METHODS.values() if m.term is not None)


def parse(name: str) -> tuple[Method, bool]:
    """``'emktd+kd'`` -> (the EM-KTD entry, True): the base method and whether KD is added."""
    base, plus, kd = name.partition("+")
    if base not in METHODS or (plus and kd != "kd") or name not in names():
        raise ValueError(f"method {name!r}: expected one of {', '.join(names())}")
    method = METHODS[base]
    return method, bool(plus) or method.kd_only


# ---------------------------------------------------------------- the terms

def _pooled(ctx: Context, m: str) -> torch.Tensor:
    return L.pool_tokens(ctx.t[m], ctx.teacher_grids[m], ctx.student_grids[m])


def _ktd(ctx: Context, weights: dict[str, torch.Tensor] | None = None):
    total, per = L.em_ktd_loss({m: ctx.t[m] for m in MODALITIES}, {m: ctx.s[m] for m in MODALITIES}, weights,
                               kernel=ctx.kernel, gamma=ctx.gamma, teacher_grids=ctx.teacher_grids,
                               student_grids=ctx.student_grids, degree=ctx.degree, coef0=ctx.coef0)
    return total, {f"ktd_{m}": v for m, v in per.items()}


def _emktd(ctx: Context):
    return _ktd(ctx, {m: ctx.t[f"w_{m}"] for m in MODALITIES})


def _at(ctx: Context):
    return sum(L.at_loss(ctx.t[m], ctx.s[m], ctx.teacher_grids[m], ctx.student_grids[m]) for m in MODALITIES), {}


def _spkd(ctx: Context):
    return sum(L.spkd_loss(ctx.t[m], ctx.s[m]) for m in MODALITIES), {}


def _mtst(ctx: Context):
    return sum(L.mtst_loss(_pooled(ctx, m), ctx.s[m]) for m in MODALITIES), {}


def _fitnets(ctx: Context):
    return sum(L.fitnets_loss(_pooled(ctx, m), ctx.s[f"proj_{m}"]) for m in MODALITIES), {}


class FitNetsProjections(nn.Module):
    """One FitNets projection per modality; adds ``proj_<modality>`` to the student's outputs."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.projections = nn.ModuleDict({m: L.FitNetsProjection(student_dim, teacher_dim) for m in MODALITIES})

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"proj_{m}": self.projections[m](out[m]) for m in MODALITIES}


# Default betas: KTD and EM-KTD take the values one digest of the paper reports (333, 666);
# the baselines their papers' usual weights.  Registration order is the order of the tables.
register(Method("none", "no distillation: the task losses alone"))
register(Method("kd", "Hinton's knowledge distillation on the logits", kd_only=True))
register(Method("at", "attention transfer on the tokens", _at, 1000.0))
register(Method("spkd", "similarity-preserving KD (batch Gram matrices)", _spkd, 3000.0))
register(Method("mtst", "masked token similarity transfer", _mtst, 1.0))
register(Method("fitnets", "feature regression through learned projections", _fitnets, 1.0,
                extra_modules=FitNetsProjections))
register(Method("ktd", "kernelized token distillation", _ktd, 333.0, uses_kernel=True))
register(Method("emktd", "entropy-monitored KTD", _emktd, 666.0, uses_monitor=True, uses_kernel=True))
# The control that isolates the per-sample part of EM-KTD: its weights with the clip-to-clip
# variation taken out (the monitor's mean weight per modality over the training frames).
register(Method("emktd-static", "KTD weighted by the monitor's mean weight per modality on train (EM-KTD "
                "without the per-sample part)", _emktd, 666.0, uses_monitor=True, uses_kernel=True,
                static_weights=True))
