import math

import pytest
import torch
import torch.nn.functional as F

from emktd.losses import (KERNELS, FitNetsProjection, at_loss, em_ktd_loss, fitnets_loss, gram, kd_loss, ktd_loss,
                          mtst_loss, pool_tokens, spkd_loss)
from emktd.monitor import EntropyMonitor, entropy_weights


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def test_linear_gram_ignores_rotation_and_channel_count():
    tokens = torch.randn(2, 10, 16, generator=rng())
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=rng(1)))
    torch.testing.assert_close(gram(tokens, "linear"), gram(tokens @ q, "linear"))
    # The same tokens in a 48-channel space (orthonormal columns): same Gram matrix.
    wide, _ = torch.linalg.qr(torch.randn(48, 16, generator=rng(2)))
    torch.testing.assert_close(gram(tokens, "linear"), gram(tokens @ wide.t(), "linear"))
    assert not torch.allclose(gram(tokens, "linear"), gram(tokens * torch.linspace(0.1, 2, 16), "linear"))


def test_kernels_on_unit_vectors():
    tokens = torch.tensor([[[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    cos = torch.tensor([[1, 0, 0.5 ** 0.5], [0, 1, 0.5 ** 0.5], [0.5 ** 0.5, 0.5 ** 0.5, 1]])
    torch.testing.assert_close(gram(tokens, "linear")[0], cos)
    torch.testing.assert_close(gram(tokens, "poly", degree=2, coef0=1.0)[0], (cos + 1) ** 2)
    torch.testing.assert_close(gram(tokens, "rbf", gamma=0.5)[0], torch.exp(-0.5 * (2 - 2 * cos)))
    with pytest.raises(ValueError, match="unknown kernel"):
        gram(tokens, "sigmoid")


@pytest.mark.parametrize("kernel", KERNELS)
def test_ktd_zero_for_identical_positive_otherwise(kernel):
    t = torch.randn(3, 12, 32, generator=rng())
    assert ktd_loss(t, t.clone(), kernel=kernel).item() == pytest.approx(0.0, abs=1e-7)
    assert ktd_loss(t, torch.randn(3, 12, 8, generator=rng(1)), kernel=kernel).item() > 1e-4


def test_ktd_hand_computed():
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # orthogonal: linear Gram = I
    student = torch.tensor([[[1.0, 0.0], [2.0, 0.0]]])  # parallel: linear Gram = all ones
    # Off-diagonal differences of 1: smooth-L1 gives 0.5 each; (0.5 + 0.5) / 4 entries.
    assert ktd_loss(teacher, student, kernel="linear").item() == pytest.approx(0.25)
    assert ktd_loss(teacher, student, kernel="linear", weights=torch.tensor([0.5])).item() == pytest.approx(0.125)
    d = 1 - math.exp(-1.0)  # rbf, gamma 0.5: teacher off-diagonal exp(-0.5 * 2), student 1
    assert ktd_loss(teacher, student, kernel="rbf", gamma=0.5).item() == pytest.approx(2 * 0.5 * d * d / 4)
    # Poly: teacher (0 + 1)^2 = 1 off the diagonal, 4 on it; student 4 everywhere: |d| = 3 -> 3 - 0.5.
    assert ktd_loss(teacher, student, kernel="poly").item() == pytest.approx(2 * 2.5 / 4)


def test_ktd_weights_are_per_sample_then_batch_mean():
    t, s = torch.randn(2, 6, 8, generator=rng()), torch.randn(2, 6, 4, generator=rng(1))
    per = torch.stack([ktd_loss(t[i:i + 1], s[i:i + 1]) for i in range(2)])
    w = torch.tensor([0.2, 0.9])
    assert ktd_loss(t, s, weights=w).item() == pytest.approx((per * w).mean().item(), rel=1e-6)


def test_gradients_reach_the_student_only():
    teacher = torch.randn(2, 8, 16, generator=rng(), requires_grad=True)
    student = torch.randn(2, 8, 4, generator=rng(1), requires_grad=True)
    for loss in (ktd_loss(teacher, student), at_loss(teacher, student), mtst_loss(teacher, student, generator=rng()),
                 kd_loss(teacher.mean((1, 2))[:, None].expand(2, 3), student.mean((1, 2))[:, None] * torch.ones(3)),
                 spkd_loss(teacher, student)):
        loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_pooling_by_hand():
    tokens = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid holding its own row-major index
    pooled = pool_tokens(tokens, (4, 4), (2, 2))
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    # Fused tokens: a 2x4 audio grid then the 4x4 visual grid; only the visual part is pooled.
    fused = torch.cat([torch.arange(8.0).reshape(1, 8, 1) + 100, tokens], dim=1)
    out = pool_tokens(fused, [(2, 4), (4, 4)], [(2, 4), (2, 2)])
    assert out.flatten().tolist() == [100, 101, 102, 103, 104, 105, 106, 107, 2.5, 4.5, 10.5, 12.5]
    with pytest.raises(ValueError, match="divide evenly"):
        pool_tokens(tokens, (4, 4), (3, 3))


def test_ktd_pools_the_teacher_to_the_student_grid():
    teacher = torch.randn(2, 196, 32, generator=rng())  # 224 px teacher, 14x14
    student = torch.randn(2, 49, 8, generator=rng(1))  # 112 px student, 7x7
    with pytest.raises(ValueError, match="teacher_grid"):
        ktd_loss(teacher, student)
    expected = ktd_loss(pool_tokens(teacher, (14, 14), (7, 7)), student)
    assert ktd_loss(teacher, student, teacher_grid=(14, 14), student_grid=(7, 7)).item() == pytest.approx(expected.item())


def test_entropy_weights():
    logits = torch.tensor([[1e4, 0.0, 0.0], [2.0, 1.0, 0.0], [0.5, 0.2, 0.0], [0.0, 0.0, 0.0]])
    w = entropy_weights(logits, lam=1.0)
    assert w.shape == (4,)
    assert w[0].item() == 1.0  # one-hot: zero entropy
    assert torch.all(w > 0) and torch.all(w <= 1)
    assert torch.all(w[1:] < w[:-1])  # more entropy, less weight
    assert w[3].item() == pytest.approx(1 / 3)  # uniform over 3 classes: exp(-ln 3)
    assert entropy_weights(logits, lam=2.0)[3].item() == pytest.approx(1 / 9)
    # Segmentation: per-pixel entropies averaged per sample.
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0] = 1e4  # top row certain, bottom row uniform
    assert entropy_weights(maps).item() == pytest.approx(math.exp(-math.log(2) / 2))
    assert not entropy_weights(logits.requires_grad_()).requires_grad


def test_em_ktd_sums_weighted_modalities():
    t = {m: torch.randn(2, 6, 16, generator=rng(i)) for i, m in enumerate(("audio", "visual", "fused"))}
    s = {m: torch.randn(2, 6, 4, generator=rng(10 + i)) for i, m in enumerate(("audio", "visual", "fused"))}
    plain, terms = em_ktd_loss(t, s)
    assert set(terms) == {"audio", "visual", "fused"}
    assert plain.item() == pytest.approx(sum(ktd_loss(t[m], s[m]).item() for m in t))
    w = {"audio": torch.tensor([1.0, 0.0]), "visual": torch.zeros(2), "fused": torch.zeros(2)}
    weighted, _ = em_ktd_loss(t, s, w)
    assert weighted.item() == pytest.approx(ktd_loss(t["audio"][:1], s["audio"][:1]).item() / 2)


def test_ktd_between_models_of_different_resolution():
    from emktd.models import create_model

    teacher = create_model("bench-student", image_size=128).eval()
    student = create_model("bench-student", image_size=64)
    c = teacher.config
    audio = torch.randn(2, c.audio_frames, c.num_mel_bins, generator=rng())
    frames = torch.randn(2, 3, 128, 128, generator=rng(1))
    with torch.no_grad():
        t = teacher(audio, frames).tokens()
    s = student(audio, F.avg_pool2d(frames, 2)).tokens()
    loss, terms = em_ktd_loss(t, s, teacher_grids=c.token_grids, student_grids=student.config.token_grids)
    loss.backward()
    assert set(terms) == {"audio", "visual", "fused"} and loss.item() > 0
    assert student.patch_embed_v.proj.weight.grad.abs().sum() > 0


def test_entropy_monitor_learns_and_weighs():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (64,))
    informative = F.one_hot(labels, 4).float()[:, None, :].repeat(1, 5, 2) + 0.1 * torch.randn(64, 5, 8)
    noise = torch.randn(64, 5, 8)
    monitor = EntropyMonitor(8, num_classes=4)
    tokens = {"audio": informative, "visual": noise, "fused": informative}
    optimizer = torch.optim.Adam(monitor.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        monitor.probe_loss(tokens, labels).backward()
        optimizer.step()
    w = monitor.weights(tokens)
    assert w["audio"].mean() > 0.8 > 0.6 > w["visual"].mean()  # confident where the tokens carry the class


def test_segmentation_monitor_shapes():
    monitor = EntropyMonitor(8, task="segmentation", visual_grid=(4, 4), image_size=16)
    tokens = {"audio": torch.randn(2, 6, 8), "visual": torch.randn(2, 16, 8), "fused": torch.randn(2, 22, 8)}
    logits = monitor(tokens)
    assert all(out.shape == (2, 2, 16, 16) for out in logits.values())
    masks = (torch.rand(2, 1, 16, 16) > 0.5).float()
    assert monitor.probe_loss(tokens, masks).item() > 0
    assert all(w.shape == (2,) for w in monitor.weights(tokens).values())


def test_kd_hand_computed():
    teacher = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[math.log(3.0), 0.0]])  # p_s = (0.75, 0.25)
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kd_loss(teacher, student, temperature=1.0).item() == pytest.approx(kl)
    assert kd_loss(teacher, 2 * student, temperature=2.0).item() == pytest.approx(4 * kl)


def test_at_hand_computed():
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # token norms^2 (1, 0)
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 1) -> normalised (0.707, 0.707)
    assert at_loss(teacher, student).item() == pytest.approx(2 - math.sqrt(2))


def test_spkd_hand_computed():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # batch Gram I
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # all ones, rows -> (0.707, 0.707)
    assert spkd_loss(teacher, student).item() == pytest.approx((2 - math.sqrt(2)) / 2)


def test_mtst_hand_computed():
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    student = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    keep = torch.tensor([[0, 1]])
    p = math.e / (1 + math.e)  # teacher row softmax of cosines (1, 0) at temperature 1
    kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))  # against the student's uniform row
    assert mtst_loss(teacher, student, temperature=1.0, keep=keep).item() == pytest.approx(kl)


def test_fitnets_hand_computed():
    projection = FitNetsProjection(2, 3)
    with torch.no_grad():
        projection.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        projection.proj.bias.zero_()
    student = torch.tensor([[[1.0, 2.0]]])
    teacher = torch.tensor([[[1.0, 2.0, 0.0]]])  # projection gives (1, 2, 3): error 3 in one of 3 entries
    assert fitnets_loss(teacher, projection(student)).item() == pytest.approx(9 / 3)
