"""Extractive QA: question + document -> overlapping windows of at most `max_length` tokens, start / end
token targets per window, and post-processing of the two logit vectors back to a character span.

Post-processing is streaming: per window, the best span s..e among context tokens with s <= e and at most
`max_answer_length` tokens (search over the `n_best` top starts x top ends); per question, the best over its
windows. Only that one candidate per question is kept, never the logits.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from selfsup.errors import SelfsupError

CLS_INDEX = 0  # an answer outside a window points at the first token (no answer in this window)


def encode_qa(tokenizer, examples: Sequence, max_length: int, doc_stride: int, keep_types: bool) -> list[dict]:
    """One feature per window: input ids, attention mask, start/end targets, and the context character
    offsets of each token (None outside the context) to map predictions back."""
    if not examples:
        return []
    try:
        enc = tokenizer([ex.question for ex in examples], [ex.context for ex in examples],
                        truncation="only_second", max_length=max_length, stride=doc_stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True,
                        return_token_type_ids=keep_types)
    except Exception as e:  # e.g. a question longer than max_length, or a stride too large for it
        raise SelfsupError(f"extractive-qa: cannot window the documents with max_length={max_length}, "
                           f"doc_stride={doc_stride} ({str(e).splitlines()[0][:160]})") from None
    mapping = enc["overflow_to_sample_mapping"]
    features = []
    for i in range(len(enc["input_ids"])):
        seq = enc.sequence_ids(i)
        ex_index = int(mapping[i])
        ex = examples[ex_index]
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
        start, end = window_targets(offsets, ex.answers[0] if ex.answers else None)
        f: dict[str, Any] = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                             "start_positions": start, "end_positions": end, "example": ex_index,
                             "offsets": offsets}
        if keep_types and "token_type_ids" in enc:
            f["token_type_ids"] = enc["token_type_ids"][i]
        features.append(f)
    return features


def window_targets(offsets: Sequence[tuple[int, int] | None], answer: tuple[str, int] | None) -> tuple[int, int]:
    """Token positions of the answer's first and last token in this window, or (CLS, CLS) when the answer
    is not entirely inside it."""
    if answer is None:
        return CLS_INDEX, CLS_INDEX
    text, a = answer
    b = a + len(text)
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > a or offsets[ctx[-1]][1] < b:
        return CLS_INDEX, CLS_INDEX
    s = max(i for i in ctx if offsets[i][0] <= a)
    e = min(i for i in ctx if offsets[i][1] >= b)
    return s, e


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: Sequence[tuple[int, int] | None],
              max_answer_length: int, n_best: int = 20) -> tuple[float, int, int] | None:
    """(score, start token, end token) of the best context span with start <= end and at most
    `max_answer_length` tokens; None if the window has no context token."""
    ctx = np.asarray([o is not None for o in offsets] + [False] * (len(start_logits) - len(offsets)))[
        :len(start_logits)]
    if not ctx.any():
        return None
    s_masked = np.where(ctx, start_logits, -np.inf)
    e_masked = np.where(ctx, end_logits, -np.inf)
    k = min(n_best, int(ctx.sum()))
    starts = np.argsort(-s_masked, kind="stable")[:k]
    ends = np.argsort(-e_masked, kind="stable")[:k]
    best = None
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > max_answer_length:
                continue
            score = float(s_masked[s] + e_masked[e])
            if best is None or score > best[0]:
                best = (score, int(s), int(e))
    if best is None:  # every top start is after every top end: fall back to the best single token
        s = int(np.argmax(s_masked + e_masked))
        best = (float(s_masked[s] + e_masked[s]), s, s)
    return best


class QAPostProcessor:
    """Keeps, per question, the best span over its windows (score, character start, character end)."""

    def __init__(self, max_answer_length: int = 30, n_best: int = 20):
        self.max_answer_length, self.n_best = max_answer_length, n_best
        self.best: dict[int, tuple[float, int, int]] = {}

    def update(self, features: Sequence[dict], start_logits: np.ndarray, end_logits: np.ndarray) -> None:
        for f, s_log, e_log in zip(features, start_logits, end_logits):
            span = best_span(np.asarray(s_log, dtype=np.float64), np.asarray(e_log, dtype=np.float64),
                             f["offsets"], self.max_answer_length, self.n_best)
            if span is None:
                continue
            score, s, e = span
            offsets = f["offsets"]
            char = (score, offsets[s][0], offsets[e][1])
            old = self.best.get(f["example"])
            if old is None or score > old[0]:
                self.best[f["example"]] = char

    def answer(self, example_index: int, context: str) -> tuple[str, int, int, float]:
        """(text, character start, character end, score); an empty answer if no window had context."""
        if example_index not in self.best:
            return "", 0, 0, float("-inf")
        score, a, b = self.best[example_index]
        return context[a:b], a, b, score
