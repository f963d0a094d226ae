"""Pure augmentations of (normalized) log-mel clips for the two-view speech methods (DeLoRes, Speech SimCLR),
one numpy Generator per example, so a view is a function of (clip, rng) alone:

* `random_crop` — a random segment of at least `min_fraction` of the clip's real frames, time-stretched by a
  random rate (Speech SimCLR's speed resampling; with the crop, BYOL-A / DeLoRes' random resize crop);
* `gain` — a random gain in dB: a constant shift of log power, `db * ln(10) / 10` per channel, scaled to
  normalized units by `scale` (1 / the channel's std under global normalization);
* `gaussian_noise` — additive noise of a random std in [0, max_std] on the real frames;
* `time_masks` / `freq_masks` — SpecAugment (Park et al. 2019): blocks of frames / channels, each width
  uniform in [0, max_width], set to 0 (the mean after normalization);
* `log_mixup_exp` — BYOL-A's mixup in the power domain, log((1 - w) e^x + w e^y), with another clip of the
  batch (in `make_batch`, after the per-example views).

Hand-written: torchaudio is off limits here, and these are a few lines each on numpy arrays.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from selfsup.config import bounded

LOG_POWER_PER_DB = math.log(10.0) / 10.0


@dataclasses.dataclass
class AudioViewConfig:
    """How a view is drawn (the recipe's `objective.views`)."""

    crop_min: float = bounded(0.6, gt=0, le=1, doc="random crop: shortest fraction of the real frames kept")
    stretch: float = bounded(0.1, ge=0, lt=1, doc="time stretch rate uniform in [1 - stretch, 1 + stretch]")
    gain_db: float = bounded(6.0, ge=0, doc="gain uniform in [-gain_db, +gain_db] dB")
    noise_std: float = bounded(0.1, ge=0, doc="Gaussian noise, std uniform in [0, noise_std] (normalized units)")
    time_masks: int = bounded(2, ge=0, doc="SpecAugment time masks per view")
    time_mask_width: int = bounded(10, ge=0, doc="frames; each time mask's width is uniform in [0, this]")
    freq_masks: int = bounded(2, ge=0, doc="SpecAugment frequency masks per view")
    freq_mask_width: int = bounded(10, ge=0, doc="channels; each mask's width is uniform in [0, this]")
    mixup: float = bounded(0.0, ge=0, lt=1, doc="mixup weight of another clip, uniform in [0, this] (0 = off)")


def random_crop(frames: np.ndarray, valid: int, rng: np.random.Generator, min_fraction: float,
                stretch: float = 0.0) -> tuple[np.ndarray, int]:
    """A random segment of the first `valid` frames (length uniform in [min_fraction, 1] x valid), resampled
    in time by a rate uniform in [1 - stretch, 1 + stretch] (linear interpolation), placed at the start of a
    zero array shaped like `frames`. Returns (view, its real frames)."""
    total = len(frames)
    out = np.zeros_like(frames, dtype=np.float32)
    if valid <= 0:
        return out, 0
    n = int(rng.integers(max(1, int(math.ceil(min_fraction * valid))), valid + 1))
    start = int(rng.integers(0, valid - n + 1))
    segment = np.asarray(frames[start:start + n], dtype=np.float32)
    rate = float(rng.uniform(1.0 - stretch, 1.0 + stretch)) if stretch > 0 else 1.0
    m = max(1, min(total, int(round(n / rate))))
    if m != n:
        where = np.linspace(0.0, n - 1.0, m)
        segment = np.stack([np.interp(where, np.arange(n), segment[:, c]) for c in range(segment.shape[1])], 1)
    out[:m] = segment
    return out, m


def gain(frames: np.ndarray, valid: int, rng: np.random.Generator, max_db: float,
         scale: np.ndarray | float = 1.0) -> np.ndarray:
    """A gain of uniform [-max_db, max_db] dB on the real frames: log power + db * ln(10) / 10, times `scale`."""
    x = np.array(frames, dtype=np.float32, copy=True)
    if max_db > 0:
        db = rng.uniform(-max_db, max_db)
        x[:valid] += (db * LOG_POWER_PER_DB * np.asarray(scale, dtype=np.float32)).astype(np.float32)
    return x


def gaussian_noise(frames: np.ndarray, valid: int, rng: np.random.Generator, max_std: float) -> np.ndarray:
    x = np.array(frames, dtype=np.float32, copy=True)
    if max_std > 0:
        std = rng.uniform(0.0, max_std)
        x[:valid] += rng.normal(0.0, std, size=x[:valid].shape).astype(np.float32)
    return x


def time_masks(frames: np.ndarray, valid: int, rng: np.random.Generator, count: int,
               max_width: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """`count` blocks of consecutive real frames set to 0; returns (frames, [(start, width), ...])."""
    x = np.array(frames, dtype=np.float32, copy=True)
    blocks = []
    for _ in range(count):
        width = int(rng.integers(0, min(max_width, valid) + 1)) if valid > 0 else 0
        start = int(rng.integers(0, valid - width + 1)) if valid > 0 else 0
        x[start:start + width] = 0.0
        blocks.append((start, width))
    return x, blocks


def freq_masks(frames: np.ndarray, valid: int, rng: np.random.Generator, count: int,
               max_width: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """`count` blocks of consecutive channels set to 0 on the real frames; returns (frames, blocks)."""
    x = np.array(frames, dtype=np.float32, copy=True)
    n_ch, blocks = x.shape[1], []
    for _ in range(count):
        width = int(rng.integers(0, min(max_width, n_ch) + 1))
        start = int(rng.integers(0, n_ch - width + 1))
        x[:valid, start:start + width] = 0.0
        blocks.append((start, width))
    return x, blocks


def augment_view(clip: np.ndarray, valid: int, rng: np.random.Generator, cfg: AudioViewConfig,
                 scale: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
    """One view of a (T, F) clip: crop + stretch, gain, noise, frequency masks, time masks (in that order).
    Returns (view, the same crop without the other augmentations — a reconstruction target, real frames)."""
    clean, n = random_crop(clip, valid, rng, cfg.crop_min, cfg.stretch)
    x = gain(clean, n, rng, cfg.gain_db, scale)
    x = gaussian_noise(x, n, rng, cfg.noise_std)
    x, _ = freq_masks(x, n, rng, cfg.freq_masks, cfg.freq_mask_width)
    x, _ = time_masks(x, n, rng, cfg.time_masks, cfg.time_mask_width)
    return x, clean, n


def log_mixup_exp(views: np.ndarray, weights: np.ndarray, lengths: np.ndarray, mean: np.ndarray | None = None,
                  std: np.ndarray | None = None) -> np.ndarray:
    """(B, T, F) normalized log-mel views, (B,) weights, (B,) real frames -> view_i mixed with view_{i+1 mod B}
    in the power domain, log((1 - w) e^x + w e^y) on log power (mean/std undo and redo a global
    normalization), over view i's real frames; its padding stays 0."""
    if len(views) < 2 or not np.any(weights > 0):
        return views
    mu = np.zeros(views.shape[-1], np.float32) if mean is None else np.asarray(mean, np.float32)
    sd = np.ones(views.shape[-1], np.float32) if std is None else np.asarray(std, np.float32)
    raw = views * sd + mu
    partner = np.roll(raw, -1, axis=0)
    w = np.asarray(weights, np.float32).reshape(-1, 1, 1)
    mixed = np.logaddexp(np.log1p(-w) + raw, np.log(np.maximum(w, 1e-12)) + partner)
    real = (np.arange(views.shape[1])[None] < np.asarray(lengths).reshape(-1, 1))[..., None]
    mixed = np.where(real & (w > 0), (mixed - mu) / sd, views)
    return mixed.astype(np.float32)
