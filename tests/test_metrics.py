import math

import numpy as np
import pytest
import torch

from training.run.metrics import (SegmentationMeter, average_precision, classification_metrics, frame_iou, roc_auc,
                     topk_accuracy)


def logit(p):
    p = torch.tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p)).float()


def test_topk_accuracy():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    targets = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 1]])
    assert topk_accuracy(scores, targets, 1) == pytest.approx(2 / 3)  # clip 2's top-1 is wrong
    assert topk_accuracy(scores, targets, 2) == 1.0


def test_average_precision_and_auc_by_hand():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    positives = np.array([0, 0, 1, 1])
    # Ranked: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-): AP = 0.5 * 1 + 0.5 * 2/3
    assert average_precision(scores, positives) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # Pairs (pos, neg): 0.8 beats both, 0.35 beats 0.1 only: 3 of 4.
    assert roc_auc(scores, positives) == pytest.approx(0.75)
    # Ties count half.
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)


def test_classification_metrics_skip_classes_without_negatives():
    scores = np.array([[0.9, 0.1], [0.8, 0.2]])
    targets = np.array([[1, 0], [1, 0]])  # class 0 has no negatives, class 1 no positives
    out = classification_metrics(scores, targets)
    assert out["top1"] == 1.0 and out["classes_scored"] == 0 and math.isnan(out["mAP"])


def test_iou_with_empty_mask_rule():
    target = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 0]]]).float()
    probs = [[[0.9, 0.6], [0.4, 0.1]], [[0.2, 0.8], [0.1, 0.1]], [[0.7, 0.2], [0.3, 0.1]]]
    iou = frame_iou(logit(probs), target)
    # Frame 3 has an empty ground truth: 3 of 4 pixels correctly background.
    torch.testing.assert_close(iou, torch.tensor([1.0, 0.0, 0.75]), atol=1e-6, rtol=0)


def test_fscore_legacy_depends_on_batches_and_the_variant_does_not():
    a_gt, a_p = [[1, 1], [0, 0]], [[0.9, 0.6], [0.4, 0.1]]
    b_gt, b_p = [[1, 0], [0, 0]], [[0.2, 0.8], [0.1, 0.1]]
    f = lambda p, r: 1.3 * p * r / (0.3 * p + r)  # noqa: E731
    # Frame A's best threshold keeps exactly its two object pixels: F = 1.
    # Frame B: best is all but the two 0.1 pixels: P = 1/2, R = 1.
    # Together, the best single threshold (0.1 < t <= 0.2) averages A's F(2/3, 1) and B's F(1/2, 1).
    one_batch = (f(2 / 3, 1) + f(1 / 2, 1)) / 2
    per_frame = (1.0 + f(1 / 2, 1)) / 2

    together = SegmentationMeter()
    together.update(logit([a_p, b_p]), torch.tensor([a_gt, b_gt]).float())
    separate = SegmentationMeter()
    separate.update(logit([a_p]), torch.tensor([a_gt]).float())
    separate.update(logit([b_p]), torch.tensor([b_gt]).float())
    assert together.result()["legacy_fscore"] == pytest.approx(one_batch, abs=1e-5)
    assert separate.result()["legacy_fscore"] == pytest.approx(per_frame, abs=1e-5)
    assert together.result()["fscore"] == pytest.approx(separate.result()["fscore"]) == pytest.approx(one_batch, abs=1e-5)
    assert together.result()["mIoU"] == pytest.approx(0.5)

    # A batch holding only an empty-ground-truth frame scores 0 in the legacy F and is skipped otherwise.
    separate.update(logit([[[0.7, 0.2], [0.3, 0.1]]]), torch.zeros(1, 2, 2))
    assert separate.result()["legacy_fscore"] == pytest.approx(per_frame * 2 / 3, abs=1e-5)
    assert separate.result()["fscore"] == pytest.approx(one_batch, abs=1e-5)
    assert separate.result()["frames"] == 3


def test_average_precision_and_auc_match_scikit_learn():
    """CAV-MAE's evaluation computes mAP and mAUC with scikit-learn: the same numbers, ties included."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    scores = np.round(rng.random((200, 12)), 1)  # rounded: many ties
    targets = (rng.random((200, 12)) < 0.2).astype(np.float32)
    targets[:, 0] = 0  # a class without positives is left out of the means
    usable = [k for k in range(12) if 0 < targets[:, k].sum() < 200]
    for k in usable:
        assert average_precision(scores[:, k], targets[:, k]) == pytest.approx(
            average_precision_score(targets[:, k], scores[:, k]), abs=1e-12)
        assert roc_auc(scores[:, k], targets[:, k]) == pytest.approx(roc_auc_score(targets[:, k], scores[:, k]),
                                                                      abs=1e-12)
    metrics = classification_metrics(scores, targets)
    assert metrics["classes_scored"] == len(usable) == 11
    assert metrics["mAP"] == pytest.approx(np.mean(average_precision_score(targets[:, usable], scores[:, usable],
                                                                           average=None)), abs=1e-12)
    assert metrics["mAUC"] == pytest.approx(roc_auc_score(targets[:, usable], scores[:, usable], average="macro"),
                                            abs=1e-12)
