"""Streaming metrics equal scikit-learn / scipy (or the reference formula) on fixed inputs, in any chunking."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from selfsup import metrics as M

RNG = np.random.default_rng(0)
Y_TRUE = RNG.integers(0, 5, 300)
Y_PRED = np.where(RNG.random(300) < 0.6, Y_TRUE, RNG.integers(0, 5, 300))


@pytest.mark.parametrize("chunk", [1, 7, 300])
def test_classification_metrics_equal_sklearn_in_any_chunking(chunk):
    m = M.ClassificationMetrics(5)
    for i in range(0, 300, chunk):
        m.update(Y_PRED[i:i + chunk], Y_TRUE[i:i + chunk])
    got = m.compute()
    assert got["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"), abs=1e-12)
    assert got["mcc"] == pytest.approx(matthews_corrcoef(Y_TRUE, Y_PRED), abs=1e-12)


def test_macro_f1_and_mcc_edge_cases_match_sklearn():
    # a class never predicted, a class absent from both (sklearn averages over labels present in either)
    t, p = np.array([0, 0, 1, 1, 1, 3]), np.array([0, 1, 1, 1, 1, 1])
    m = M.ClassificationMetrics(5)
    m.update(p, t)
    assert m.compute()["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    assert m.compute()["mcc"] == pytest.approx(matthews_corrcoef(t, p))
    const = M.ClassificationMetrics(3)
    const.update([1, 1, 1], [0, 1, 2])  # constant prediction: MCC is 0 (sklearn's convention)
    assert const.compute()["mcc"] == matthews_corrcoef([0, 1, 2], [1, 1, 1]) == 0.0


def test_regression_metrics_equal_scipy_with_ties():
    x = np.round(RNG.normal(size=200), 1)  # rounding makes ties, which Spearman averages
    y = x + RNG.normal(scale=0.7, size=200)
    m = M.RegressionMetrics()
    for i in range(0, 200, 33):
        m.update(x[i:i + 33], y[i:i + 33])
    got = m.compute()
    assert got["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
    assert got["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-9)
    assert got["mse"] == pytest.approx(float(np.mean((x - y) ** 2)))


def test_span_f1_and_token_accuracy_reference_counts():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"], ["B-PER", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O", "O"], ["B-PER", "O", "B-PER"]]
    m = M.TaggingMetrics()
    m.update(pred, gold)
    got = m.compute()
    # gold spans: PER(0,2) LOC(3,5) | PER(0,1) LOC(2,3) = 4; predicted: PER(0,2) LOC(3,4) | PER(0,1) PER(2,3) = 4
    # correct: PER(0,2), PER(0,1) = 2 -> precision 0.5, recall 0.5, F1 0.5; words right: 5/6 + 2/3 = 7/9
    assert got["span_precision"] == got["span_recall"] == got["span_f1"] == pytest.approx(0.5)
    assert got["token_accuracy"] == pytest.approx(7 / 9)


def test_chunks_follow_conlleval_rules():
    assert M.chunks(["I-PER", "I-PER", "O", "I-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}  # IOB1 starts
    assert M.chunks(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}  # a type change ends a chunk
    assert M.chunks(["S-X", "B-Y", "E-Y"]) == {("X", 0, 1), ("Y", 1, 3)}  # IOBES
    assert M.chunks(["NOUN", "VERB", "NOUN"]) == {("NOUN", 0, 1), ("VERB", 1, 2), ("NOUN", 2, 3)}  # POS tags


def test_qa_exact_match_and_token_f1_reference_formula():
    assert M.normalize_answer("The  Kellynch-Hall!") == "kellynchhall"
    assert M.exact_match("the Captain", "Captain") == 1.0
    # "anne elliot of kellynch" vs "anne elliot": overlap 2, precision 2/4, recall 1 -> F1 2/3
    assert M.token_f1("Anne Elliot of Kellynch", "Anne Elliot") == pytest.approx(2 / 3)
    m = M.QAMetrics()
    m.update(["Anne Elliot of Kellynch", "Bath", "Lyme"], [["Anne Elliot"], ["at Bath", "Bath"], ["Uppercross"]])
    got = m.compute()
    assert got["exact_match"] == pytest.approx(1 / 3)  # max over gold answers: "Bath" matches the second
    assert got["f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_mean_loss_is_example_weighted():
    m = M.MeanLoss()
    m.update(1.0, 3)
    m.update(2.0, 1)
    assert m.compute() == pytest.approx(1.25)
    assert math.isnan(M.MeanLoss().compute())
