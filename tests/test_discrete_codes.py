"""The discrete-code table auto-encoders: the straight-through Bernoulli code (binary_autoencoder) and the
straight-through Gumbel-softmax one-hot code (onehot_autoencoder) — exact 0/1 forward values, the gradients
of the straight-through estimators on hand examples, deterministic codes in evaluation, the temperature
schedule, and short real runs (held-out loss, identical scores after a reload, AUROC against an untrained
model)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from test_anomaly import planted  # normal rows on a 2-d manifold in 8-d, off-manifold anomalies

FAST = ["train.batch_size=32", "train.eval_every=1000", "train.checkpoint_every=1000", "train.warmup_steps=5",
        "train.threads=1", "train.log_every=5"]


def test_straight_through_bernoulli_forward_is_exact_bits_and_backward_is_identity():
    from selfsup.objectives.binary_autoencoder import straight_through_bernoulli

    p = torch.tensor([[0.1, 0.5, 0.9, 0.3], [0.7, 0.2, 0.6, 0.4]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    torch.manual_seed(0)
    b = straight_through_bernoulli(p)
    assert set(b.detach().unique().tolist()) <= {0.0, 1.0}  # exactly 0 or 1, not 1 - 1 ulp
    loss = (b - target).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, p)
    # d loss / d p = d loss / d b * d b / d p = 2 (b - target) * 1, evaluated at the sampled bits
    assert torch.equal(grad, 2 * (b.detach() - target))
    draws = torch.stack([straight_through_bernoulli(p).detach() for _ in range(4000)])
    np.testing.assert_allclose(draws.mean(0).numpy(), p.detach().numpy(), atol=0.03)  # b ~ Bernoulli(p)


def test_bit_health_on_a_hand_code():
    from selfsup.objectives.binary_autoencoder import bit_health

    bits = torch.tensor([[1, 0, 1, 1], [1, 0, 0, 1], [1, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.float32)
    h = bit_health(bits)
    # bits 0 (always on) and 1 (always off) are dead; bits 2 and 3 are fair coins over the rows (1 bit each)
    assert h["dead_bits"].item() == 0.5
    assert h["code_entropy"].item() == pytest.approx((0 + 0 + 1 + 1) / 4)
    q = 0.25
    skewed = bit_health(torch.tensor([[1.0], [0.0], [0.0], [0.0]]))["code_entropy"].item()
    assert skewed == pytest.approx(-(q * math.log2(q) + (1 - q) * math.log2(1 - q)))


def test_gumbel_onehot_is_exactly_one_hot_with_the_soft_samples_gradient():
    import torch.nn.functional as F

    from selfsup.objectives.onehot_autoencoder import gumbel_onehot

    torch.manual_seed(1)
    logits = torch.randn(6, 3, 5, requires_grad=True)
    weights = torch.randn(6, 3, 5)
    torch.manual_seed(7)
    hard = gumbel_onehot(logits, tau=0.7)
    assert set(hard.detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard.detach().sum(-1), torch.ones(6, 3))  # one 1 per group, exactly
    (g_hard,) = torch.autograd.grad((hard * weights).sum(), logits)
    torch.manual_seed(7)  # the same Gumbel noise
    soft = F.gumbel_softmax(logits, tau=0.7, hard=False)
    assert torch.equal(hard.detach().argmax(-1), soft.detach().argmax(-1))
    (g_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)  # straight-through: the soft sample's gradient
    torch.manual_seed(7)
    torch_hard = F.gumbel_softmax(logits, tau=0.7, hard=True)  # torch's own ST form: same values, same gradient
    (g_torch,) = torch.autograd.grad((torch_hard * weights).sum(), logits)
    torch.testing.assert_close(hard.detach(), torch_hard.detach())
    torch.testing.assert_close(g_hard, g_torch)


def test_temperature_follows_its_exponential_schedule():
    from selfsup.objectives.onehot_autoencoder import annealed_temperature

    assert annealed_temperature(0, 100, 2.0, 0.5) == 2.0
    assert annealed_temperature(50, 100, 2.0, 0.5) == pytest.approx(1.0)  # the geometric mean halfway
    assert annealed_temperature(100, 100, 2.0, 0.5) == pytest.approx(0.5)
    assert annealed_temperature(150, 100, 2.0, 0.5) == pytest.approx(0.5)  # held at tau_end after the run
    taus = [annealed_temperature(s, 100, 2.0, 0.5) for s in range(101)]
    assert all(a > b for a, b in zip(taus, taus[1:]))


def _model(name: str, sets: list[str]):
    from selfsup.objectives.base import Prepared
    from selfsup.recipes import load_recipe
    from selfsup.registry import get_objective

    recipe = load_recipe(name, overrides=sets) if sets else load_recipe(name)
    return get_objective(name)(recipe, Prepared([], [], {"dim": 5, "preprocessor": None}))


def test_eval_codes_are_deterministic_thresholds_and_argmaxes():
    torch.manual_seed(0)
    x = torch.randn(16, 5)
    binary = _model("binary_autoencoder", []).eval()
    p = binary.probabilities(x)
    code = binary.binarize(p)
    assert torch.equal(code, (p > 0.5).float()) and torch.equal(code, binary.binarize(p))
    assert torch.equal(binary.encode(x), (p > 0.5).float())
    assert torch.equal(binary.score(x), binary.score(x))
    binary.train()
    assert set(binary.binarize(p).detach().unique().tolist()) <= {0.0, 1.0}

    onehot = _model("onehot_autoencoder", ["objective.groups=4", "model.bottleneck=12"]).eval()
    logits = onehot.logits(x)
    assert logits.shape == (16, 4, 3)
    expected = torch.nn.functional.one_hot(logits.argmax(-1), 3).float().reshape(16, 12)
    assert torch.equal(onehot.onehot(logits), expected) and torch.equal(onehot.encode(x), expected)
    assert torch.equal(onehot.score(x), onehot.score(x))
    onehot.train()
    sampled = onehot.onehot(logits).detach().view(16, 4, 3)
    assert torch.equal(sampled.sum(-1), torch.ones(16, 4))


def test_onehot_recipe_checks_groups_and_temperatures():
    from selfsup.errors import SelfsupError
    from selfsup.recipes import load_recipe
    from selfsup.registry import get_objective

    cls = get_objective("onehot_autoencoder")
    with pytest.raises(SelfsupError, match="objective.groups"):
        cls.check_recipe(load_recipe("onehot_autoencoder", overrides=["objective.groups=5"]))
    with pytest.raises(SelfsupError, match="objective.tau_end"):
        cls.check_recipe(load_recipe("onehot_autoencoder", overrides=["objective.tau_end=2.0"]))


@pytest.mark.parametrize("name", ["binary_autoencoder", "onehot_autoencoder"])
def test_short_run_lowers_the_heldout_loss(tmp_path, name):
    from selfsup.engine.pretrain import pretrain
    from selfsup.objectives.autoencoder_base import load_table_model

    metrics = pretrain(name, ["sklearn:breast_cancer"], tmp_path / "run", max_steps=200, overrides=FAST,
                       progress=False)
    trained = load_table_model(tmp_path / "run")
    prepared = type(trained).prepare(trained.recipe, ["sklearn:breast_cancer"])
    torch.manual_seed(0)
    untrained = type(trained)(trained.recipe, prepared).eval()
    held = list(prepared.heldout)
    batch = untrained.make_batch(held, [np.random.default_rng(i) for i in range(len(held))])
    with torch.no_grad():
        before, after = untrained(batch)["loss"].item(), trained(batch)["loss"].item()
    # every held-out row, eval mode (the deterministic code); 200 steps of a 16-bit code: 1.31 -> 1.02 (one-hot),
    # -> 0.92 (binary), measured
    assert after < 0.9 * before, (before, after)
    assert 0 <= metrics["heldout_dead_bits" if name == "binary_autoencoder" else "heldout_dead_codes"]
    if name == "binary_autoencoder":
        assert 0 < metrics["train_code_entropy"] <= 1
    else:
        assert metrics["train_codebook_perplexity"] > 1
        assert trained.temperature.item() == pytest.approx(trained.options.tau_end)  # annealed to the end


@pytest.mark.parametrize("method", ["binary", "onehot"])
def test_trained_beats_untrained_and_scores_survive_a_reload(tmp_path, method):
    import pandas as pd

    from selfsup.adapt.tools.anomaly import AutoEncoderDetector, batched_scores

    rng = np.random.default_rng(0)
    train, _ = planted(400, rng)
    test, labels = planted(300, rng, anomalies=30)
    det = AutoEncoderDetector(method=method, max_steps=150, overrides=FAST, work_dir=tmp_path).fit(train)
    trained = roc_auc_score(labels, det.decision_function(test))
    torch.manual_seed(0)
    fresh = type(det.model_)(det.model_.recipe, det.model_.prepared).eval()
    x = det.model_.preprocessor.transform(pd.DataFrame(test, columns=[f"x{i}" for i in range(8)]), [("X", 0, 300)])
    untrained = roc_auc_score(labels, batched_scores(fresh, x))
    assert trained > 0.9 and trained > untrained + 0.2, (trained, untrained)
    again = AutoEncoderDetector.load(det.run_)
    assert np.array_equal(det.decision_function(test), again.decision_function(test))
