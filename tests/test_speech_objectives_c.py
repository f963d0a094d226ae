"""data2vec, BEST-RQ, DeLoRes and Speech SimCLR: data2vec's per-example instance norm against F.instance_norm,
its top-K target average on a hand case, the EMA-rate schedule and the teacher update through the built
objective (and a teacher without gradients or dropout); BEST-RQ's frame stacking and noise on a hand case,
its masked-stack share against the exact expectation of the span masks, a random-projection quantizer that a
training run leaves bit-identical; the two-view methods' audio views as pure, seeded functions within their
configured bounds, log-mixup-exp on a hand case, DeLoRes with VICReg; and a short run of each method on the
shipped synthesized speech that lowers the loss and exports a model that `load_speech_encoder` and plain
`transformers.AutoModel` read back with the trained encoder's hidden states.

NT-Xent, Barlow Twins, VICReg and the EMA update formula themselves are checked against hand computations
in tests/test_images_losses.py (the speech methods call the same `selfsup.losses` functions)."""
from __future__ import annotations

import copy
import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SPEECH_WORDS, speech_batch, speech_objective
from selfsup import pretrain
from selfsup.backbones.speech import load_speech_encoder
from selfsup.engine.logs import read_logged
from selfsup.errors import SelfsupError
from selfsup.objectives.best_rq import noise_masked_frames, stack_frames
from selfsup.objectives.data2vec import data2vec_targets, ema_rate, masked_instance_norm
from selfsup.pretext.audio_views import (LOG_POWER_PER_DB, augment_view, freq_masks, gain, log_mixup_exp,
                                         random_crop, time_masks)
from selfsup.recipes import load_recipe

WORDS = SPEECH_WORDS
SHORT = ["train.eval_every=1000", "train.checkpoint_every=1000", "train.log_every=1", "train.warmup_steps=5",
         "train.batch_size=16", "train.eval_batches=2", "data.crop_seconds=0.5", "model.hidden_size=64",
         "model.num_layers=2"]
# run -> (method, overrides, steps, required relative drop of the mean loss from the first 5 to the last 5 steps)
RUNS = {
    "data2vec": ("data2vec", ["model.conv_dim=32", "train.batch_size=8"], 25, 0.1),  # measured 1.26 -> 0.97
    "best_rq": ("best_rq", [], 25, 0.08),  # 6.36 -> 5.33
    "delores": ("delores", [], 25, 0.15),  # 128 -> 87
    "speech_simclr": ("speech_simclr", [], 25, 0.1),  # 2.90 -> 2.30
}
VICREG = ("delores", ["objective.regularizer=vicreg"], 6)


def build(name: str, overrides: tuple[str, ...] = ()):
    return speech_objective(name, [*SHORT, *overrides])


def real_batch(objective, prepared, n: int = 6, seed: int = 3) -> dict[str, torch.Tensor]:
    return speech_batch(objective, prepared, n, seed)


# ---- data2vec ------------------------------------------------------------------------------------------------

def test_masked_instance_norm_is_instance_norm_of_each_unpadded_slice():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 9, 5, generator=g) * 3 + 2
    lengths = torch.tensor([9, 4, 2])
    frames = torch.arange(9)[None] < lengths[:, None]
    out = masked_instance_norm(h, frames)
    for b, n in enumerate(lengths.tolist()):
        expected = F.instance_norm(h[b:b + 1, :n].transpose(1, 2), eps=1e-5).transpose(1, 2)[0]
        torch.testing.assert_close(out[b, :n], expected, atol=1e-5, rtol=1e-5)
        assert bool((out[b, n:] == 0).all())  # padding is 0, and never reached the statistics


def test_data2vec_targets_average_the_top_k_normalized_layers_on_a_hand_case():
    frames = torch.tensor([[True, True, True, True, False]])
    ignored = torch.tensor([100.0, 0.0, 3.0, 9.0, 0.0])  # below the top 2
    second = torch.tensor([0.0, 2.0, 0.0, 2.0, 999.0])   # mean 1, variance 1 -> [-1, 1, -1, 1]
    third = torch.tensor([5.0, 5.0, 7.0, 7.0, -999.0])   # mean 6, variance 1 -> [-1, -1, 1, 1]
    layers = [torch.stack([v, 2 * v], -1)[None] for v in (ignored, second, third)]  # (1, 5, 2), channel 2 = 2x
    targets = data2vec_targets(layers, frames, top_k=2)
    expected = torch.tensor([-1.0, 0.0, 0.0, 1.0, 0.0]) / math.sqrt(1 + 1e-5)
    torch.testing.assert_close(targets[0, :, 0], expected)
    torch.testing.assert_close(targets[0, :, 1], expected)  # a scaled channel normalizes to the same
    torch.testing.assert_close(data2vec_targets(layers, frames, top_k=1)[0, :, 0],
                               torch.tensor([-1.0, -1.0, 1.0, 1.0, 0.0]) / math.sqrt(1 + 1e-5))


