"""Evaluation metrics, computed exactly as the papers' code does.

Classification (VGGSound, CAV-MAE): top-1 / top-5 accuracy, mAP and mAUC over classes.
Segmentation (AVSBench): mIoU, and the F-score with beta^2 = 0.3 as AVSBench's
utility code computes it (``legacy_fscore``) plus a batch-independent variant.

AVSBench's rules, kept here:
  * mIoU: prediction = sigmoid(logit) > 0.5; per-frame IoU; a frame whose ground truth
    is EMPTY scores the fraction of pixels correctly predicted as background.
  * F-score: per frame a precision/recall curve over 255 thresholds
    linspace(0, 1 - 1e-10) on sigmoid(logit), F = (1 + b2) P R / (b2 P + R), NaN -> 0;
    frames with an empty ground truth are skipped; the curves are averaged over the
    frames of a BATCH and the maximum over thresholds is taken per batch; the batch
    values are then averaged.  A batch of only empty frames scores 0.  The result
    therefore depends on the test batch size (AVSBench tests one 5-frame video per batch).
  * ``fscore`` (batch-independent): the same curve averaged over every non-empty frame
    of the whole set, maximum taken once.
"""

from __future__ import annotations

import numpy as np
import torch

BETA2 = 0.3
PR_THRESHOLDS = 255


# ---------------------------------------------------------------- classification

def topk_accuracy(scores: np.ndarray, targets: np.ndarray, k: int = 1) -> float:
    """Fraction of clips whose top-k predictions contain one of their labels.

    scores ``[N, K]``; targets ``[N, K]`` multi-hot (a single-label set has one 1 per row).
    """
    scores, targets = np.asarray(scores), np.asarray(targets)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hit = np.take_along_axis(targets, top, axis=1).max(axis=1) > 0
    return float(hit.mean())


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the precision-recall curve as scikit-learn computes it:
    sum over thresholds of (R_n - R_{n-1}) P_n, scores tied at a threshold taken together."""
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order] > 0
    distinct = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tp = np.cumsum(positives)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / positives.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Probability that a positive outranks a negative (ties count half): the ROC AUC."""
    positives = positives > 0
    ranks = _average_ranks(scores)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    sorted_x = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def classification_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """top1, top5, mAP, mAUC (the two means over the classes that have both positives and negatives)."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets)
    usable = [k for k in range(targets.shape[1]) if 0 < targets[:, k].sum() < targets.shape[0]]
    return {
        "top1": topk_accuracy(scores, targets, 1),
        "top5": topk_accuracy(scores, targets, min(5, scores.shape[1])),
        "mAP": float(np.mean([average_precision(scores[:, k], targets[:, k]) for k in usable])) if usable else float("nan"),
        "mAUC": float(np.mean([roc_auc(scores[:, k], targets[:, k]) for k in usable])) if usable else float("nan"),
        "clips": int(scores.shape[0]),
        "classes_scored": len(usable),
    }


# ---------------------------------------------------------------- segmentation (AVSBench)

def frame_iou(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-frame IoU with AVSBench's empty-mask rule: ``[N, H, W]`` logits and {0,1} targets -> ``[N]``."""
    assert logits.shape == target.shape and logits.ndim == 3
    pred = (torch.sigmoid(logits.float()) > 0.5).float()
    target = target.float()
    inter = (pred * target).sum(dim=(1, 2))
    union = torch.maximum(pred, target).sum(dim=(1, 2))
    empty = target.sum(dim=(1, 2)) == 0
    inter = torch.where(empty, ((1 - pred) * (1 - target)).sum(dim=(1, 2)), inter)
    union = torch.where(empty, torch.full_like(union, target.shape[1] * target.shape[2]), union)
    return inter / (union + eps)


def frame_fscore_curves(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame F curves over the 255 thresholds -> (``[M, 255]`` for the M non-empty frames, kept ``[N]``)."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    keep = target.mean(dim=1) != 0
    prob, target = prob[keep], target[keep]
    thresholds = torch.linspace(0, 1 - 1e-10, PR_THRESHOLDS)
    # A pixel is predicted at threshold i when prob >= thresholds[i], i.e. when i < (thresholds it reaches):
    # count pixels by thresholds reached, then suffix sums give every threshold's counts at once.
    m, bins = prob.shape[0], PR_THRESHOLDS + 1
    reached = torch.bucketize(prob, thresholds, right=True) + (torch.arange(m) * bins)[:, None]
    every = torch.bincount(reached.flatten(), minlength=m * bins).view(m, bins)
    positive = torch.bincount(reached.flatten(), weights=target.flatten(), minlength=m * bins).view(m, bins)
    predicted = every.flip(1).cumsum(1).flip(1)[:, 1:].float()
    tp = positive.flip(1).cumsum(1).flip(1)[:, 1:].float()
    precision = tp / (predicted + 1e-20)
    recall = tp / (target.sum(dim=1, keepdim=True) + 1e-20)
    curves = torch.nan_to_num((1 + BETA2) * precision * recall / (BETA2 * precision + recall), nan=0.0)
    return curves, keep


class SegmentationMeter:
    """Accumulates AVSBench metrics batch by batch.

    ``update(logits, target)`` with ``[N, H, W]`` (or ``[N, 1, H, W]``) logits and binary
    targets for the frames of one test batch.  ``result()`` gives mIoU (per-frame mean),
    ``legacy_fscore`` (AVSBench: per-batch max of the batch-mean curve, averaged over
    batches) and ``fscore`` (batch-independent: max of the curve averaged over all frames).
    """

    def __init__(self):
        self.ious: list[torch.Tensor] = []
        self.batch_scores: list[float] = []
        self.curve_sum = torch.zeros(PR_THRESHOLDS)
        self.curve_frames = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.ndim == 4:
            logits, target = logits[:, 0], target[:, 0]
        logits, target = logits.detach().cpu(), target.detach().cpu()
        self.ious.append(frame_iou(logits, target))
        curves, _ = frame_fscore_curves(logits, target)
        batch_curve = curves.mean(dim=0) if curves.shape[0] else torch.zeros(PR_THRESHOLDS)
        self.batch_scores.append(float(batch_curve.max()))
        self.curve_sum += curves.sum(dim=0)
        self.curve_frames += curves.shape[0]

    def result(self) -> dict[str, float]:
        ious = torch.cat(self.ious) if self.ious else torch.zeros(0)
        return {
            "mIoU": float(ious.mean()) if ious.numel() else float("nan"),
            "legacy_fscore": float(np.mean(self.batch_scores)) if self.batch_scores else float("nan"),
            "fscore": float((self.curve_sum / max(1, self.curve_frames)).max()) if self.curve_frames else float("nan"),
            "frames": int(ious.numel()),
            "batches": len(self.batch_scores),
        }
