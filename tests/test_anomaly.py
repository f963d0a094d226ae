"""Anomaly detection: a trained auto-encoder finds planted anomalies that an untrained one does not, the
threshold comes from normal training rows, scores are identical after a reload, `anomaly score` writes its
files, and bad tables are one-line exit-2 errors that write nothing."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import run_cli

FAST = ["train.batch_size=32", "train.eval_every=1000", "train.checkpoint_every=1000", "train.warmup_steps=5",
        "train.threads=1", "model.bottleneck=2"]


def planted(n: int, rng: np.random.Generator, anomalies: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normal rows on a 2-d linear manifold in 8-d (plus small noise); anomalies: off-manifold rows of the
    same per-feature scale."""
    mix = np.random.default_rng(123).normal(size=(2, 8))
    x = rng.normal(size=(n, 2)) @ mix + 0.05 * rng.normal(size=(n, 8))
    y = np.zeros(n, dtype=int)
    if anomalies:
        x[:anomalies] = rng.normal(size=(anomalies, 8)) * x.std(0)
        y[:anomalies] = 1
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from selfsup.adapt.tools.anomaly import AutoEncoderDetector

    rng = np.random.default_rng(0)
    train, _ = planted(400, rng)
    test, labels = planted(300, rng, anomalies=30)
    root = tmp_path_factory.mktemp("detector")
    det = AutoEncoderDetector(method="ae", max_steps=150, overrides=FAST, work_dir=root).fit(train)
    return det, train, test, labels, root


def test_trained_autoencoder_beats_an_untrained_one_on_planted_anomalies(fitted):
    import torch

    from selfsup.adapt.tools.anomaly import batched_scores
    from selfsup.objectives.autoencoder import AutoEncoder
    from selfsup.objectives.base import Prepared

    det, train, test, labels, _ = fitted
    trained = roc_auc_score(labels, det.decision_function(test))
    torch.manual_seed(0)
    fresh = AutoEncoder(det.model_.recipe, Prepared([], [], {"dim": 8, "preprocessor": det.model_.preprocessor}))
    x = det.model_.preprocessor.transform(pd.DataFrame(test, columns=[f"x{i}" for i in range(8)]), [("X", 0, 300)])
    untrained = roc_auc_score(labels, batched_scores(fresh, x))
    assert trained > 0.95 and trained > untrained + 0.2, (trained, untrained)
    # the threshold is the 95th percentile of the normal training rows' scores, nothing else
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_function(train), 0.95))
    assert det.labels_.mean() == pytest.approx(0.05, abs=0.01)
    assert set(np.unique(det.predict(test))) == {0, 1}
    from sklearn.base import clone

    assert clone(det).get_params() == det.get_params() and clone(det).model_ is None  # unfitted copy


def test_scores_identical_after_reload(fitted, tmp_path):
    from selfsup.adapt.tools.anomaly import AutoEncoderDetector

    det, _, test, _, _ = fitted
    again = AutoEncoderDetector.load(det.save(tmp_path / "saved"))
    assert np.array_equal(det.decision_function(test), again.decision_function(test))
    assert again.threshold_ == det.threshold_
    vq = AutoEncoderDetector(method="vqvae", max_steps=30, overrides=FAST[:-1], work_dir=tmp_path / "vq").fit(test)
    assert np.array_equal(vq.decision_function(test), AutoEncoderDetector.load(vq.run_).decision_function(test))


def test_score_writes_scores_metrics_and_histogram(fitted, tmp_path):
    from selfsup.adapt.tools.anomaly import score_anomaly

    det, _, test, labels, root = fitted
    np.savez(tmp_path / "test.npz", x=test, y=labels)
    metrics = score_anomaly(root / "run", [str(tmp_path / "test.npz")], tmp_path / "scored")
    assert {p.name for p in (tmp_path / "scored").iterdir()} == {"scores.csv", "metrics.json", "scores.png"}
    assert metrics == json.loads((tmp_path / "scored" / "metrics.json").read_text())
    table = pd.read_csv(tmp_path / "scored" / "scores.csv")
    np.testing.assert_allclose(table["score"], det.decision_function(test), rtol=1e-6)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, table["score"]), abs=1e-6)
    assert 0 < metrics["auprc"] <= 1 and 0 <= metrics["f1"] <= 1 and metrics["anomalies"] == 30


def _one_line_exit_2(res, *needles):
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("selfsup: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_cli_bad_tables_exit_2_and_write_nothing(fitted, tmp_path):
    _, _, _, _, root = fitted
    (tmp_path / "nan.csv").write_text("a,b\n1,2\n3,\n5,6\n")
    res = run_cli("anomaly", "fit", "--data", str(tmp_path / "nan.csv"), "--out", str(tmp_path / "fit"),
                  "--set", "data.impute=none", "--no-progress")
    _one_line_exit_2(res, "nan.csv", "row 2 (line 3)", "'b'", "missing value")
    (tmp_path / "other.csv").write_text("x0,x1\n1,2\n")
    res = run_cli("anomaly", "score", "--model", str(root / "run"), "--data", str(tmp_path / "other.csv"),
                  "--out", str(tmp_path / "scored"))
    _one_line_exit_2(res, "other.csv", "column 'x2' is missing")
    assert not (tmp_path / "fit").exists() and not (tmp_path / "scored").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.csv", "other.csv"]


def test_figures_are_pure_functions_of_numbers(tmp_path):
    from selfsup.report.figures import plot_image_grid, plot_rate_distortion, plot_score_histogram

    paths = [plot_score_histogram([0.1, 0.2, 0.3], [1.0, 5.0], tmp_path / "h.png", threshold=0.25),
             plot_rate_distortion({"pca": [(2, 0.5), (4, 0.3)], "ae": [(2, 0.4), (4, 0.2)]}, tmp_path / "rd.png"),
             plot_image_grid({"a": [np.eye(8)] * 3, "b": [np.ones((8, 8))] * 2}, tmp_path / "g.png", vmax=1)]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