def test_ema_rate_rises_linearly_then_stays():
    assert ema_rate(0, 0.99, 0.999, 100) == 0.99
    assert ema_rate(50, 0.99, 0.999, 100) == pytest.approx(0.9945)
    assert ema_rate(100, 0.99, 0.999, 100) == pytest.approx(0.999)
    assert ema_rate(5000, 0.99, 0.999, 100) == 0.999


def test_the_teacher_follows_the_student_by_ema_and_gets_no_gradients_or_dropout():
    objective, prepared = build("data2vec", ("model.dropout=0.1", "model.conv_dim=32"))
    teacher, student = objective.teacher, objective.encoder
    assert not any(p.requires_grad for p in teacher.parameters())
    trainable = {id(p) for p in objective.parameters() if p.requires_grad}
    assert trainable and not trainable & {id(p) for p in teacher.parameters()}
    objective.train()
    assert student.training and not teacher.training  # the targets come without dropout
    batch = real_batch(objective, prepared, n=2)
    with torch.no_grad():
        first = teacher.layers(batch["inputs"], objective.input_mask(batch))[-1]
        again = teacher.layers(batch["inputs"], objective.input_mask(batch))[-1]
    assert torch.equal(first, again)

    with torch.no_grad():  # a student that has moved away from the teacher
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    old = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    objective.on_step_end(10, 100)
    tau = 0.99 + (0.999 - 0.99) * 10 / 100
    assert objective.tau == pytest.approx(tau)
    students = dict(student.named_parameters())
    assert set(students) == set(old) and "model.masked_spec_embed" in old
    for name, p in teacher.named_parameters():
        torch.testing.assert_close(p, tau * old[name] + (1 - tau) * students[name], atol=1e-6, rtol=1e-6)
        assert not torch.equal(p, old[name])


def test_top_k_beyond_the_model_depth_is_a_one_line_error():
    with pytest.raises(SelfsupError, match="objective.top_k") as error:
        load_recipe("data2vec", ["model.num_layers=2", "objective.top_k=3"])
    assert "\n" not in str(error.value) and "num_layers=2" in str(error.value)


# ---- BEST-RQ -------------------------------------------------------------------------------------------------

def test_stack_frames_puts_consecutive_frames_side_by_side():
    x = torch.arange(2 * 9 * 2, dtype=torch.float32).reshape(2, 9, 2)
    stacked = stack_frames(x, 4)
    assert stacked.shape == (2, 2, 8)  # the ninth frame (a tail < 4) is dropped
    assert stacked[0, 0].tolist() == x[0, 0:4].reshape(-1).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert stacked[1, 1].tolist() == x[1, 4:8].reshape(-1).tolist()


def test_noise_replaces_exactly_the_masked_frames():
    frames = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    masked = np.zeros(10, dtype=bool)
    masked[[1, 2, 7]] = True
    kept = frames.copy()
    noised = noise_masked_frames(frames, masked, np.random.default_rng(5), 0.3)
    np.testing.assert_array_equal(frames, kept)  # pure
    np.testing.assert_array_equal(noised[~masked], frames[~masked])
    np.testing.assert_allclose(noised[masked], np.random.default_rng(5).normal(0.0, 0.3, size=(3, 3)), rtol=1e-6)


def expected_span_share(n: int, mask_prob: float, span: int) -> float:
    """E[masked share] of `span_mask(n, mask_prob, span)`: floor(p n / span + U) starts (at least 1, at most
    N = n - span + 1) drawn without replacement; a frame is unmasked when none of the starts covering it is."""
    positions = n - span + 1
    base = mask_prob * n / span
    counts = {}
    for k, weight in ((int(base), 1 - (base - int(base))), (int(base) + 1, base - int(base))):
        k = min(max(1, k), positions)
        counts[k] = counts.get(k, 0.0) + weight
    share = 0.0
    for j in range(n):
        covering = min(j, positions - 1) - max(0, j - span + 1) + 1
        share += sum(w * (1 - math.comb(positions - covering, k) / math.comb(positions, k)) for k, w in counts.items())
    return share / n


