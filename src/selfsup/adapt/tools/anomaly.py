"""Anomaly detection with auto-encoders on tables, images and windows of log-mel frames (`selfsup anomaly fit |
score`, `AutoEncoderDetector` for tables).

Fit: pretrain an auto-encoder (`ae`, `dae`, `vae`, `vqvae`, `binary`, `onehot`) on normal rows only, through
the ordinary engine, then score those same normal training rows and keep their (1 - contamination) quantile —
the 95th percentile by default — as the decision threshold (`anomaly.json` beside the run's `model/`). No
anomalous row is ever used to choose anything. A row is a table row, an image, or a window of log-mel frames
(data/ae_inputs.py; `data.modality`, or the kind of the source).

Score: each row's anomaly score is the model's `score` (reconstruction error; the negative ELBO for a VAE),
higher = more anomalous. With 0/1 labels (1 = anomaly), or any labels and `normal` naming the normal ones, the
metrics are AUROC and AUPRC (threshold-free, scikit-learn) and precision / recall / F1 at the fitted
threshold. The same input gives identical scores after a reload (the models are deterministic in eval mode).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator

from selfsup.errors import SelfsupError
from selfsup.fileio import atomic_dir, atomic_write_json

METHODS = {"ae": "autoencoder", "dae": "denoising_autoencoder", "vae": "vae", "vqvae": "vqvae",
           "binary": "binary_autoencoder", "onehot": "onehot_autoencoder"}
ANOMALY_JSON = "anomaly.json"


def recipe_for(method: str) -> str:
    if method in METHODS:
        return METHODS[method]
    if method in METHODS.values():
        return method
    raise SelfsupError(f"--method: unknown method {method!r} (known: {', '.join(METHODS)})")


def batched_scores(model, x: np.ndarray | Sequence, batch: int = 4096) -> np.ndarray:
    """The model's per-row scores (float64), in eval mode and without gradients; x is an array of rows or a
    sequence of (row, label) examples (data/ae_inputs.py's rows)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            part = x[i:i + batch] if isinstance(x, np.ndarray) else \
                np.stack([x[j][0] for j in range(i, min(i + batch, len(x)))])
            out.append(model.score(torch.from_numpy(np.ascontiguousarray(part))).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def anomaly_labels(values: Sequence[str] | None, normal: Sequence[str] | None, where: str,
                   explicit: bool) -> np.ndarray | None:
    """0/1 labels (1 = anomaly) from each row's label text ('' = none): the values named `normal` are 0 and any
    other 1; without `normal` the values must be 0 / 1 (else no labels, or an error when the column was asked
    for)."""
    if values is None or all(v == "" for v in values):
        if normal or explicit:
            raise SelfsupError(f"{where}: no labels to score against (--label-column names the labels)")
        return None
    if "" in values:
        i = list(values).index("")
        raise SelfsupError(f"{where}: row {i + 1} has no label (every row needs one to compute the metrics)")
    if normal:
        return np.array([0 if v in set(normal) else 1 for v in values], dtype=np.int64)
    odd = sorted(set(values) - {"0", "1"})
    if not odd:
        return np.array([int(v) for v in values], dtype=np.int64)
    if explicit:
        raise SelfsupError(f"{where}: labels such as {odd[0]!r} are not 0 (normal) / 1 (anomaly); --normal VALUE "
                           "names the normal ones")
    import sys

    print(f"selfsup: note: {where}: labels ({', '.join(odd[:4])}, ...) are not 0 / 1; no metrics (--normal VALUE "
          "names the normal ones)", file=sys.stderr)
    return None


def fit_anomaly(data: Sequence[str] | str, out: str | os.PathLike, method: str = "ae", *,
                max_steps: int | None = None, seed: int | None = None, overrides: Sequence[str] = (),
                contamination: float = 0.05, progress: bool = False) -> dict[str, Any]:
    """Train `method` on the normal rows of `data` into the run folder `out`; write `anomaly.json` there."""
    from selfsup.data.ae_inputs import load_ae_data
    from selfsup.engine.pretrain import pretrain
    from selfsup.objectives.autoencoder_base import load_table_model

    if not 0 < contamination < 0.5:
        raise SelfsupError(f"--contamination: must be in (0, 0.5), got {contamination}")
    sources = [str(data)] if isinstance(data, (str, os.PathLike)) else [str(s) for s in data]
    recipe = recipe_for(method)
    metrics = pretrain(recipe, sources, out, max_steps=max_steps, seed=seed, overrides=list(overrides),
                       progress=progress)
    model = load_table_model(out)
    data = load_ae_data(sources, model.recipe.data, model.preprocessor)
    scores = batched_scores(model, data.rows)
    if data.modality == "table" and (data.rows.data.labels == 1).any():
        import sys

        print(f"selfsup: note: {int((data.rows.data.labels == 1).sum())} of the {len(scores)} training rows are "
              "labelled 1 (anomaly); `anomaly fit` expects normal rows only", file=sys.stderr)
    info = {"method": method, "objective": recipe, "threshold": float(np.quantile(scores, 1 - contamination)),
            "contamination": contamination, "train_rows": int(len(scores)),
            "train_score_mean": float(scores.mean()), "train_score_std": float(scores.std()),
            "train_loss": metrics.get("train_loss"), "heldout_loss": metrics.get("heldout_loss")}
    atomic_write_json(Path(out) / ANOMALY_JSON, info)
    return info


def read_threshold(model_path: str | Path) -> dict[str, Any]:
    """`anomaly.json` of a fitted run (the run folder or its model/); {} when the model was not fitted by us."""
    p = Path(model_path)
    for cand in (p / ANOMALY_JSON, p.parent / ANOMALY_JSON):
        if cand.is_file():
            return json.loads(cand.read_text())
    return {}


def score_metrics(scores: np.ndarray, labels: np.ndarray | None, threshold: float | None) -> dict[str, Any]:
    """AUROC / AUPRC (both classes needed) and precision / recall / F1 at the threshold (1 = anomaly)."""
    from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

    m: dict[str, Any] = {"rows": int(len(scores)), "score_mean": float(np.mean(scores))}
    if threshold is not None:
        m.update(threshold=float(threshold), flagged=int((scores > threshold).sum()))
    if labels is None:
        return m
    m["anomalies"] = int(labels.sum())
    if 0 < labels.sum() < len(labels):
        m.update(auroc=float(roc_auc_score(labels, scores)), auprc=float(average_precision_score(labels, scores)))
    if threshold is not None:
        pred = (scores > threshold).astype(int)
        m.update(precision=float(precision_score(labels, pred, zero_division=0)),
                 recall=float(recall_score(labels, pred, zero_division=0)),
                 f1=float(f1_score(labels, pred, zero_division=0)))
    return m


def _table_rows(ae, sources: list[str], label_column: str | None,
                normal: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A table's preprocessed rows and 0/1 labels (the label column's values, or `normal` naming the normal)."""
    from selfsup.data.tables import label_in, labels_of, read_tables

    frame, spans = read_tables(sources)
    if label_column and label_column not in frame.columns:
        raise SelfsupError(f"{sources[0]}: --label-column: no column {label_column!r} (the table has "
                           f"{', '.join(list(frame.columns)[:12])})")
    column = label_column or label_in(frame, ae.preprocessor.label_column)
    x = ae.preprocessor.transform(frame, spans)
    if normal:
        values = None if column is None else ["" if v != v or v is None else str(v) for v in frame[column]]
        return x, anomaly_labels(values, normal, sources[0], True)
    return x, labels_of(frame, column, spans)


def score_anomaly(model: str | os.PathLike, data: Sequence[str] | str, out: str | os.PathLike, *,
                  label_column: str | None = None, normal: Sequence[str] | None = None) -> dict[str, Any]:
    """Score every row (table row, image, window of frames) of `data` with a fitted model; write scores.csv,
    metrics.json and scores.png to `out`. `normal`: the label values of normal rows (any other = anomaly)."""
    import pandas as pd

    from selfsup.data.ae_inputs import load_ae_data
    from selfsup.data.tables import TablePreprocessor
    from selfsup.objectives.autoencoder_base import load_table_model
    from selfsup.report.figures import plot_score_histogram

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelfsupError(f"{out}: already exists and is not empty; choose another --out")
    ae = load_table_model(model)
    fitted = read_threshold(model)
    sources = [str(data)] if isinstance(data, (str, os.PathLike)) else [str(s) for s in data]
    normal = [str(v) for v in normal] if normal else None
    where = None
    if isinstance(ae.preprocessor, TablePreprocessor):
        x, labels = _table_rows(ae, sources, label_column, normal)
    else:
        rows = load_ae_data(sources, ae.recipe.data, ae.preprocessor, label_column)
        x = rows.rows
        labels = anomaly_labels(rows.label_values(), normal, sources[0], bool(label_column))
        where = [x.where(i) for i in range(len(x))] if hasattr(x, "where") else None
    scores = batched_scores(ae, x)
    threshold = fitted.get("threshold")
    metrics = {"model": str(model), "data": sources, "objective": ae.name,
               **score_metrics(scores, labels, threshold)}
    table = pd.DataFrame({"row": np.arange(len(scores)), "score": scores})
    if where is not None:
        table["where"] = where
    if threshold is not None:
        table["predicted"] = (scores > threshold).astype(int)
    if labels is not None:
        table["label"] = labels
    with atomic_dir(out) as tmp:
        table.to_csv(tmp / "scores.csv", index=False, float_format="%.8g")
        atomic_write_json(tmp / "metrics.json", metrics)
        normal = scores if labels is None else scores[labels == 0]
        plot_score_histogram(normal, None if labels is None else scores[labels == 1], tmp / "scores.png",
                             threshold, title=f"{ae.name} anomaly scores")
    return metrics


def _frame(X: Any):
    """A DataFrame from an array (columns x0, x1, ... as in `.npz` tables) or a DataFrame as is."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        return X
    x = np.asarray(X)
    if x.ndim != 2:
        raise SelfsupError(f"X: expected a (rows, features) array, got shape {x.shape}")
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])


