"""Frozen-feature probes: multinomial logistic regression on standardized features (the linear probe) and a
cosine kNN classifier with temperature-weighted votes (k = 20, T = 0.07; Wu et al. 2018, as used by
InstDisc, DINO and solo-learn). Also feature extraction for exported encoders, raw pixels and a random-init
backbone (the baselines of bench/image_ssl.py).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError


@torch.no_grad()
def encoder_features(encoder: torch.nn.Module, images: np.ndarray, mean: list[float], std: list[float],
                     batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """Pooled features of (N, C, S, S) uint8 images (scaled to [0, 1], then normalized by mean/std)."""
    encoder = encoder.to(device).eval()
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[i:i + batch_size])).to(device).float() / 255.0
        out.append(encoder((x - m) / s).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def pixel_features(images: np.ndarray) -> np.ndarray:
    """The raw-pixel baseline: every pixel in [0, 1] as a feature."""
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def _check(train_y: np.ndarray, eval_y: np.ndarray) -> None:
    if (train_y < 0).any() or (eval_y < 0).any():
        raise SelfsupError("probe: every train and eval image needs a label (class sub-folders, y in the .npz, "
                           "an IDX labels file or a label column)")
    if len(np.unique(train_y)) < 2:
        raise SelfsupError(f"probe: the train data has {len(np.unique(train_y))} class; need at least 2")


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                 c: float = 1.0, max_iter: int = 1000) -> float:
    """Accuracy of L2-regularized logistic regression (lbfgs) on standardized frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    _check(train_y, eval_y)
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the probe is compared at a fixed budget
        clf.fit(scaler.transform(train_x), train_y)
    return float((clf.predict(scaler.transform(eval_x)) == eval_y).mean())


def knn_probe(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, k: int = 20,
              temperature: float = 0.07, batch_size: int = 1024) -> float:
    """Cosine kNN: the k most similar training features vote for their class with weight exp(sim / T)."""
    _check(train_y, eval_y)
    train = F.normalize(torch.from_numpy(np.asarray(train_x, np.float32)), dim=1)
    labels = torch.from_numpy(np.asarray(train_y, np.int64))
    n_classes = int(max(train_y.max(), eval_y.max())) + 1
    k = min(k, len(train))
    correct = 0
    for i in range(0, len(eval_x), batch_size):
        q = F.normalize(torch.from_numpy(np.asarray(eval_x[i:i + batch_size], np.float32)), dim=1)
        sim, idx = (q @ train.t()).topk(k, dim=1)
        votes = torch.zeros(len(q), n_classes).scatter_add_(1, labels[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1).numpy() == eval_y[i:i + batch_size]).sum())
    return correct / max(1, len(eval_x))


def run_probe(kind: str, train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
              k: int = 20, temperature: float = 0.07) -> float:
    if kind == "linear":
        return linear_probe(train_x, train_y, eval_x, eval_y)
    if kind == "knn":
        return knn_probe(train_x, train_y, eval_x, eval_y, k=k, temperature=temperature)
    raise SelfsupError(f"--probe: must be linear or knn, got {kind!r}")
