"""wav2vec 2.0, vq-wav2vec and HuBERT: the Gumbel quantizer's straight-through gradient (hard one-hot forward,
softmax gradient backward), the diversity loss and wav2vec's binary contrastive loss against their formulas on
hand cases, distractors drawn from the utterance's own candidates and never the frame itself; HuBERT's MFCC
targets are a function of the seed and re-clustering (a copy of the model, or a teacher folder) changes them;
a short run of each method on the shipped synthesized speech lowers the loss and exports a model that
`load_speech_encoder` and plain `transformers.AutoModel` read back with the trained encoder's hidden states;
vq-wav2vec's exported quantizer turns clips into unit-id text that `selfsup pretrain mlm` trains on."""
from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch

from conftest import SPEECH_WORDS, speech_batch, speech_objective
from selfsup import pretrain
from selfsup.backbones.speech import load_speech_encoder
from selfsup.engine.logs import read_logged
from selfsup.errors import SelfsupError
from selfsup.objectives.speech_quantizers import (annealed_temperature, combine_groups, frame_span_mask,
                                                  gumbel_quantizer, sample_negatives)
from selfsup.objectives.vq_wav2vec import binary_contrastive_loss, speech_units
from selfsup.objectives.wav2vec2 import contrastive_logits, diversity_loss

WORDS = SPEECH_WORDS
SHORT = ["train.eval_every=1000", "train.checkpoint_every=1000", "train.log_every=1", "train.warmup_steps=5",
         "train.batch_size=16", "train.eval_batches=2", "model.hidden_size=64", "model.num_layers=2",
         "model.conv_dim=32"]
# method -> (overrides, steps, required drop of the mean loss from the first 5 to the last 5 steps)
RUNS = {
    "wav2vec2": (["train.lr=2e-3"], 30, 0.05),
    "vq_wav2vec": ([], 30, 0.5),
    "vq_wav2vec-kmeans": (["objective.quantizer=kmeans"], 30, 0.3),
    "hubert": (["train.lr=2e-3"], 30, 0.1),
}


def build(name: str, overrides: tuple[str, ...] = ()):
    return speech_objective(name, [*SHORT, *overrides])


def real_batch(objective, prepared, n: int = 8, seed: int = 3) -> dict[str, torch.Tensor]:
    return speech_batch(objective, prepared, n, seed)


# ---- wav2vec 2.0: Gumbel quantizer, diversity, contrastive logits -------------------------------------------

