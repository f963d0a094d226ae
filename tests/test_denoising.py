"""Seq2seq denoising pretraining: the BART noise functions and MASS span masking (invariants over many seeded
draws), the `denoising` objective's batches, a short real-text run that lowers held-out loss (bart and mass),
export -> `AutoModelForSeq2SeqLM` reload with identical logits, and recipe validation."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import selfsup
from selfsup.errors import SelfsupError
from selfsup.pretext.denoising import (apply_bart_noise, document_rotation, infilling_spans, mass_span,
                                       sentence_permutation, text_infilling, token_deletion, token_masking)

CORPUS = str(Path(selfsup.__file__).parent / "assets" / "austen-persuasion.txt.xz")
# tiny sizes so a run takes seconds on 2 shared CPU cores; one torch thread avoids oversubscription stalls
SMALL = ["data.block_size=64", "train.batch_size=16", "model.hidden_size=64", "model.intermediate_size=256",
         "data.tokenizer.vocab_size=2000", "data.holdout_fraction=0.05", "train.threads=1",
         "train.warmup_steps=10", "train.lr=2e-3", "train.log_every=1"]
MASK = 3  # never a token of the synthetic sequences below (they start at 10)


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tokenizers and corpora go to a temporary SELFSUP_CACHE; torch's thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(tmp_path_factory.mktemp("selfsup-cache")))
        yield
    torch.set_num_threads(threads)


def distinct_tokens(n: int) -> np.ndarray:
    return np.arange(10, 10 + n, dtype=np.int64)


# ---------------------------------------------------------------- noise functions


def test_token_masking_rate_and_length():
    tokens = distinct_tokens(1000)
    masked = 0
    for seed in range(50):
        out = token_masking(tokens, np.random.default_rng(seed), 0.15, MASK)
        assert out.shape == tokens.shape
        hit = out == MASK
        assert np.array_equal(out[~hit], tokens[~hit])  # everything else untouched
        masked += int(hit.sum())
    assert abs(masked / 50_000 - 0.15) < 0.01


def test_token_deletion_rate_order_and_length():
    tokens = distinct_tokens(1000)
    deleted_total = 0
    for seed in range(50):
        out = token_deletion(tokens, np.random.default_rng(seed), 0.2)
        deleted = set(tokens.tolist()) - set(out.tolist())
        assert len(out) == len(tokens) - len(deleted)  # nothing duplicated or inserted
        assert np.all(np.diff(out) > 0) and np.isin(out, tokens).all()  # survivors keep their order
        deleted_total += len(deleted)
    assert abs(deleted_total / 50_000 - 0.2) < 0.01


def test_infilling_spans_do_not_overlap_and_cover_the_budget():
    n, rate = 300, 0.3
    zero_length = 0
    for seed in range(200):
        spans = infilling_spans(n, np.random.default_rng(seed), rate, 3.0)
        assert sum(length for _, length in spans) == math.ceil(rate * n)
        ends = [start + length for start, length in spans]
        assert all(0 <= start <= n and end <= n for (start, _), end in zip(spans, ends))
        assert all(ends[i] <= spans[i + 1][0] for i in range(len(spans) - 1)), spans
        zero_length += sum(length == 0 for _, length in spans)
    assert zero_length > 0  # Poisson(3) gives 0 about 5% of the time: insertions happen


def test_text_infilling_span_statistics_and_structure():
    n, rate, lam = 1000, 0.3, 3.0
    tokens = distinct_tokens(n)
    total_covered = total_spans = 0
    for seed in range(40):
        spans = infilling_spans(n, np.random.default_rng(seed), rate, lam)
        out = text_infilling(tokens, np.random.default_rng(seed), rate, MASK, lam)
        covered = np.concatenate([np.arange(s, s + k) for s, k in spans]).astype(int)
        assert len(out) == n - len(covered) + len(spans)
        assert int((out == MASK).sum()) == len(spans)  # ONE mask per span, inserts included
        assert np.array_equal(out[out != MASK], np.delete(tokens, covered))  # order of the rest kept
        for start, length in spans:  # the span's mask sits right after the token before it
            if length and start > 0 and (start - 1) not in covered:
                where = int(np.flatnonzero(out == tokens[start - 1])[0])
                assert out[where + 1] == MASK
        assert abs(len(covered) / n - rate) <= 1 / n
        total_covered += len(covered)
        total_spans += int((out == MASK).sum())
    assert total_spans >= 2000
    assert abs(total_covered / total_spans - lam) < 0.2, total_covered / total_spans


def test_text_infilling_rate_zero_is_identity():
    tokens = distinct_tokens(50)
    assert np.array_equal(text_infilling(tokens, np.random.default_rng(0), 0.0, MASK), tokens)


def test_sentence_permutation_keeps_the_sentences_and_permutes():
    sentences = [distinct_tokens(k) + 100 * k for k in (2, 3, 4)]
    orders = set()
    for seed in range(200):
        out = sentence_permutation(sentences, np.random.default_rng(seed))
        assert sorted(tuple(s) for s in out) == sorted(tuple(s) for s in sentences)
        orders.add(tuple(len(s) for s in out))
    assert len(orders) == 6  # every order of 3 sentences shows up


def test_document_rotation_is_a_cyclic_shift_to_a_word_start():
    tokens = distinct_tokens(60)
    word_start = (np.random.default_rng(123).random(60) < 0.4).astype(np.int64)
    word_start[0] = 1
    starts = set()
    for seed in range(200):
        out = document_rotation(tokens, np.random.default_rng(seed), word_start=word_start)
        shift = int(out[0] - tokens[0])
        assert np.array_equal(out, np.roll(tokens, -shift))
        assert word_start[shift] == 1
        starts.add(shift)
    assert len(starts) > 5
    free = {int(document_rotation(tokens, np.random.default_rng(s))[0] - 10) for s in range(200)}
    assert any(word_start[k] == 0 for k in free)  # without flags any token may start the document


def test_mass_span_masks_half_contiguously_and_predicts_it():
    starts = set()
    for n in (7, 100):
        tokens = distinct_tokens(n)
        for seed in range(100):
            enc, dec_in, labels = mass_span(tokens, np.random.default_rng(seed), 0.5, mask_id=MASK, start_id=2)
            where = np.flatnonzero(enc == MASK)
            assert abs(len(where) - n / 2) <= 1 and np.all(np.diff(where) == 1)  # ~50%, one contiguous span
            assert np.array_equal(labels, tokens[where])
            assert np.array_equal(dec_in, np.r_[2, labels[:-1]])  # shifted right after the start token
            keep = np.ones(n, bool)
            keep[where] = False
            assert np.array_equal(enc[keep], tokens[keep])
            starts.add((n, int(where[0])))
    assert len(starts) > 20


def bart_options(**chosen) -> SimpleNamespace:
    defaults = dict(token_masking=0.0, token_deletion=0.0, text_infilling=0.0, poisson_lambda=3.0,
                    sentence_permutation=False, document_rotation=False)
    return SimpleNamespace(**{**defaults, **chosen})


def test_apply_bart_noise_composes_the_selected_noises():
    sentences = [np.stack([distinct_tokens(k) + 100 * k, np.ones(k, np.int64)], axis=1) for k in (5, 6, 7)]
    original = np.concatenate(sentences)[:, 0]
    ids = {"mask": MASK}
    assert np.array_equal(apply_bart_noise(sentences, np.random.default_rng(0), bart_options(), ids), original)
    orders = set()
    for seed in range(30):
        permute_only = bart_options(sentence_permutation=True)
        permuted = apply_bart_noise(sentences, np.random.default_rng(seed), permute_only, ids)
        firsts = [int(np.flatnonzero(permuted == s[0, 0])[0]) for s in sentences]
        assert all(np.array_equal(permuted[f:f + len(s)], s[:, 0]) for f, s in zip(firsts, sentences))
        orders.add(tuple(firsts))
        rotated = apply_bart_noise(sentences, np.random.default_rng(seed), bart_options(document_rotation=True), ids)
        assert np.array_equal(rotated, np.roll(original, -int(np.flatnonzero(original == rotated[0])[0])))
        noised = apply_bart_noise(sentences, np.random.default_rng(seed),
                                  bart_options(sentence_permutation=True, text_infilling=0.3), ids)
        assert (noised == MASK).any() and np.isin(noised[noised != MASK], original).all()
        assert len(noised[noised != MASK]) == len(original) - math.ceil(0.3 * len(original))
    assert len(orders) > 1


# ---------------------------------------------------------------- the objective


def build_objective(recipe: str, extra: list[str] | None = None):
    from selfsup.objectives.denoising import Denoising

    r = selfsup.load_recipe(recipe, SMALL + list(extra or []))
    torch.manual_seed(r.train.seed)
    return Denoising(r, Denoising.prepare(r, [CORPUS]))


def untrained_heldout_loss(recipe: str) -> float:
    """The held-out loss before any step, on exactly the batches (and noise) the engine evaluates on."""
    from selfsup.engine.stream import HELDOUT, StepBatches, make_loader

    objective = build_objective(recipe).eval()
    c, heldout = objective.recipe.train, objective.prepared.heldout
    eval_batch = min(c.batch_size, len(heldout))
    n_eval = max(1, min(c.eval_batches, len(heldout) // eval_batch))
    loader = make_loader(objective, heldout, StepBatches(len(heldout), eval_batch, 1, 0, c.seed, shuffle=False,
                                                         limit=n_eval), c.seed, HELDOUT)
    with torch.no_grad():
        losses = [objective({k: v for k, v in b.items() if k != "micro_step"})["loss"].item() for b in loader]
    return float(np.mean(losses))


@pytest.mark.parametrize("method", ["bart", "mass"])
def test_make_batch_builds_encoder_decoder_inputs(method):
    objective = build_objective(method)
    examples = [objective.prepared.train[i] for i in range(4)]
    batch = objective.make_batch(examples, [np.random.default_rng(i) for i in range(4)])
    ids, start = objective.ids, objective.model.config.decoder_start_token_id
    assert start is not None and set(batch) == {"input_ids", "attention_mask", "decoder_input_ids", "labels"}
    assert batch["input_ids"].shape[1] <= objective.recipe.data.block_size
    for i, (_, sentences) in enumerate(examples):
        original = np.concatenate(sentences)[:, 0]
        labels = batch["labels"][i][batch["labels"][i] != -100].numpy()
        decoder_input = batch["decoder_input_ids"][i, :len(labels)].numpy()
        assert decoder_input[0] == start and np.array_equal(decoder_input[1:], labels[:-1])
        assert (batch["labels"][i, len(labels):] == -100).all()  # only padding is ignored, and only at the end
        encoder = batch["input_ids"][i][batch["attention_mask"][i] == 1].numpy()
        assert encoder[0] == ids["cls"] and encoder[-1] == ids["sep"]
        if method == "bart":
            assert np.array_equal(labels, np.r_[ids["cls"], original, ids["sep"]])
            assert (encoder == ids["mask"]).any()
        else:
            where = np.flatnonzero(encoder[1:-1] == ids["mask"])
            assert np.array_equal(labels, original[where]) and np.all(np.diff(where) == 1)
            assert abs(len(labels) - len(original) / 2) <= 1


@pytest.mark.parametrize("method", ["bart", "mass"])
def test_short_run_on_real_text_lowers_heldout_loss(method, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    before = untrained_heldout_loss(method)
    metrics = selfsup.pretrain(method, data=[CORPUS], out=tmp_path / "run", max_steps=80, overrides=SMALL,
                               progress=False, quiet=True)
    after = metrics["heldout_loss"]
    print(f"{method}: held-out loss {before:.3f} -> {after:.3f} (first train loss {metrics['train_loss_first']:.3f})")
    assert after < before - 0.5 and after < metrics["train_loss_first"] - 0.5
    assert 0 < metrics["heldout_token_accuracy"] <= 1
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "run" / "model").config.model_type == "bart"


def test_export_reloads_with_identical_logits(tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    objective = build_objective("bart")
    with torch.no_grad():  # move every weight off its initial value, so a weight not saved would show
        for tensor in [*objective.model.parameters(), *objective.model.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
    objective.export(tmp_path)
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = "Anne Elliot had been forced into prudence in her youth."
    assert tokenizer(text)["input_ids"] == objective.tokenizer(text)["input_ids"]
    batch = objective.make_batch([objective.prepared.heldout[i] for i in range(3)],
                                 [np.random.default_rng(i) for i in range(3)])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
    objective.eval()
    with torch.no_grad():
        expected = objective.model(**inputs).logits
        got = reloaded(**inputs).logits
        fresh = build_objective("bart", ["train.seed=1"]).eval().model(**inputs).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(fresh, expected, atol=1e-5)  # the comparison does tell models apart


# ---------------------------------------------------------------- recipe validation


@pytest.mark.parametrize("override, key", [
    ("objective.text_infilling=1.5", "objective.text_infilling"),
    ("objective.token_deletion=-0.1", "objective.token_deletion"),
    ("objective.poisson_lambda=0", "objective.poisson_lambda"),
    ("objective.mass_span_fraction=0", "objective.mass_span_fraction"),
    ("objective.method=t5", "objective.method"),
    ("model.type=bert", "model.type"),
])
def test_impossible_values_name_the_key(override, key):
    with pytest.raises(SelfsupError, match=key.replace(".", r"\.")):
        selfsup.load_recipe("bart", [override])


def test_bart_without_any_noise_is_rejected():
    off = ["objective.text_infilling=0", "objective.sentence_permutation=false"]
    with pytest.raises(SelfsupError, match=r"objective\.token_masking"):
        selfsup.load_recipe("bart", off)
    assert selfsup.load_recipe("mass", off).objective.method == "mass"  # MASS ignores the BART noises
