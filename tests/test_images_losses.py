"""Image SSL building blocks against their formulas: NT-Xent, Barlow Twins, VICReg, EMA and its schedule,
rotation labels, context-prediction positions, and the collapse diagnostic."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selfsup import losses
from selfsup.diagnostics import diagnose, effective_rank, feature_std
from selfsup.evaluation.probes import knn_probe
from selfsup.pretext.views import NEIGHBOURS, context_geometry, context_pair, rotations, simclr_pipeline


def test_nt_xent_equals_a_direct_computation_on_a_hand_example():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[3.0, 3.0], [-1.0, 1.0]])
    t = 0.5
    views = [v / v.norm() for v in (*z1, *z2)]  # a0, a1, b0, b1
    positive = {0: 2, 1: 3, 2: 0, 3: 1}
    total = 0.0
    for i in range(4):
        sims = {k: float(views[i] @ views[k]) / t for k in range(4) if k != i}
        total += -math.log(math.exp(sims[positive[i]]) / sum(math.exp(s) for s in sims.values()))
    assert losses.nt_xent(z1, z2, t).item() == pytest.approx(total / 4, rel=1e-6)
    # perfectly aligned, well separated pairs give a lower loss than swapped ones
    assert losses.nt_xent(z1, z1, 0.1) < losses.nt_xent(z1, z1.flip(0), 0.1)


def test_barlow_twins_loss_equals_its_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    lam = 0.0051
    a = (z1 - z1.mean(0)) / z1.std(0, unbiased=False)
    b = (z2 - z2.mean(0)) / z2.std(0, unbiased=False)
    c = a.t() @ b / 16
    expected = sum((1 - c[i, i]) ** 2 for i in range(5)) + lam * sum(c[i, j] ** 2 for i in range(5)
                                                                      for j in range(5) if i != j)
    assert losses.barlow_twins_loss(z1, z2, lam).item() == pytest.approx(float(expected), rel=1e-4)
    assert losses.barlow_twins_loss(z1, z1, lam) < losses.barlow_twins_loss(z1, z2, lam)


def test_vicreg_terms_equal_their_formulas():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(10, 4, generator=g) * 0.5, torch.randn(10, 4, generator=g) * 2
    n, d = z1.shape
    assert losses.vicreg_invariance(z1, z2).item() == pytest.approx(float(((z1 - z2) ** 2).sum() / (n * d)), rel=1e-5)
    std = torch.sqrt(z1.var(0, unbiased=True) + 1e-4)
    assert losses.vicreg_variance(z1).item() == pytest.approx(float(torch.clamp(1 - std, min=0).mean()), rel=1e-5)
    zc = z2 - z2.mean(0)
    cov = zc.t() @ zc / (n - 1)
    off = sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    assert losses.vicreg_covariance(z2).item() == pytest.approx(float(off), rel=1e-5)
    loss, parts = losses.vicreg_loss(z1, z2)
    expected = 25 * parts["invariance"] + 25 * parts["variance"] + 1 * parts["covariance"]
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert parts["variance"] == pytest.approx(float(losses.vicreg_variance(z1) + losses.vicreg_variance(z2)))


def test_ema_update_matches_its_formula_and_the_cosine_schedule():
    torch.manual_seed(0)
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in target.parameters()]
    losses.ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    assert losses.cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert losses.cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert losses.cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)


def test_negative_cosine_and_byol_loss_stop_gradients_through_the_target():
    p = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 3, requires_grad=True)
    (losses.negative_cosine(p, z) + losses.byol_loss(p, z)).backward()
    assert p.grad is not None and z.grad is None
    assert losses.byol_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.negative_cosine(z, z).item() == pytest.approx(-1.0, abs=1e-6)


def test_rotation_labels_undo_the_rotation():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    rotated, labels = rotations(images)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for x, k in zip(rotated, labels.tolist()):
        assert any(torch.equal(torch.rot90(x, -k, dims=(1, 2)), img) for img in images)
    # label 1 = 90 degrees counter-clockwise: the top-right pixel moves to the top-left
    assert rotated[2, 0, 0, 0] == images[0, 0, 0, 3]


def test_context_positions_are_right():
    # each 3x3 cell of a 30x30 image is filled with its own index, so a patch tells where it came from
    size, gap = 30, 2
    cell, patch = context_geometry(size, gap)
    image = np.zeros((1, size, size), np.uint8)
    for r in range(3):
        for c in range(3):
            image[:, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = r * 3 + c
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        centre, other, label = context_pair(image, rng, gap=gap, jitter=0)
        assert centre.shape == other.shape == (1, patch, patch)
        assert (centre == 4).all()
        r, c = NEIGHBOURS[label]
        assert (other == r * 3 + c).all()
        seen.add(label)
    assert seen == set(range(8))
    # with jitter the patch may cross into the gap but stays mostly in its cell
    _, other, label = context_pair(image, rng, gap=gap, jitter=1)
    r, c = NEIGHBOURS[label]
    assert (other == r * 3 + c).mean() > 0.7


def test_simclr_views_keep_shape_and_range_and_follow_the_torch_seed():
    x = torch.rand(6, 3, 16, 16)
    aug = simclr_pipeline(16, 3)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    assert simclr_pipeline(16, 1)(torch.rand(4, 1, 16, 16)).shape == (4, 1, 16, 16)


def test_collapse_diagnostic_flags_a_constant_encoder():
    torch.manual_seed(0)
    healthy = diagnose(torch.randn(128, 32))
    assert not healthy.collapsed and healthy.effective_rank > 20 and healthy.feature_std > 0.5
    constant = diagnose(torch.ones(128, 32) * 3.0)
    assert constant.collapsed and constant.feature_std == 0 and constant.effective_rank == 0
    line = torch.randn(128, 1) * torch.randn(1, 32)  # dimensional collapse to one direction
    assert float(effective_rank(line)) < 1.5 and diagnose(line).collapsed
    assert float(feature_std(torch.randn(64, 8))) > 0.5


def test_knn_probe_votes_with_cosine_similarity():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    y = np.array([0, 0, 1, 1])
    assert knn_probe(train, y, np.array([[5, 1], [1, 5]], np.float32), np.array([0, 1]), k=3) == 1.0


def test_kmeans_reseeds_empty_clusters():
    from selfsup.objectives.deepcluster import kmeans

    # 3 distinct points but k = 5: plain Lloyd would leave clusters empty; every cluster must end up used
    x = torch.tensor([[0.0, 0.0]] * 10 + [[5.0, 5.0]] * 10 + [[0.0, 5.0]] * 10)
    x = x + 0.01 * torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    assign, centroids, reseeded = kmeans(x, 5, 10, torch.Generator().manual_seed(1))
    assert centroids.shape == (5, 2) and assign.shape == (30,)
    assert torch.bincount(assign, minlength=5).min() >= 1
    # points from one blob never share a cluster with another blob
    for blob in range(3):
        others = torch.cat([assign[b * 10:(b + 1) * 10] for b in range(3) if b != blob])
        assert not set(assign[blob * 10:(blob + 1) * 10].tolist()) & set(others.tolist())
