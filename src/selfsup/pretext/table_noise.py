"""Corruptions of one feature row for denoising auto-encoders (Vincent, Larochelle, Bengio & Manzagol 2008,
"Extracting and Composing Robust Features with Denoising Autoencoders"; Vincent et al. 2010, "Stacked
Denoising Autoencoders"): additive isotropic Gaussian noise, masking noise (a random fraction of the features
set to a fill value — 0, the training mean after standardization) and salt-and-pepper noise (a random
fraction set to the feature's minimum or maximum, each with probability 1/2).

Pure functions of (row, rng, parameters) -> (corrupted row, corrupted-feature mask); numpy only.
"""
from __future__ import annotations

import numpy as np


def gaussian_noise(x: np.ndarray, rng: np.random.Generator, std: float) -> tuple[np.ndarray, np.ndarray]:
    """x + N(0, std^2) on every feature; the mask is all True."""
    noisy = x + rng.normal(0.0, std, size=x.shape)
    return noisy.astype(x.dtype), np.ones(x.shape, dtype=bool)


def masking_noise(x: np.ndarray, rng: np.random.Generator, rate: float,
                  fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Each feature independently replaced by `fill` with probability `rate`."""
    mask = rng.random(x.shape) < rate
    return np.where(mask, np.asarray(fill, dtype=x.dtype), x).astype(x.dtype), mask


def salt_and_pepper(x: np.ndarray, rng: np.random.Generator, fraction: float, low: np.ndarray | float,
                    high: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Each feature independently, with probability `fraction`, set to `low` or `high` (a fair coin);
    `low` / `high` are per-feature arrays (the training minimum and maximum) or scalars."""
    mask = rng.random(x.shape) < fraction
    salt = rng.random(x.shape) < 0.5
    extreme = np.where(salt, np.broadcast_to(high, x.shape), np.broadcast_to(low, x.shape))
    return np.where(mask, extreme, x).astype(x.dtype), mask


def corrupt(x: np.ndarray, rng: np.random.Generator, kind: str, level: float, low: np.ndarray | float = -1.0,
            high: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One of the three corruptions by name: `gaussian` (level = std), `masking` (level = rate) or
    `salt_and_pepper` (level = fraction)."""
    if kind == "gaussian":
        return gaussian_noise(x, rng, level)
    if kind == "masking":
        return masking_noise(x, rng, level)
    if kind == "salt_and_pepper":
        return salt_and_pepper(x, rng, level, low, high)
    raise ValueError(f"unknown table noise {kind!r}")