def test_gumbel_quantizer_is_a_hard_one_hot_forward_with_the_softmax_gradient():
    groups, codes, dim, frames, tau = 2, 3, 4, 5, 0.7
    torch.manual_seed(0)
    quantizer = gumbel_quantizer(6, groups, codes, dim).train()
    quantizer.temperature = tau
    x = torch.randn(1, frames, 6, requires_grad=True)
    weights = torch.randn(1, frames, dim)
    torch.manual_seed(1)
    out, _ = quantizer(x)
    (out * weights).sum().backward()

    logits = quantizer.weight_proj(x.detach()).view(frames * groups, codes)
    torch.manual_seed(1)  # the same Gumbel noise as F.gumbel_softmax drew
    gumbels = -torch.empty_like(logits).exponential_().log()
    chosen = (logits + gumbels).argmax(-1).view(frames, groups)
    book = quantizer.codevectors.detach().view(groups, codes, dim // groups)
    expected = torch.stack([torch.cat([book[g, chosen[t, g]] for g in range(groups)]) for t in range(frames)])
    torch.testing.assert_close(out[0].detach(), expected, atol=1e-6, rtol=0)  # exactly one code per group

    x_soft = x.detach().clone().requires_grad_(True)
    soft = torch.softmax((quantizer.weight_proj(x_soft).view(frames * groups, codes) + gumbels) / tau, -1)
    out_soft = torch.einsum("tgv,gvd->tgd", soft.view(frames, groups, codes), book).reshape(1, frames, dim)
    (out_soft * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_soft.grad, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out_soft, out)  # the soft sample is not what the forward returned


def test_diversity_loss_is_one_minus_perplexity_over_codes_on_a_hand_case():
    quantizer = gumbel_quantizer(4, 2, 2, 4).train()
    with torch.no_grad():
        quantizer.weight_proj.weight.copy_(torch.eye(4))
        quantizer.weight_proj.bias.zero_()
    ln3 = math.log(3)
    # group 1: softmax [.25, .75] on both frames; group 2: [.25, .75] then [.75, .25] (average [.5, .5])
    x = torch.tensor([[[0.0, ln3, 0.0, ln3], [0.0, ln3, ln3, 0.0]]])
    with torch.no_grad():
        _, perplexity = quantizer(x, mask_time_indices=torch.ones(1, 2, dtype=torch.bool))
    entropy_1 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert float(perplexity) == pytest.approx(math.exp(entropy_1) + 2.0, rel=1e-5)  # 1.7548 + 2
    assert float(diversity_loss(perplexity, 4)) == pytest.approx((4 - math.exp(entropy_1) - 2) / 4, rel=1e-4)
    assert float(diversity_loss(torch.tensor(4.0), 4)) == 0.0  # every code used equally


def test_contrastive_logits_are_cosines_over_kappa_with_the_positive_first_and_copies_excluded():
    quantized = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]]])  # frame 2 repeats frame 0
    projected = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [3.0, 0.0]]])
    negatives = torch.tensor([[[1, 2], [0, 2], [0, 1]]])
    logits = contrastive_logits(projected, quantized, negatives, 0.5)
    c = 1 / math.sqrt(2)
    assert logits.shape == (1, 3, 3)
    torch.testing.assert_close(logits[0, 0], torch.tensor([c, c, float("-inf")]) / 0.5)
    torch.testing.assert_close(logits[0, 1], torch.tensor([1.0, 0.0, 0.0]) / 0.5)
    torch.testing.assert_close(logits[0, 2], torch.tensor([1.0, float("-inf"), 0.0]) / 0.5)


def test_distractors_come_from_the_own_utterances_other_candidates_uniformly():
    g = torch.Generator().manual_seed(0)
    candidates = torch.rand(3, 40, generator=g) < 0.5
    candidates[2] = False
    candidates[2, 7] = True  # a lone candidate gets itself
    torch.manual_seed(0)
    draws = torch.cat([sample_negatives(candidates, 10) for _ in range(100)], dim=-1)  # (3, 40, 1000)
    flat = candidates.reshape(-1)
    assert bool(flat[draws].all())
    for b in range(2):
        rows = draws[b] // 40
        assert bool((rows == b).all())
        own = torch.arange(40) + 40 * b
        assert not bool((draws[b][candidates[b]] == own[candidates[b], None]).any())
        pool = torch.nonzero(candidates[b])[:, 0] + 40 * b
        counts = torch.stack([(draws[b][candidates[b]] == p).sum() for p in pool]).float()
        # each of the other m - 1 candidates draws it 1000 / (m - 1) times on average: 1000 (SD ~31)
        assert float((counts / 1000 - 1).abs().max()) < 0.13
    assert bool((draws[2] == 2 * 40 + 7).all())


def test_span_masks_cover_real_frames_only_and_the_gumbel_temperature_anneals():
    masks = np.stack([frame_span_mask(49, 30, 0.65, 5, np.random.default_rng(i)) for i in range(500)])
    assert not masks[:, 30:].any() and 0.4 < masks[:, :30].mean() < 0.6
    assert annealed_temperature(0, 2.0, 0.5, 0.99) == 2.0
    assert annealed_temperature(10, 2.0, 0.5, 0.99) == pytest.approx(2.0 * 0.99 ** 10)
    assert annealed_temperature(10_000, 2.0, 0.5, 0.99) == 0.5
    objective, _ = build("wav2vec2", ("objective.gumbel_decay=0.9",))
    objective.on_step_end(3, 100)
    assert float(objective.gumbel_temperature) == pytest.approx(2.0 * 0.9 ** 3)