def one_class_split(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The anomaly benchmark's (and the demo's) one-class split of a scikit-learn set: `breast_cancer`
    (malignant = anomaly) or `digits-K` (digit K normal): (train rows, 60% of the normal ones, test rows, the
    other normal rows + every anomaly, test labels 1 = anomaly), drawn from `seed`."""
    from sklearn.datasets import load_breast_cancer, load_digits

    if name == "breast_cancer":
        d = load_breast_cancer()
        x, anomaly = d.data, (d.target == 0).astype(int)  # sklearn target 0 = malignant = the anomaly
    else:
        d = load_digits()
        x, anomaly = d.data, (d.target != int(name.split("-")[1])).astype(int)
    rng = np.random.default_rng([seed, 17])
    normal = rng.permutation(np.flatnonzero(anomaly == 0))
    n_train = int(0.6 * len(normal))
    test = np.concatenate([normal[n_train:], np.flatnonzero(anomaly == 1)])
    return x[normal[:n_train]].astype(np.float32), x[test].astype(np.float32), anomaly[test]


def baseline_scores(method: str, train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    """Anomaly scores (higher = more anomalous) of scikit-learn's `isolation_forest`, `lof` or `ocsvm`, fitted
    on the standardized normal training rows."""
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import OneClassSVM

    scaler = StandardScaler().fit(train)
    a, b = scaler.transform(train), scaler.transform(test)
    model = {"isolation_forest": IsolationForest(n_estimators=200, random_state=seed),
             "lof": LocalOutlierFactor(n_neighbors=20, novelty=True),
             "ocsvm": OneClassSVM(gamma="scale", nu=0.05)}[method].fit(a)
    return -model.score_samples(b)  # sklearn: higher = more normal


class AutoEncoderDetector(BaseEstimator):
    """An auto-encoder anomaly detector with the pyod / scikit-learn interface: `fit(X)` on normal data,
    `decision_function(X)` (higher = more anomalous), `predict(X)` (1 = anomaly, at the threshold of the
    (1 - contamination) quantile of the training scores), `threshold_`, `decision_scores_`, `labels_`;
    `get_params` / `set_params` / `sklearn.base.clone` work. X is an array or a DataFrame (string columns
    are one-hot encoded). Trains through `selfsup pretrain`."""

    def __init__(self, method: str = "ae", max_steps: int | None = None, contamination: float = 0.05,
                 overrides: Sequence[str] = (), seed: int = 0, work_dir: str | os.PathLike | None = None):
        self.method, self.max_steps, self.contamination = method, max_steps, contamination
        self.overrides, self.seed, self.work_dir = overrides, seed, work_dir
        self.model_ = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def fit(self, X: Any, y: Any = None) -> "AutoEncoderDetector":
        frame = _frame(X)
        if self.work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="selfsup-detector-")
            root = Path(self._tmp.name)
        else:
            root = Path(self.work_dir)
            root.mkdir(parents=True, exist_ok=True)
        data = root / "train.parquet"
        frame.to_parquet(data, index=False)
        self.run_ = root / "run"
        info = fit_anomaly([str(data)], self.run_, self.method, max_steps=self.max_steps, seed=self.seed,
                           overrides=list(self.overrides), contamination=self.contamination)
        self._load(self.run_, info)
        self.decision_scores_ = self.decision_function(frame)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def _load(self, folder: Path, info: dict[str, Any]) -> None:
        from selfsup.objectives.autoencoder_base import load_table_model

        self.model_ = load_table_model(folder)
        self.threshold_ = float(info["threshold"])

    def decision_function(self, X: Any) -> np.ndarray:
        if self.model_ is None:
            raise SelfsupError("AutoEncoderDetector: call fit (or load) first")
        frame = _frame(X)
        return batched_scores(self.model_, self.model_.preprocessor.transform(frame, [("X", 0, len(frame))]))

    def predict(self, X: Any) -> np.ndarray:
        return (self.decision_function(X) > self.threshold_).astype(int)

    def save(self, folder: str | os.PathLike) -> Path:
        """Copy the fitted model (model/ and anomaly.json) to a new folder."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            shutil.copytree(self.run_ / "model", tmp / "model")
            shutil.copy2(self.run_ / ANOMALY_JSON, tmp / ANOMALY_JSON)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "AutoEncoderDetector":
        info = read_threshold(folder)
        if not info:
            raise SelfsupError(f"{folder}: no {ANOMALY_JSON} (fit it with `selfsup anomaly fit`)")
        det = cls(method=info["method"], contamination=info["contamination"])
        det.run_ = Path(folder)
        det._load(Path(folder), info)
        return det
