"""Extractive-QA windowing and post-processing on a hand-made example whose document is longer than the
model's maximum length: targets per window, the s <= e and maximum-length constraints, and the mapping of the
best span back to character offsets of the document."""
from __future__ import annotations

import numpy as np

from adapt_tok import hand_tokenizer
from selfsup.adapt.core.features import encode
from selfsup.adapt.core.options import FinetuneConfig
from selfsup.adapt.core.qa import CLS_INDEX, QAPostProcessor, best_span, window_targets
from selfsup.adapt.core.tasks import QAExample

FILLER = "captain wentworth wrote a letter from lyme in the evening . "
CONTEXT = FILLER * 5 + "anne elliot walked to kellynch hall . " + FILLER * 2
ANSWER = "kellynch hall"


def _features(max_length=24, stride=8):
    ex = QAExample("q1", "where did anne go ?", CONTEXT, [(ANSWER, CONTEXT.index(ANSWER))], "hand-made")
    cfg = FinetuneConfig(doc_stride=stride, max_length=max_length)
    return ex, encode("extractive-qa", hand_tokenizer(), [ex], None, max_length, True, cfg)


def test_long_document_is_split_into_overlapping_windows_with_correct_targets():
    ex, feats = _features()
    tok = hand_tokenizer()
    assert len(tok(CONTEXT)["input_ids"]) > 24 and len(feats) >= 4
    assert all(len(f["input_ids"]) <= 24 for f in feats)
    covered = []
    for f in feats:
        ctx = [o for o in f["offsets"] if o is not None]
        covered.append((ctx[0][0], ctx[-1][1]))
        s, e = f["start_positions"], f["end_positions"]
        if s == CLS_INDEX:
            a = CONTEXT.index(ANSWER)
            assert not (ctx[0][0] <= a and ctx[-1][1] >= a + len(ANSWER))  # the answer is not whole in it
        else:
            assert CONTEXT[f["offsets"][s][0]:f["offsets"][e][1]] == ANSWER
    assert sum(f["start_positions"] != CLS_INDEX for f in feats) >= 1
    # consecutive windows overlap and together cover the whole document
    assert covered[0][0] == 0 and covered[-1][1] == len(CONTEXT.rstrip())
    assert all(b[0] < a[1] for a, b in zip(covered, covered[1:]))


def test_post_processing_picks_the_best_valid_span_across_windows():
    ex, feats = _features()
    post = QAPostProcessor(max_answer_length=3, n_best=20)
    starts, ends = [], []
    for k, f in enumerate(feats):
        n = len(f["input_ids"])
        s, e = np.zeros(n), np.zeros(n)
        ctx = [i for i, o in enumerate(f["offsets"]) if o is not None]
        if f["start_positions"] != CLS_INDEX:
            s[f["start_positions"]] += 5.0
            e[f["end_positions"]] += 5.0
        else:
            # traps whose pair scores beat the answer's 10 but are invalid: an end before the start, or a
            # span longer than 3 tokens (every valid pair in these windows scores at most 9)
            if k % 2:
                s[ctx[5]], e[ctx[1]] = 9.0, 9.0
            else:
                s[ctx[0]], e[ctx[4]] = 8.0, 8.0
        s[CLS_INDEX] = e[CLS_INDEX] = 20.0  # the special token is never an answer
        starts.append(s)
        ends.append(e)
    post.update(feats, starts, ends)
    text, a, b, score = post.answer(0, CONTEXT)
    assert text == ANSWER and CONTEXT[a:b] == ANSWER and a == CONTEXT.index(ANSWER)
    assert score == 10.0


def test_best_span_constraints():
    offsets = [None, (0, 4), (5, 9), (10, 14), (15, 19), None]
    s = np.array([0, 1, 0, 0, 2.5, 0.0])
    e = np.array([0, 0, 2, 0, 0, 9.0])
    # the best start (4) comes after the best end (2), and the last token is padding: start 1, end 2
    assert best_span(s, e, offsets, max_answer_length=5) == (3.0, 1, 2)
    assert best_span(s, e, offsets, max_answer_length=1) == (2.5, 4, 4)
    assert best_span(s, e, [None] * 6, 5) is None
    assert window_targets([None, (0, 4), (5, 9)], ("abcd", 0)) == (1, 1)
    assert window_targets([None, (0, 4), (5, 9)], ("xyz", 20)) == (CLS_INDEX, CLS_INDEX)