# ---- vq-wav2vec ----------------------------------------------------------------------------------------------

def test_binary_contrastive_loss_on_a_hand_case():
    prediction = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[2.0, 0.0]])
    distractors = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])  # scores 0 and -1 against the positive's 2
    loss, accuracy = binary_contrastive_loss(prediction, positive, distractors)
    log_sigmoid = lambda s: -math.log1p(math.exp(-s))  # noqa: E731
    assert float(loss) == pytest.approx(-(log_sigmoid(2) + log_sigmoid(-0.0) + log_sigmoid(1.0)), rel=1e-6)
    assert float(accuracy) == 1.0
    assert combine_groups(torch.tensor([[3, 2]]), 10).tolist() == [23]


# ---- HuBERT targets ------------------------------------------------------------------------------------------

def test_hubert_mfcc_targets_are_a_function_of_the_seed_and_reclustering_changes_them():
    from sklearn.metrics import adjusted_rand_score

    first, prepared = build("hubert", ("objective.recluster_every=5",))
    again, _ = build("hubert", ("objective.recluster_every=5",))
    other, _ = build("hubert", ("train.seed=1",))
    assert torch.equal(first.mfcc_centroids, again.mfcc_centroids)
    assert not torch.equal(first.mfcc_centroids, other.mfcc_centroids)
    batch = real_batch(first, prepared)
    assert torch.equal(batch["mfcc_targets"], real_batch(again, prepared)["mfcc_targets"])
    frames = first.encoder.frame_mask(batch["lengths"], batch["mask"].shape[1])

    def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
        return adjusted_rand_score(a[frames].numpy(), b[frames].numpy())

    mfcc_targets = first.targets(batch)
    assert torch.equal(mfcc_targets, batch["mfcc_targets"]) and int(first.iteration) == 1
    first.on_step_end(3, 100)  # not a re-clustering step
    assert int(first.iteration) == 1
    first.on_step_end(5, 100)
    layer_targets = first.targets(batch)
    assert int(first.iteration) == 2 and agreement(layer_targets, mfcc_targets) < 0.8
    optimizer = torch.optim.Adam(first.parameters(), lr=3e-3)
    for _ in range(3):  # some training moves the model away from the copy the targets came from
        optimizer.zero_grad()
        first(batch)["loss"].backward()
        optimizer.step()
    assert torch.equal(first.targets(batch), layer_targets)  # the frozen copy still gives the same targets
    first.recluster()
    assert int(first.iteration) == 3 and not torch.equal(first.targets(batch), layer_targets)


def test_bad_options_are_one_line_errors():
    with pytest.raises(SelfsupError, match="model.type"):
        build("wav2vec2", ("model.type=hubert",))
    with pytest.raises(SelfsupError, match="teacher"):
        build("hubert", ("objective.recluster_every=5", "objective.teacher=/nonexistent"))
    with pytest.raises(SelfsupError, match="target_layer"):
        build("hubert", ("objective.recluster_every=5", "objective.target_layer=9"))
    with pytest.raises(SelfsupError, match="codevector_dim"):
        build("wav2vec2", ("objective.codevector_dim=63",))


# ---- short runs ----------------------------------------------------------------------------------------------

class KeepObjective(L.Callback):
    """Holds on to the trained objective, to compare the export with the encoder as it was in training."""

    objective = None

    def on_train_end(self, trainer, pl_module) -> None:
        self.objective = pl_module.objective


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = {}
    for tag, (extra, steps, drop) in RUNS.items():
        folder = tmp_path_factory.mktemp(tag) / "run"
        keep = KeepObjective()
        metrics = pretrain(tag.split("-")[0], [WORDS], folder, max_steps=steps, progress=False,
                           overrides=SHORT + extra, callbacks=[keep])
        out[tag] = (folder, metrics, keep.objective)
    return out


