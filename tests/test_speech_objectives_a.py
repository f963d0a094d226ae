"""TERA, APC, temporal-gap prediction and CPC: each loss against its formula on a hand-made case (InfoNCE; TERA's
loss on the altered values only; APC's target n frames ahead), the corruptions' statistics over many draws
(TERA's channel block widths uniform in [0, W]), APC's causality, the gap classes of hand-placed segments; and a
short run of each method on the shipped synthesized speech that lowers the loss and exports a model that
`load_speech_encoder` reads back with identical hidden states."""
from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from conftest import SPEECH_WORDS, speech_batch, speech_objective
from selfsup import pretrain
from selfsup.backbones.speech import load_speech_encoder
from selfsup.engine.logs import read_logged
from selfsup.errors import SelfsupError
from selfsup.losses import info_nce
from selfsup.pretext.speech_masking import gap_bucket, sample_segment_pair, tera_corrupt
from selfsup.recipes import load_recipe

WORDS = SPEECH_WORDS
SHORT = ["train.eval_every=1000", "train.checkpoint_every=1000", "train.log_every=1", "train.warmup_steps=5",
         "train.batch_size=16", "model.hidden_size=64", "model.num_layers=2"]


def build(name: str, overrides: tuple[str, ...] = ()):
    return speech_objective(name, list(overrides))


def real_batch(objective, prepared, n: int = 8, seed: int = 3) -> dict[str, torch.Tensor]:
    return speech_batch(objective, prepared, n, seed)


# ---- InfoNCE (CPC) ------------------------------------------------------------------------------------------

def test_info_nce_is_minus_log_softmax_of_the_positive_among_its_candidates():
    g = torch.Generator().manual_seed(0)
    predictions, targets = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    temperature = 0.7
    by_hand = []
    for i in range(5):
        scores = [float(predictions[i] @ targets[j]) / temperature for j in range(5)]
        by_hand.append(-(scores[i] - np.log(np.sum(np.exp(scores)))))
    loss, accuracy = info_nce(predictions, targets, temperature)
    assert float(loss) == pytest.approx(np.mean(by_hand), rel=1e-5)
    wins = np.mean([int(np.argmax([float(predictions[i] @ targets[j]) for j in range(5)]) == i) for i in range(5)])
    assert float(accuracy) == pytest.approx(wins)
    # a prediction equal to its (well separated) target wins: loss near 0, accuracy 1
    loss, accuracy = info_nce(10 * torch.eye(4), 10 * torch.eye(4))
    assert float(loss) < 1e-6 and float(accuracy) == 1.0


# ---- TERA ---------------------------------------------------------------------------------------------------

def test_tera_channel_block_width_is_uniform_and_time_and_noise_rates_hold():
    frames = np.random.default_rng(0).normal(size=(100, 80)).astype(np.float32)
    widths, time_fraction, noisy = [], [], []
    draws, max_channels = 3000, 16
    for i in range(draws):
        corrupted, chosen, channels = tera_corrupt(frames, np.random.default_rng([1, i]), 0.15, 7, max_channels,
                                                   0.1, 0.2, valid=90)
        block = np.flatnonzero(channels)
        widths.append(len(block))
        if len(block):
            assert block[-1] - block[0] + 1 == len(block)  # one block of consecutive channels
            assert not corrupted[:, block].any() or noisy_value(corrupted, frames, chosen, channels)
        assert not chosen[90:].any()  # padding is never chosen
        time_fraction.append(chosen[:90].mean())
        noisy.append(noisy_value(corrupted, frames, chosen, channels))
    counts = np.bincount(widths, minlength=max_channels + 1) / draws
    assert len(counts) == max_channels + 1  # widths in [0, W]
    np.testing.assert_allclose(counts, 1 / (max_channels + 1), atol=0.015)  # SE 0.004
    assert np.mean(widths) == pytest.approx(max_channels / 2, abs=0.3)
    assert 0.10 < np.mean(time_fraction) <= 0.16  # 2 spans of 7 of 90 frames, overlaps allowed
    assert np.mean(noisy) == pytest.approx(0.1, abs=0.02)


def noisy_value(corrupted: np.ndarray, frames: np.ndarray, chosen: np.ndarray, channels: np.ndarray) -> bool:
    """Whether the magnitude alteration touched the frames (a value neither masked nor swapped has changed)."""
    kept = ~chosen[:90, None] & ~channels[None, :]
    return bool(np.abs(corrupted[:90] - frames[:90])[kept].max() > 0)


class FixedOutput(torch.nn.Module):
    """A head that returns a chosen prediction, whatever the hidden states."""

    def __init__(self, prediction: torch.Tensor):
        super().__init__()
        self.prediction = prediction

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.prediction


def test_tera_loss_is_l1_over_the_altered_frames_and_channels_only():
    objective, prepared = build("tera")
    batch = real_batch(objective, prepared)
    assert batch["chosen"].any() and batch["channels"].any()
    real = torch.arange(batch["inputs"].shape[1])[None] < batch["lengths"][:, None]
    altered = (batch["chosen"][:, :, None] | batch["channels"][:, None, :]) & real[:, :, None]
    target = batch["inputs"]
    objective.head = FixedOutput(target + 50.0 * ~altered)  # exact on the altered values, wrong elsewhere
    assert float(objective(batch)["loss"]) == pytest.approx(0.0, abs=1e-6)
    objective.head = FixedOutput(target + 0.5 * altered - 2.0 * ~altered)
    assert float(objective(batch)["loss"]) == pytest.approx(0.5, rel=1e-5)