@pytest.fixture(scope="module")
def best_rq():
    return build("best_rq")


def test_best_rq_masks_spans_of_stacks_at_the_expected_rate_and_noises_just_their_frames(best_rq):
    objective, _ = best_rq
    o = objective.options
    clip = np.random.default_rng(0).normal(size=(201, 80)).astype(np.float32)
    valid = 183  # 45 real stacks of 4 frames (the last 3 real frames form no stack), 50 stacks in all
    shares, noise = [], []
    for i in range(3000):
        out = objective.pretext(clip, valid, np.random.default_rng([7, i]))
        stacks = out["masked_stacks"]
        assert stacks.shape == (50,) and not stacks[45:].any()
        shares.append(stacks[:45].mean())
        if i < 200:
            masked = np.zeros(201, dtype=bool)
            masked[:200] = np.repeat(stacks, 4)
            np.testing.assert_array_equal(out["noised"][~masked], clip[~masked])
            assert not np.isclose(out["noised"][masked], clip[masked]).any()
            noise.append(out["noised"][masked].ravel())
    expected = expected_span_share(45, o.mask_prob, o.mask_span)  # 0.36: overlaps keep it below mask_prob
    assert 0.3 < expected < o.mask_prob
    assert np.mean(shares) == pytest.approx(expected, abs=0.006)  # SE of the mean ~0.002
    noise = np.concatenate(noise)
    assert abs(noise.mean()) < 0.005 and noise.std() == pytest.approx(o.noise_std, rel=0.02)


# ---- audio views (DeLoRes, Speech SimCLR) ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def simclr():
    return build("speech_simclr")


def test_views_are_pure_and_a_function_of_the_seed(simclr):
    objective, prepared = simclr
    clip = prepared.train[0][0][:50]
    kept = clip.copy()
    cfg = objective.views
    one = augment_view(clip, 45, np.random.default_rng(1), cfg, objective.gain_scale)
    same = augment_view(clip, 45, np.random.default_rng(1), cfg, objective.gain_scale)
    other = augment_view(clip, 45, np.random.default_rng(2), cfg, objective.gain_scale)
    np.testing.assert_array_equal(clip, kept)
    assert all(np.array_equal(a, b) for a, b in zip(one, same))
    assert not np.array_equal(one[0], other[0])
    a, b = real_batch(objective, prepared), real_batch(objective, prepared)
    c = real_batch(objective, prepared, seed=4)
    assert set(a) >= {"view1", "view2", "clean1", "clean2", "view_lengths", "mixup"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["view1"], c["view1"]) and not torch.equal(a["view1"], a["view2"])
    # a gain in dB is a shift of raw log power: under global normalization, divided by the channel's std
    np.testing.assert_allclose(objective.gain_scale, 1 / np.asarray(objective.front.std), rtol=1e-6)


def test_crops_keep_a_contiguous_segment_within_the_configured_length_bounds():
    frames = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    valid, lengths = 50, set()
    for i in range(400):
        view, n = random_crop(frames, valid, np.random.default_rng(i), 0.6)
        assert 30 <= n <= 50 and not view[n:].any()
        lengths.add(n)
        assert any(np.array_equal(view[:n], frames[s:s + n]) for s in range(valid - n + 1))
    assert lengths == set(range(30, 51))  # every allowed length occurs
    stretched = []
    for i in range(400):
        view, m = random_crop(frames, valid, np.random.default_rng(i), 0.6, stretch=0.2)
        assert round(30 / 1.2) <= m <= min(60, round(50 / 0.8)) and not view[m:].any()
        stretched.append(m)
        # linear interpolation keeps the segment's first and last frames
        assert any(np.allclose(view[0], frames[s]) and np.allclose(view[m - 1], frames[s + n - 1])
                   for n in range(30, 51) for s in range(valid - n + 1))
    assert min(stretched) <= 28 and max(stretched) >= 58


