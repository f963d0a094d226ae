"""Masked-token corruption for BERT-style MLM: token, whole-word and span masking, the 80/10/10 rule.

Pure functions of (tokens, rng): noise is drawn per sample from the generator the caller passes (the engine
seeds one per example, so a resumed or distributed run draws exactly the same masks).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

IGNORE = -100  # the label of positions that are not predicted (PyTorch's cross-entropy ignore_index)
MaskingMode = Literal["token", "whole-word", "span"]


def word_groups(word_start: np.ndarray, candidates: np.ndarray) -> list[np.ndarray]:
    """Group candidate positions into words: a word is a run that starts where `word_start` is 1."""
    pos = np.flatnonzero(candidates)
    if not len(pos):
        return []
    breaks = np.flatnonzero((word_start[pos[1:]] == 1) | (np.diff(pos) != 1)) + 1
    return np.split(pos, breaks)


def choose_mask_positions(candidates: np.ndarray, rng: np.random.Generator, rate: float, mode: MaskingMode = "token",
                          word_start: np.ndarray | None = None, span_p: float = 0.2,
                          max_span: int = 10) -> np.ndarray:
    """A boolean array: which positions to predict. Exactly round(rate * #candidates) tokens are chosen for
    `token` (BERT); whole words are added until that budget is reached for `whole-word` (BERT WWM); spans of
    whole words with Geometric(span_p) lengths clipped at `max_span` for `span` (SpanBERT)."""
    n = int(candidates.sum())
    chosen = np.zeros(len(candidates), dtype=bool)
    budget = int(round(rate * n))
    if budget == 0:
        return chosen
    if mode == "token" or word_start is None:
        chosen[rng.choice(np.flatnonzero(candidates), size=budget, replace=False)] = True
        return chosen
    words = word_groups(word_start, candidates)
    count = 0
    if mode == "whole-word":
        for w in rng.permutation(len(words)):
            piece = words[w]
            if count + len(piece) > budget and count > 0:
                continue  # BERT: skip a word that would overshoot, try shorter ones
            chosen[piece] = True
            count += len(piece)
            if count >= budget:
                break
        return chosen
    # span: pick a start word and a geometric length in words; repeat until the budget is spent
    for _ in range(10 * len(words) + 10):
        if count >= budget:
            break
        length = min(int(rng.geometric(span_p)), max_span)
        start = int(rng.integers(len(words)))
        for piece in words[start:start + length]:
            if count >= budget:
                break
            new = ~chosen[piece]
            chosen[piece] = True
            count += int(new.sum())
    return chosen


def apply_mask(tokens: np.ndarray, chosen: np.ndarray, rng: np.random.Generator, mask_id: int, vocab_size: int,
               special_ids: np.ndarray, mask_prob: float = 0.8, random_prob: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """BERT's rule at the chosen positions: [MASK] with `mask_prob`, a random non-special token with
    `random_prob`, unchanged otherwise. Returns (inputs, labels) with labels IGNORE where not chosen."""
    inputs = tokens.astype(np.int64, copy=True)
    labels = np.full(len(tokens), IGNORE, dtype=np.int64)
    idx = np.flatnonzero(chosen)
    labels[idx] = tokens[idx]
    u = rng.random(len(idx))
    inputs[idx[u < mask_prob]] = mask_id
    rand_idx = idx[(u >= mask_prob) & (u < mask_prob + random_prob)]
    if len(rand_idx):
        draw = rng.integers(0, vocab_size, size=len(rand_idx))
        bad = np.isin(draw, special_ids)
        while bad.any():  # never insert a special token
            draw[bad] = rng.integers(0, vocab_size, size=int(bad.sum()))
            bad = np.isin(draw, special_ids)
        inputs[rand_idx] = draw
    return inputs, labels


def mask_tokens(tokens: np.ndarray, special: np.ndarray, rng: np.random.Generator, *, mask_id: int, vocab_size: int,
                special_ids: np.ndarray, rate: float = 0.15, mode: MaskingMode = "token",
                word_start: np.ndarray | None = None, mask_prob: float = 0.8, random_prob: float = 0.1,
                span_p: float = 0.2, max_span: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """MLM corruption of one sequence: choose positions (never special tokens), then the 80/10/10 rule."""
    chosen = choose_mask_positions(~special, rng, rate, mode, word_start, span_p, max_span)
    return apply_mask(tokens, chosen, rng, mask_id, vocab_size, special_ids, mask_prob, random_prob)
