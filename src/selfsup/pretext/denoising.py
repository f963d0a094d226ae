"""Sequence-to-sequence denoising corruptions: the BART noise set (Lewis et al. 2020) and MASS span masking
(Song et al. 2019).

Pure functions of (int64 token array(s), numpy Generator, parameters) -> arrays. The noise is per sample: the
caller passes one Generator per example (the engine seeds it from the example's global position), so a
resumed or distributed run draws exactly the same corruption. Inputs are content tokens only; the caller
adds [CLS]/[SEP] afterwards, so no special token is ever masked, deleted or rotated away.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Protocol

import numpy as np


def token_masking(tokens: np.ndarray, rng: np.random.Generator, rate: float, mask_id: int) -> np.ndarray:
    """BART token masking (Lewis et al. 2020, after BERT): each token is independently replaced by `mask_id`
    with probability `rate`; the length is preserved. Per-sample noise."""
    out = np.asarray(tokens, dtype=np.int64).copy()
    out[rng.random(len(out)) < rate] = mask_id
    return out


def token_deletion(tokens: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    """BART token deletion (Lewis et al. 2020): each token is independently deleted with probability `rate`;
    the model must find *which* positions are missing. Per-sample noise."""
    tokens = np.asarray(tokens, dtype=np.int64)
    return tokens[rng.random(len(tokens)) >= rate].copy()


def infilling_spans(n_tokens: int, rng: np.random.Generator, rate: float,
                    poisson_lambda: float = 3.0) -> list[tuple[int, int]]:
    """The (start, length) spans of BART text infilling (Lewis et al. 2020) over a sequence of `n_tokens`,
    sorted by start. Per-sample noise.

    Span lengths are drawn from Poisson(`poisson_lambda`) until they cover ceil(`rate` * n_tokens) tokens (the
    last length is cut so the total is exact, as in fairseq's `add_whole_word_mask`); a 0-length span is an
    insertion point. The spans are then placed uniformly at random *without overlap*: the spans and the
    n - covered untouched tokens are shuffled into one order (stars and bars), so two spans may touch but never
    share a token. Simplification vs. fairseq: lengths count tokens, not whole words, and fairseq's spans
    may overlap (merge) where these cannot.
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    budget = math.ceil(rate * n_tokens) if rate > 0 else 0
    if budget == 0:
        return []
    if poisson_lambda <= 0:
        raise ValueError(f"poisson_lambda must be > 0, got {poisson_lambda}")
    lengths: list[int] = []
    covered = 0
    while covered < budget:
        for length in rng.poisson(poisson_lambda, size=max(4, budget)).tolist():
            length = min(int(length), budget - covered)
            lengths.append(length)
            covered += length
            if covered >= budget:
                break
    n_kept = n_tokens - budget
    slots = np.sort(rng.choice(n_kept + len(lengths), size=len(lengths), replace=False))
    order = rng.permutation(len(lengths))
    spans, consumed = [], 0
    for rank, slot in enumerate(slots.tolist()):
        start = slot - rank + consumed  # untouched tokens before this span + tokens of the spans before it
        length = lengths[int(order[rank])]
        spans.append((start, length))
        consumed += length
    return spans


def text_infilling(tokens: np.ndarray, rng: np.random.Generator, rate: float, mask_id: int,
                   poisson_lambda: float = 3.0) -> np.ndarray:
    """BART text infilling (Lewis et al. 2020, the paper's best single noise): non-overlapping spans with
    Poisson(`poisson_lambda`) lengths cover ~`rate` of the tokens; each span becomes ONE `mask_id` token, and a
    0-length span inserts one. Output length = n - covered + n_spans; untouched tokens keep their order. The
    model must predict how many tokens each mask stands for. Per-sample noise (see `infilling_spans`)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    pieces, position = [], 0
    for start, length in infilling_spans(len(tokens), rng, rate, poisson_lambda):
        pieces.append(tokens[position:start])
        pieces.append(np.asarray([mask_id], dtype=np.int64))
        position = start + length
    pieces.append(tokens[position:])
    return np.concatenate(pieces).astype(np.int64)


def sentence_permutation(sentences: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """BART sentence permutation (Lewis et al. 2020): the document's sentences in a uniformly random order
    (the same multiset of sentences). Per-sample noise."""
    return [sentences[int(i)] for i in rng.permutation(len(sentences))]


def document_rotation(tokens: np.ndarray, rng: np.random.Generator,
                      word_start: np.ndarray | None = None) -> np.ndarray:
    """BART document rotation (Lewis et al. 2020): a token is chosen uniformly at random (among word starts
    when `word_start` flags are given, so no word is cut) and the document is rotated to begin with it; the
    model must find the true start. Per-sample noise."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) == 0:
        return tokens.copy()
    candidates = np.flatnonzero(np.asarray(word_start)) if word_start is not None else np.arange(len(tokens))
    if len(candidates) == 0:
        candidates = np.arange(len(tokens))
    return np.roll(tokens, -int(rng.choice(candidates)))


def mass_span(tokens: np.ndarray, rng: np.random.Generator, span_fraction: float = 0.5, *, mask_id: int,
              start_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MASS masked sequence-to-sequence pretraining (Song et al. 2019): one contiguous span of
    round(`span_fraction` * n) tokens (at least 1), at a uniform start, is replaced by `mask_id` in the encoder
    input (the length is kept); the decoder predicts exactly the span. Per-sample noise.

    Returns (encoder_input, decoder_input, labels): labels = the original span tokens, decoder_input = the span
    shifted right, starting with `start_id` (teacher forcing).

    Simplification vs. the paper: MASS feeds the decoder only the span, but with the span's *original*
    positions (its position embeddings start at the span's offset in the sentence) and begins it with the
    token before the span; here the decoder sees the span at positions 0..m-1 after a start token, because
    an HF BART decoder numbers its positions from 0. The paper's 80/10/10 replacement of the encoder-side
    span is also reduced to always [MASK].
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    length = min(n, max(1, int(round(span_fraction * n))))
    start = int(rng.integers(0, n - length + 1))
    labels = tokens[start:start + length].copy()
    encoder_input = tokens.copy()
    encoder_input[start:start + length] = mask_id
    decoder_input = np.concatenate([[start_id], labels[:-1]]).astype(np.int64)
    return encoder_input, decoder_input, labels


class BartNoiseOptions(Protocol):
    """The noise selection `apply_bart_noise` reads (the denoising objective's Options satisfy it)."""

    token_masking: float
    token_deletion: float
    text_infilling: float
    poisson_lambda: float
    sentence_permutation: bool
    document_rotation: bool


def apply_bart_noise(sentences: list[np.ndarray], rng: np.random.Generator, cfg: BartNoiseOptions,
                     ids: Mapping[str, Any]) -> np.ndarray:
    """The BART corruption of one document (Lewis et al. 2020) given as sentences of (n, 2) [token id,
    word-start flag] rows: the selected noises in the order sentence permutation, document rotation (at a
    word start), then token masking, token deletion and text infilling (`ids["mask"]` is the mask token).
    A rate of 0 / False turns a noise off. Returns the noised content tokens (no special tokens).
    Per-sample noise. (fairseq rotates last; rotating first lets the rotation use exact word starts.)"""
    if cfg.sentence_permutation:
        sentences = sentence_permutation(sentences, rng)
    rows = np.concatenate(sentences) if sentences else np.zeros((0, 2), dtype=np.int64)
    tokens = rows[:, 0].astype(np.int64)
    if cfg.document_rotation:
        tokens = document_rotation(tokens, rng, word_start=rows[:, 1])
    if cfg.token_masking > 0:
        tokens = token_masking(tokens, rng, cfg.token_masking, int(ids["mask"]))
    if cfg.token_deletion > 0:
        tokens = token_deletion(tokens, rng, cfg.token_deletion)
    if cfg.text_infilling > 0:
        tokens = text_infilling(tokens, rng, cfg.text_infilling, int(ids["mask"]), cfg.poisson_lambda)
    return tokens