def test_spec_augment_masks_and_gain_stay_within_their_bounds():
    frames = np.random.default_rng(0).normal(size=(60, 20)).astype(np.float32) + 3
    valid, widths = 50, []
    for i in range(300):
        x, blocks = time_masks(frames, valid, np.random.default_rng(i), 2, 8)
        zeroed = np.zeros(60, dtype=bool)
        for start, width in blocks:
            assert 0 <= width <= 8 and 0 <= start and start + width <= valid
            zeroed[start:start + width] = True
            widths.append(width)
        assert not x[zeroed].any()
        np.testing.assert_array_equal(x[~zeroed], frames[~zeroed])
        y, blocks = freq_masks(frames, valid, np.random.default_rng(i), 2, 6)
        channels = np.zeros(20, dtype=bool)
        for start, width in blocks:
            assert 0 <= width <= 6 and start + width <= 20
            channels[start:start + width] = True
        assert not y[:valid][:, channels].any()
        np.testing.assert_array_equal(y[:valid][:, ~channels], frames[:valid][:, ~channels])
        np.testing.assert_array_equal(y[valid:], frames[valid:])  # padding untouched
    assert set(widths) == set(range(9))
    scale = np.linspace(0.5, 2.0, 20).astype(np.float32)
    for i in range(50):
        shifted = gain(frames, valid, np.random.default_rng(i), 6.0, scale)
        delta = shifted[:valid] - frames[:valid]
        db = delta[0, 0] / (LOG_POWER_PER_DB * scale[0])
        assert abs(db) <= 6.0
        np.testing.assert_allclose(delta, np.broadcast_to(db * LOG_POWER_PER_DB * scale, delta.shape), atol=1e-5)
        np.testing.assert_array_equal(shifted[valid:], frames[valid:])


def test_log_mixup_exp_mixes_power_on_a_hand_case():
    views = np.log(np.array([[[1.0], [4.0], [9.0]], [[3.0], [2.0], [5.0]]], dtype=np.float32))
    mixed = log_mixup_exp(views, np.array([0.25, 0.0], np.float32), np.array([2, 3]))
    np.testing.assert_allclose(mixed[0, :2, 0], np.log([0.75 * 1 + 0.25 * 3, 0.75 * 4 + 0.25 * 2]), rtol=1e-6)
    np.testing.assert_array_equal(mixed[0, 2], views[0, 2])  # padding stays
    np.testing.assert_array_equal(mixed[1], views[1])  # weight 0
    mean, std = np.array([1.0], np.float32), np.array([2.0], np.float32)
    normalized = (views - mean) / std
    again = log_mixup_exp(normalized, np.array([0.25, 0.0], np.float32), np.array([2, 3]), mean, std)
    np.testing.assert_allclose(again[0, :2] * std + mean, mixed[0, :2], rtol=1e-5)
    assert log_mixup_exp(views, np.zeros(2, np.float32), np.array([3, 3])) is views


# ---- short runs on real speech --------------------------------------------------------------------------------

class KeepObjective(L.Callback):
    """Keeps the trained objective; for BEST-RQ also the quantizer's state and codes of a fixed clip at the
    start, and the parameters the optimizer updated."""

    def on_fit_start(self, trainer, pl_module) -> None:
        objective = pl_module.objective
        self.quantizer_start = None
        if hasattr(objective, "quantizer"):
            self.clip = torch.from_numpy(objective.prepared.heldout[0][0])[None]
            self.quantizer_start = copy.deepcopy(objective.quantizer.state_dict())
            self.codes_start = objective.targets(self.clip)

    def on_train_end(self, trainer, pl_module) -> None:
        self.objective = pl_module.objective
        self.optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = {}
    for tag, (method, extra, steps) in {**{t: r[:3] for t, r in RUNS.items()}, "vicreg": VICREG}.items():
        folder = tmp_path_factory.mktemp(tag) / "run"
        keep = KeepObjective()
        metrics = pretrain(method, [WORDS], folder, max_steps=steps, progress=False, overrides=SHORT + extra,
                           callbacks=[keep])
        out[tag] = (folder, metrics, keep)
    return out


