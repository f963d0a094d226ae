"""MLM corruption statistics: rates over >=100k tokens, 80/10/10, specials never masked, whole words."""
from __future__ import annotations

import numpy as np
import pytest

from selfsup.data.corpus import build_corpus, get_tokenizer
from selfsup.data.tokenizer import TokenizerConfig
from selfsup.pretext.masking import IGNORE, choose_mask_positions, mask_tokens, word_groups

MASK, VOCAB = 4, 1000
SPECIALS = np.arange(5)


def _corrupt_many(n_seqs: int, length: int, mode: str = "token", seed: int = 0):
    rng_data = np.random.default_rng(123)
    tokens_all, inputs_all, labels_all = [], [], []
    for i in range(n_seqs):
        tokens = rng_data.integers(5, VOCAB, size=length)
        tokens[0], tokens[-1] = 2, 3  # [CLS] ... [SEP]
        word_start = (rng_data.random(length) < 0.6).astype(np.uint8)
        special = np.isin(tokens, SPECIALS)
        x, y = mask_tokens(tokens, special, np.random.default_rng([seed, i]), mask_id=MASK, vocab_size=VOCAB,
                           special_ids=SPECIALS, rate=0.15, mode=mode, word_start=word_start)
        tokens_all.append(tokens), inputs_all.append(x), labels_all.append(y)
    return np.stack(tokens_all), np.stack(inputs_all), np.stack(labels_all)


def test_bert_masking_rates_over_100k_tokens():
    tokens, inputs, labels = _corrupt_many(1000, 128)
    candidates = ~np.isin(tokens, SPECIALS)
    assert candidates.sum() >= 100_000
    chosen = labels != IGNORE
    rate = chosen.sum() / candidates.sum()
    assert abs(rate - 0.15) < 0.005
    assert np.array_equal(labels[chosen], tokens[chosen])  # labels are the original tokens
    shown_mask = (inputs[chosen] == MASK).mean()
    kept = (inputs[chosen] == tokens[chosen]).mean()
    random = 1 - shown_mask - kept
    assert abs(shown_mask - 0.8) < 0.01
    assert abs(kept - 0.1) < 0.01 + 1 / VOCAB  # a random draw can hit the original token
    assert abs(random - 0.1) < 0.01
    # the random replacements are never special tokens; unchosen positions are untouched
    replaced = chosen & (inputs != MASK) & (inputs != tokens)
    assert not np.isin(inputs[replaced], SPECIALS).any()
    assert np.array_equal(inputs[~chosen], tokens[~chosen])


def test_special_tokens_are_never_masked():
    tokens, _, labels = _corrupt_many(300, 64)
    assert (labels[:, 0] == IGNORE).all() and (labels[:, -1] == IGNORE).all()
    for mode in ("whole-word", "span"):
        _, _, labels = _corrupt_many(200, 64, mode)
        assert (labels[:, 0] == IGNORE).all() and (labels[:, -1] == IGNORE).all()


@pytest.mark.parametrize("mode", ["whole-word", "span"])
def test_word_masking_masks_every_piece_and_keeps_the_rate(mode):
    tokens, _, labels = _corrupt_many(1000, 128, mode, seed=1)
    rng_data = np.random.default_rng(123)
    total_candidates = total_chosen = 0
    for i in range(len(tokens)):
        _ = rng_data.integers(5, VOCAB, size=128)
        word_start = (rng_data.random(128) < 0.6).astype(np.uint8)
        candidates = ~np.isin(tokens[i], SPECIALS)
        chosen = labels[i] != IGNORE
        for word in word_groups(word_start, candidates):
            assert chosen[word].all() or not chosen[word].any(), "a word was split"
        total_candidates += candidates.sum()
        total_chosen += chosen.sum()
    # whole words overshoot or undershoot the budget by at most a word
    assert abs(total_chosen / total_candidates - 0.15) < 0.01


def test_whole_word_masking_on_a_real_tokenizer(persuasion):
    """Word boundaries come from the tokenizer's pre-tokenization offsets: a rare word split into several
    WordPiece pieces is masked as a whole."""
    tok = get_tokenizer(TokenizerConfig(vocab_size=2000), [str(persuasion)], "text")
    corpus = build_corpus([str(persuasion)], "text", tok)
    tokens = np.asarray(corpus.tokens[:20000]).astype(np.int64)
    word_start = np.asarray(corpus.word_start[:20000])
    pieces = tok.convert_ids_to_tokens(tokens.tolist())
    continuation = np.array([p.startswith("##") for p in pieces])
    # the offsets-derived flags agree with WordPiece's own continuation marker on this tokenizer
    assert np.array_equal(word_start == 0, continuation)
    assert continuation.sum() > 500
    special = np.isin(tokens, tok.all_special_ids)
    split_words = 0
    for seed in range(20):
        _, labels = mask_tokens(tokens, special, np.random.default_rng(seed), mask_id=tok.mask_token_id,
                                vocab_size=len(tok), special_ids=np.asarray(tok.all_special_ids), rate=0.15,
                                mode="whole-word", word_start=word_start)
        chosen = labels != IGNORE
        for word in word_groups(word_start, ~special):
            if len(word) > 1:
                assert chosen[word].all() or not chosen[word].any()
                split_words += chosen[word].all()
    assert split_words > 100  # multi-piece words really were masked


def test_choose_positions_exact_budget():
    candidates = np.ones(100, dtype=bool)
    candidates[[0, 99]] = False
    chosen = choose_mask_positions(candidates, np.random.default_rng(0), 0.15)
    assert chosen.sum() == round(0.15 * 98) and not chosen[[0, 99]].any()