# ---- APC ----------------------------------------------------------------------------------------------------

def test_apc_predictions_are_causal_and_the_target_is_n_frames_ahead():
    objective, prepared = build("apc", ("objective.prediction_steps=3",))
    objective.eval()
    batch = real_batch(objective, prepared)
    t = 10
    with torch.no_grad():
        before = objective.predictions(batch)[0]
        changed = dict(batch, inputs=batch["inputs"].clone())
        changed["inputs"][:, t + 1:] = torch.randn_like(changed["inputs"][:, t + 1:]) * 3
        after = objective.predictions(changed)[0]
    assert torch.equal(before[:, :t + 1], after[:, :t + 1])  # frames > t never reach predictions <= t
    assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])
    # the loss compares y_t with x_{t+3} on real target frames: a head that outputs x_{t+3} scores 0
    from selfsup.objectives.apc import future_l1

    x, lengths = batch["inputs"], batch["lengths"]
    real = torch.arange(x.shape[1])[None] < lengths[:, None]
    oracle = torch.cat([x[:, 3:], torch.full_like(x[:, :3], 99.0)], dim=1)
    assert float(future_l1(oracle, x, real, 3)) == pytest.approx(0.0, abs=1e-7)
    by_hand = np.mean(np.concatenate([(x[b, 3:lengths[b]] - x[b, :lengths[b] - 3]).abs().numpy().ravel()
                                      for b in range(len(x))]))
    assert float(future_l1(x, x, real, 3)) == pytest.approx(by_hand, rel=1e-5)  # y_t = x_t
    with pytest.raises(SelfsupError, match="model.type: apc needs a causal backbone"):
        load_recipe("apc", ["model.type=conformer"])


# ---- temporal gap -------------------------------------------------------------------------------------------

def test_gap_buckets_of_hand_placed_segments():
    # buckets of 10 frames, 4 classes, the last open-ended; the gap is the distance of the starts
    assert [gap_bucket(abs(b - a), 10, 4) for a, b in [(0, 0), (5, 14), (14, 5), (0, 10), (3, 32), (0, 30),
                                                       (0, 500)]] == [0, 0, 0, 1, 2, 3, 3]


def test_segment_pairs_fit_the_clip_with_balanced_classes():
    rng = np.random.default_rng(0)
    draws = [sample_segment_pair(60, 10, 10, 4, rng) for _ in range(4000)]
    firsts, seconds, buckets = map(np.array, zip(*draws))
    assert firsts.min() >= 0 and seconds.min() >= 0 and max(firsts.max(), seconds.max()) <= 50
    assert all(gap_bucket(abs(a - b), 10, 4) == k for a, b, k in draws)
    np.testing.assert_allclose(np.bincount(buckets, minlength=4) / 4000, 0.25, atol=0.03)
    assert 0.45 < np.mean(firsts < seconds) < 0.55  # both orders
    short = [sample_segment_pair(25, 10, 10, 4, rng)[2] for _ in range(200)]  # gaps of 15 frames at most
    assert set(short) == {0, 1}


def test_temporal_gap_pretext_crops_the_segments_it_labels():
    objective, prepared = build("temporal_gap")
    batch = real_batch(objective, prepared)
    seg = objective.segment
    assert seg == 10 and objective.bucket == 10
    for b in range(len(batch["inputs"])):
        for i in range(2):
            start = int(batch["starts"][b, i])
            torch.testing.assert_close(batch["segments"][b, i], batch["inputs"][b, start:start + seg])
        gap = abs(int(batch["starts"][b, 0] - batch["starts"][b, 1]))
        assert int(batch["gap_bucket"][b, 0]) == gap_bucket(gap, 10, 4)
    assert objective.gap_logits(batch).shape == (len(batch["inputs"]), 4)


# ---- short runs on real speech --------------------------------------------------------------------------------

class KeepObjective(L.Callback):
    """Keeps the trained objective, to compare its encoder with the exported one."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.objective = pl_module.objective


# method -> (extra overrides, steps, required drop of the mean loss: first 5 steps vs last 5)
METHODS = {
    "tera": ([], 40, 0.08),
    "apc": ([], 30, 0.1),
    "temporal_gap": ([], 40, 0.12),
    "cpc": (["objective.prediction_steps=4"], 30, 0.5),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_short_run_lowers_the_loss_and_exports_a_loadable_encoder(method, tmp_path):
    extra, steps, drop = METHODS[method]
    out, keep = tmp_path / method, KeepObjective()
    metrics = pretrain(method, [WORDS], out, max_steps=steps, progress=False, overrides=SHORT + extra,
                       callbacks=[keep])
    losses = [r["loss"] for r in read_logged(out) if "loss" in r]
    assert len(losses) == steps
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - drop, (method, losses)
    assert np.isfinite(metrics["heldout_loss"]) and "heldout_probe_accuracy" in metrics
    encoder, front = load_speech_encoder(out / "model")
    assert front["input"] == "logmel" and encoder.type == metrics["model_type"]
    trained = keep.objective.encoder.eval()
    assert {k: front[k] for k in ("mean", "std", "n_mels")} == \
        {k: keep.objective.front.to_dict()[k] for k in ("mean", "std", "n_mels")}
    x = torch.randn(2, 37, front["n_mels"], generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 37, dtype=torch.bool)
    with torch.no_grad():
        for mine, loaded in zip(trained.layers(x, mask), encoder.eval().layers(x, mask), strict=True):
            torch.testing.assert_close(mine, loaded, rtol=0, atol=1e-6)