@pytest.mark.parametrize("tag", sorted(RUNS))
def test_short_run_lowers_the_loss_and_the_export_reloads_with_identical_hidden_states(tag, runs):
    from transformers import AutoModel

    folder, metrics, keep = runs[tag]
    _, _, steps, drop = RUNS[tag]
    losses = [r["loss"] for r in read_logged(folder) if "loss" in r]
    assert len(losses) == steps and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < (1 - drop) * np.mean(losses[:5]), (tag, losses)
    assert np.isfinite(metrics["heldout_loss"]) and "heldout_probe_accuracy" in metrics

    objective = keep.objective
    encoder, front = load_speech_encoder(folder)
    waveform = tag == "data2vec"
    assert front["input"] == ("waveform" if waveform else "logmel") and front["model_type"] == metrics["model_type"]
    assert {k: front[k] for k in objective.front.to_dict()} == objective.front.to_dict()
    clips = [objective.prepared.heldout[i][0] for i in range(2)]
    n = min(len(c) for c in clips)
    padding = [(0, 7)] + [(0, 0)] * (clips[1].ndim - 1)  # the second clip is 7 values shorter, padded
    inputs = torch.from_numpy(np.stack([clips[0][:n], np.pad(clips[1][:n - 7], padding)]))
    mask = torch.arange(n)[None] < torch.tensor([n, n - 7])[:, None]
    with torch.no_grad():
        trained = objective.encoder.eval().layers(inputs, mask)
        for ours, back in zip(trained, encoder.eval().layers(inputs, mask), strict=True):
            torch.testing.assert_close(back, ours, atol=1e-5, rtol=1e-5)
        model = AutoModel.from_pretrained(folder / "model").eval()
        assert type(model).__name__ == ("Data2VecAudioModel" if waveform else "Wav2Vec2BertModel")
        key = "input_values" if waveform else "input_features"
        hidden = model(**{key: inputs}, attention_mask=mask.long(), output_hidden_states=True).hidden_states
    for ours, plain in zip(trained, hidden, strict=True):
        torch.testing.assert_close(plain, ours, atol=1e-5, rtol=1e-5)
    assert not (folder / "model" / "teacher").exists()
    assert not any("masked_spec_embed" in k or "teacher" in k or "quantizer" in k
                   for k in model.state_dict())  # only the encoder is exported


def test_data2vec_logs_the_ema_schedule_of_the_run(runs):
    folder, metrics, keep = runs["data2vec"]
    steps = RUNS["data2vec"][2]
    rates = [r["ema_rate"] for r in read_logged(folder) if "ema_rate" in r and "loss" in r]
    # step s trains with the rate set after s optimizer steps (the anneal spans the whole run)
    np.testing.assert_allclose(rates, [ema_rate(s, 0.99, 0.999, steps) for s in range(steps)], rtol=1e-6)
    assert 0.2 < metrics["train_masked_fraction"] < 0.8 and metrics["train_target_std"] > 0.5


def test_best_rq_quantizer_stays_frozen_and_its_codebook_health_is_logged(runs):
    _, metrics, keep = runs["best_rq"]
    quantizer = keep.objective.quantizer
    assert not any(p.requires_grad for p in quantizer.parameters())
    assert not keep.optimized & {id(p) for p in quantizer.parameters()}
    end = quantizer.state_dict()
    assert set(end) == set(keep.quantizer_start) and "rand_projs" in end
    for key, value in keep.quantizer_start.items():
        assert torch.equal(end[key], value), key  # bit-identical after training
    codes = keep.objective.targets(keep.clip)
    assert torch.equal(codes, keep.codes_start) and len(codes.unique()) > 1
    size = keep.objective.options.codebook_size
    assert metrics["train_used_codes"] + metrics["train_dead_codes"] == size
    assert 1 < metrics["train_codebook_perplexity"] <= metrics["train_used_codes"] < size
    assert metrics["train_code_usage"] == pytest.approx(metrics["train_used_codes"] / size)
    assert 0.2 < metrics["train_masked_fraction"] < 0.5 and metrics["train_masked_accuracy"] > 1 / size


def test_two_view_metrics_and_delores_with_vicreg(runs):
    assert 0 < runs["delores"][1]["train_mean_diagonal"] <= 1
    simclr = runs["speech_simclr"][1]
    assert simclr["train_positive_top1"] > 0.3  # chance is 1 / 31
    assert simclr["train_contrastive_loss"] > 0 and simclr["train_reconstruction_loss"] > 0
    folder, metrics, _ = runs["vicreg"]
    records = [r for r in read_logged(folder) if "loss" in r and "invariance" in r]
    assert len(records) == VICREG[2] and np.isfinite(metrics["heldout_loss"])
    for r in records:  # the VICReg objective, with the paper's weights 25, 25, 1
        assert r["loss"] == pytest.approx(25 * r["invariance"] + 25 * r["variance"] + r["covariance"], rel=1e-4)
    assert "train_mean_diagonal" not in metrics
