"""Sentence-pair pretext tasks: BERT's next-sentence prediction (NSP) and ALBERT's sentence-order prediction
(SOP). Pure functions of (sentences, rng)."""
from __future__ import annotations

from typing import Literal

import numpy as np

PairTask = Literal["nsp", "sop"]


def split_segments(sentences: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split consecutive sentences into segment A and B at a random sentence boundary (inside the sentence
    when there is only one)."""
    if len(sentences) >= 2:
        cut = int(rng.integers(1, len(sentences)))
        return np.concatenate(sentences[:cut]), np.concatenate(sentences[cut:])
    tokens = sentences[0]
    cut = int(rng.integers(1, len(tokens))) if len(tokens) > 1 else 1
    return tokens[:cut], tokens[cut:]


def truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Trim the longer segment from its end until the pair fits (as BERT's `truncate_seq_pair`)."""
    while len(a) + len(b) > max_tokens:
        if len(a) >= len(b):
            a = a[:-1]
        else:
            b = b[:-1]
    return a, b


def make_pair(sentences: list[np.ndarray], random_sentences: list[np.ndarray], task: PairTask,
              rng: np.random.Generator, max_tokens: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(segment A, segment B, label). NSP: label 1 = B is a random segment from elsewhere (probability 1/2),
    0 = B follows A. SOP: label 1 = A and B swapped (probability 1/2), 0 = original order. These are the
    label conventions of transformers' BertForPreTraining and AlbertForPreTraining."""
    a, b = split_segments(sentences, rng)
    label = int(rng.random() < 0.5)
    if label and task == "nsp":
        b, _ = split_segments(random_sentences, rng) if len(random_sentences) > 1 else (random_sentences[0], None)
    elif label and task == "sop":
        a, b = b, a
    if len(b) == 0:
        b = a[-1:]
        a = a[:-1] if len(a) > 1 else a
    return (*truncate_pair(a, b, max_tokens), label)
