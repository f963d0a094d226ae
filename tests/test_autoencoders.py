"""The table auto-encoders: the VAE's KL against its closed form, the VQ commitment loss and straight-through
gradient, the noise functions' statistics, and a short pretrain of each objective lowering its loss."""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from selfsup.pretext.table_noise import gaussian_noise, masking_noise, salt_and_pepper

FAST = ["train.batch_size=32", "train.eval_every=1000", "train.checkpoint_every=1000", "train.warmup_steps=5",
        "train.threads=1", "train.log_every=5"]


def test_vae_kl_matches_the_closed_form_on_a_hand_example():
    from selfsup.objectives.vae import gaussian_kl

    mu = torch.tensor([[1.0, 0.0, -2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), math.log(0.25)]])
    # 0.5 (mu^2 + sigma^2 - log sigma^2 - 1) by hand: 0.5 (1 + 1 - 0 - 1), 0.5 (0 + 4 - ln 4 - 1), ...
    by_hand = [0.5, 0.5 * (3 - math.log(4.0)), 0.5 * (4 + 0.25 - math.log(0.25) - 1)]
    np.testing.assert_allclose(gaussian_kl(mu, logvar)[0].numpy(), by_hand, rtol=1e-6)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    np.testing.assert_allclose(gaussian_kl(mu, logvar).numpy(), torch.distributions.kl_divergence(q, p).numpy(),
                               rtol=1e-6)


def test_vq_commitment_loss_and_straight_through_gradient():
    from selfsup.objectives.vqvae import vector_quantizer

    opts = types.SimpleNamespace(ema_decay=0.9, commitment_cost=0.25, kmeans_init=False, dead_code_threshold=0.0)
    torch.manual_seed(0)
    vq = vector_quantizer(4, 16, opts).train()
    x = torch.randn(8, 3, 4, requires_grad=True)
    codebook = vq._codebook.embed[0].detach().clone()  # before this step's EMA update
    q, codes, commit = vq(x)
    nearest = torch.cdist(x.detach().reshape(-1, 4), codebook).argmin(1)
    assert torch.equal(codes.reshape(-1), nearest)
    np.testing.assert_allclose(q.detach().reshape(-1, 4).numpy(), codebook[nearest].numpy(), rtol=1e-5, atol=1e-6)
    # the commitment term: beta * ||x - sg[q]||^2 (mean over elements)
    np.testing.assert_allclose(commit.sum().item(), 0.25 * (x.detach() - q.detach()).pow(2).mean().item(), rtol=1e-5)
    (g,) = torch.autograd.grad(q.sum(), x)
    np.testing.assert_allclose(g.numpy(), np.ones((8, 3, 4)), rtol=1e-6)  # straight-through: identity


def test_noise_statistics_over_many_draws():
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 50).astype(np.float32)
    masked = np.stack([masking_noise(x, rng, 0.3)[1] for _ in range(2000)])
    assert masked.mean() == pytest.approx(0.3, abs=0.01)
    corrupted, mask = masking_noise(x, rng, 0.3)
    assert (corrupted[mask] == 0).all() and (corrupted[~mask] == x[~mask]).all()
    draws = [salt_and_pepper(x, rng, 0.2, -5.0, 5.0) for _ in range(2000)]
    hit = np.stack([m for _, m in draws])
    values = np.concatenate([c[m] for c, m in draws])
    assert hit.mean() == pytest.approx(0.2, abs=0.01)
    assert set(np.unique(values)) == {-5.0, 5.0} and (values > 0).mean() == pytest.approx(0.5, abs=0.02)
    noise = np.stack([gaussian_noise(x, rng, 0.4)[0] - x for _ in range(2000)])
    assert noise.std() == pytest.approx(0.4, rel=0.02) and abs(noise.mean()) < 0.01


@pytest.mark.parametrize("name, steps, extra", [
    ("autoencoder", 60, []), ("denoising_autoencoder", 60, ["objective.noise=salt_and_pepper"]),
    ("vae", 200, ["objective.kl_warmup_steps=0", "objective.free_bits=0.05"]), ("vqvae", 60, []),
])
def test_short_pretrain_lowers_the_loss(tmp_path, name, steps, extra):
    from selfsup.engine.pretrain import pretrain

    metrics = pretrain(name, ["sklearn:breast_cancer"], tmp_path / "run", max_steps=steps, overrides=FAST + extra,
                       progress=False)
    assert metrics["train_loss"] < 0.8 * metrics["train_loss_first"], metrics
    assert {"config.json", "model.safetensors", "preprocessing.json"} <= {p.name for p in (tmp_path / "run" / "model").iterdir()}
    if name == "vqvae":
        assert 0 < metrics["train_code_usage"] <= 1 and metrics["train_codebook_perplexity"] > 1
    if name == "vae":
        assert metrics["train_kl_weight"] == 1.0 and metrics["train_kl"] > 0  # no warm-up: the loss is the -ELBO


def test_vqvae_resume_reproduces_the_uninterrupted_run(tmp_path):
    """The codebook state (k-means init flag, EMA counts and sums) travels in the checkpoint: resume is exact."""
    from safetensors.torch import load_file

    from selfsup.engine.pretrain import pretrain

    sets = FAST + ["train.schedule=constant", "train.checkpoint_every=15"]
    pretrain("vqvae", ["sklearn:breast_cancer"], tmp_path / "whole", max_steps=30, overrides=sets, progress=False)
    pretrain("vqvae", ["sklearn:breast_cancer"], tmp_path / "split", max_steps=15, overrides=sets, progress=False)
    pretrain("vqvae", ["sklearn:breast_cancer"], tmp_path / "split", max_steps=30, overrides=sets, resume=True,
             progress=False)
    a, b = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("whole", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
