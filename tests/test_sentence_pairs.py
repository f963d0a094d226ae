"""NSP / SOP pair construction: balanced labels, correct order, negatives from elsewhere."""
from __future__ import annotations

import numpy as np

from selfsup.pretext.sentence_pairs import make_pair, truncate_pair


def _sentences(start: int, n: int, length: int = 5) -> list[np.ndarray]:
    return [np.arange(start + i * length, start + (i + 1) * length) for i in range(n)]


def test_nsp_labels_balanced_and_negatives_come_from_elsewhere():
    own, other = _sentences(0, 4), _sentences(1000, 3)
    labels = []
    for seed in range(4000):
        a, b, label = make_pair(own, other, "nsp", np.random.default_rng(seed), max_tokens=100)
        labels.append(label)
        assert a[0] == 0 and (a < 1000).all()  # A is always the chunk's beginning
        if label == 0:  # B continues A exactly
            assert b[0] == a[-1] + 1 and (b < 1000).all()
        else:
            assert (b >= 1000).all()
    assert abs(np.mean(labels) - 0.5) < 0.03


def test_sop_labels_balanced_and_swapped_means_reversed():
    own = _sentences(0, 4)
    labels = []
    for seed in range(4000):
        a, b, label = make_pair(own, [], "sop", np.random.default_rng(seed), max_tokens=100)
        labels.append(label)
        joined = np.concatenate([a, b]) if label == 0 else np.concatenate([b, a])
        assert np.array_equal(joined, np.arange(20))  # same tokens; order tells the label
    assert abs(np.mean(labels) - 0.5) < 0.03


def test_single_sentence_chunk_is_split_inside_and_pairs_fit():
    own = [np.arange(50)]
    for seed in range(200):
        a, b, _ = make_pair(own, [np.arange(100, 160)], "nsp", np.random.default_rng(seed), max_tokens=30)
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= 30


def test_truncate_pair_trims_the_longer_side():
    a, b = truncate_pair(np.arange(10), np.arange(4), 8)
    assert len(a) == 4 and len(b) == 4