@pytest.mark.parametrize("tag", sorted(RUNS))
def test_short_run_lowers_the_loss_and_the_export_reloads_with_identical_hidden_states(tag, runs):
    from transformers import AutoModel

    folder, metrics, objective = runs[tag]
    _, steps, drop = RUNS[tag]
    losses = [r["loss"] for r in read_logged(folder) if "loss" in r]
    assert len(losses) == steps
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - drop, (tag, losses)
    assert np.isfinite(metrics["heldout_loss"]) and "heldout_probe_accuracy" in metrics
    for key in ("codebook_perplexity", "used_codes", "dead_codes", "code_usage"):
        assert f"train_{key}" in metrics, key
    clip = torch.from_numpy(objective.prepared.heldout[0][0])[None]
    trained = [h.detach() for h in objective.encoder.eval().layers(clip)]
    encoder, front = load_speech_encoder(folder)
    assert front["input"] == "waveform"
    for ours, back in zip(trained, encoder.eval().layers(clip)):
        torch.testing.assert_close(back, ours, atol=1e-5, rtol=1e-5)
    if not tag.startswith("vq_wav2vec"):  # the others' export is a plain transformers model
        model = AutoModel.from_pretrained(folder / "model").eval()
        assert type(model).__name__ == {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel"}[tag]
        with torch.no_grad():
            hidden = model(clip, output_hidden_states=True).hidden_states
        for ours, plain in zip(trained, hidden):
            torch.testing.assert_close(plain, ours, atol=1e-5, rtol=1e-5)


def test_method_metrics_are_logged(runs):
    assert runs["wav2vec2"][1]["train_contrastive_accuracy"] > 0.1  # chance is 1 / 21
    assert runs["wav2vec2"][1]["train_gumbel_temperature"] < 2.0
    assert runs["hubert"][1]["train_masked_accuracy"] > 0.02  # chance is 1 / 50
    assert runs["vq_wav2vec"][1]["train_prediction_accuracy"] > 0.1  # chance is 1 / 11


def test_hubert_teacher_folder_gives_the_targets(runs):
    folder = runs["hubert"][0]
    student, prepared = build("hubert", (f"objective.teacher={folder / 'model'}", "objective.target_layer=1"))
    assert int(student.iteration) == 2 and student.target_encoder is not None
    batch = real_batch(student, prepared)
    targets = student.targets(batch)
    assert targets.shape == batch["mask"].shape and not torch.equal(targets, batch["mfcc_targets"])
    assert int(targets.max()) < student.options.num_clusters


def test_vq_wav2vec_units_are_text_a_bert_trains_on(runs, tmp_path):
    folder = runs["vq_wav2vec"][0]
    units = speech_units(folder / "model", WORDS)
    assert len(units) == 240 and units == speech_units(folder, WORDS)
    encoder, _ = load_speech_encoder(folder)
    from selfsup.data.audio import AudioDataConfig, load_audio

    audio = load_audio([WORDS], AudioDataConfig(label_column=None), "waveform")
    ids = [list(map(int, line.split())) for line in units]
    assert [len(i) for i in ids] == [int(encoder.output_lengths(torch.tensor([len(audio.raw(j))])))
                                     for j in range(len(audio))]
    assert max(max(i) for i in ids) < 64 ** 2 and len({u for i in ids for u in i}) > 20
    deduped = speech_units(folder, audio, dedup=True)
    assert all(len(d.split()) <= len(u.split()) for d, u in zip(deduped, units))
    text = tmp_path / "units.txt"
    text.write_text("\n\n".join(units) + "\n")
    metrics = pretrain("mlm", [str(text)], tmp_path / "bert", max_steps=5, progress=False,
                       overrides=["model.hidden_size=32", "model.num_heads=2", "model.num_layers=1",
                                  "model.intermediate_size=64", "model.max_length=64", "data.block_size=32",
                                  "data.tokenizer.vocab_size=1000", "train.batch_size=8", "train.eval_batches=2",
                                  "train.warmup_steps=1"])
    assert np.isfinite(metrics["heldout_loss"]) and metrics["steps"] == 5
    with pytest.raises(SelfsupError, match="not a vq-wav2vec model"):
        speech_units(runs["hubert"][0], WORDS)
