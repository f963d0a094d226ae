"""Streaming evaluation metrics: each accumulates sufficient statistics batch by batch (a confusion matrix,
span counts, sums), never the logits, so evaluation memory does not grow with the data set.

- `ClassificationMetrics`: accuracy, macro-F1 (scikit-learn's definition: over the labels present in the
  references or the predictions), Matthews correlation (the multi-class formula scikit-learn uses).
- `RegressionMetrics`: Pearson (from running sums) and Spearman (needs ranks, so it keeps one float32
  prediction and target per example — 8 bytes each, never the hidden states or logits).
- `TaggingMetrics`: token accuracy over words and span F1 over BIO/IOB/IOBES chunks (conlleval's rules).
- `QAMetrics`: SQuAD exact match and token F1 (the official normalization), best over the gold answers.
"""
from __future__ import annotations

import collections
import math
import re
import string
from typing import Iterable, Sequence

import numpy as np


class ClassificationMetrics:
    def __init__(self, num_classes: int):
        self.k = int(num_classes)
        self.confusion = np.zeros((self.k, self.k), dtype=np.int64)  # [true, predicted]

    def update(self, predictions: Iterable[int], references: Iterable[int]) -> None:
        p = np.asarray(list(predictions) if not hasattr(predictions, "__array__") else predictions, dtype=np.int64)
        r = np.asarray(list(references) if not hasattr(references, "__array__") else references, dtype=np.int64)
        p, r = p.reshape(-1), r.reshape(-1)
        np.add.at(self.confusion, (r, p), 1)

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def compute(self) -> dict[str, float]:
        c = self.confusion.astype(np.float64)
        n = c.sum()
        if n == 0:
            return {"accuracy": math.nan, "macro_f1": math.nan, "mcc": math.nan}
        tp = np.diag(c)
        true_k, pred_k = c.sum(1), c.sum(0)
        present = (true_k + pred_k) > 0
        denom = true_k + pred_k
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        macro_f1 = float(f1[present].mean()) if present.any() else 0.0
        cov_yp = tp.sum() * n - (true_k * pred_k).sum()
        cov_yy = n * n - (true_k * true_k).sum()
        cov_pp = n * n - (pred_k * pred_k).sum()
        mcc = 0.0 if cov_yy * cov_pp == 0 else float(cov_yp / math.sqrt(cov_yy * cov_pp))
        return {"accuracy": float(tp.sum() / n), "macro_f1": macro_f1, "mcc": mcc}


class RegressionMetrics:
    def __init__(self):
        self._pred: list[np.ndarray] = []
        self._ref: list[np.ndarray] = []
        self.n = 0
        self.sums = np.zeros(5, dtype=np.float64)  # x, y, xx, yy, xy
        self.sq_error = 0.0

    def update(self, predictions: Iterable[float], references: Iterable[float]) -> None:
        x = np.asarray(predictions, dtype=np.float64).reshape(-1)
        y = np.asarray(references, dtype=np.float64).reshape(-1)
        self._pred.append(x.astype(np.float32))
        self._ref.append(y.astype(np.float32))
        self.n += len(x)
        self.sums += [x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()]
        self.sq_error += float(((x - y) ** 2).sum())

    def compute(self) -> dict[str, float]:
        if self.n < 2:
            return {"pearson": math.nan, "spearman": math.nan, "mse": math.nan}
        n = self.n
        sx, sy, sxx, syy, sxy = self.sums
        cov = sxy - sx * sy / n
        vx, vy = sxx - sx * sx / n, syy - sy * sy / n
        pearson = float(cov / math.sqrt(vx * vy)) if vx > 0 and vy > 0 else math.nan
        x, y = np.concatenate(self._pred), np.concatenate(self._ref)
        rx, ry = _average_ranks(x), _average_ranks(y)
        spearman = float(np.corrcoef(rx, ry)[0, 1]) if rx.std() > 0 and ry.std() > 0 else math.nan
        return {"pearson": pearson, "spearman": spearman, "mse": self.sq_error / n}


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    ranks = np.empty(len(a), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], len(a)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def chunks(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) spans of a BIO / IOB1 / IOBES tag sequence, by conlleval's start/end rules; a tag
    without a prefix (e.g. `NOUN`) is a one-word chunk of that type unless it is `O`."""
    out, start, kind = set(), None, None
    prev_tag, prev_type = "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):
        tag = tag or "O"
        if tag == "O":
            t, typ = "O", ""
        elif len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESLU":
            t, typ = tag[0], tag[2:]
        else:
            t, typ = "S", tag  # plain tags such as POS tags: every word is its own span
        t = {"L": "E", "U": "S"}.get(t, t)
        end_prev = (prev_tag in ("B", "I") and t in ("B", "S", "O")) or (prev_tag in ("E", "S")) or \
            (prev_tag != "O" and t != "O" and typ != prev_type)
        begin = t in ("B", "S") or (t in ("I", "E") and (prev_tag in ("E", "S", "O") or typ != prev_type))
        if end_prev and start is not None:
            out.add((kind, start, i))
            start = None
        if begin and t != "O":
            start, kind = i, typ
        prev_tag, prev_type = t, typ
    return out


class TaggingMetrics:
    def __init__(self):
        self.correct = self.words = 0
        self.span_correct = self.span_pred = self.span_gold = 0

    def update(self, predicted: Sequence[Sequence[str | None]], gold: Sequence[Sequence[str]]) -> None:
        for p, g in zip(predicted, gold):
            p = [x if x is not None else "O" for x in p]
            self.correct += sum(a == b for a, b in zip(p, g))
            self.words += len(g)
            cp, cg = chunks(p), chunks(g)
            self.span_correct += len(cp & cg)
            self.span_pred += len(cp)
            self.span_gold += len(cg)

    def compute(self) -> dict[str, float]:
        prec = self.span_correct / self.span_pred if self.span_pred else 0.0
        rec = self.span_correct / self.span_gold if self.span_gold else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        return {"token_accuracy": self.correct / self.words if self.words else math.nan,
                "span_precision": prec, "span_recall": rec, "span_f1": f1}


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD's official normalization: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


class QAMetrics:
    def __init__(self):
        self.em = self.f1 = 0.0
        self.n = 0

    def update(self, predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> None:
        for p, g in zip(predictions, golds):
            self.em += max(exact_match(p, x) for x in g)
            self.f1 += max(token_f1(p, x) for x in g)
            self.n += 1

    def compute(self) -> dict[str, float]:
        if not self.n:
            return {"exact_match": math.nan, "f1": math.nan}
        return {"exact_match": self.em / self.n, "f1": self.f1 / self.n}


class MeanLoss:
    """The example-weighted mean of batch losses."""

    def __init__(self):
        self.total = 0.0
        self.n = 0

    def update(self, loss: float, n: int) -> None:
        self.total += float(loss) * n
        self.n += n

    def compute(self) -> float:
        return self.total / self.n if self.n else math.nan
