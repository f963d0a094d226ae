"""Pure corruptions of speech inputs, one numpy Generator per example (so resume and data-parallel runs draw
identical noise):

* `span_mask` — wav2vec 2.0 / HuBERT / data2vec time masking: each frame starts a masked span of `span`
  frames with probability `mask_prob` (spans may overlap; about 49% masked at p = 0.065, span 10). Written here
  because transformers' `_compute_mask_indices` draws from numpy's global generator.
* `mockingjay_corrupt` — Mockingjay's dynamic span masking (Liu et al. 2020): spans of `span` consecutive
  frames covering `mask_prob` of the utterance; a chosen span is zeroed (80%), replaced by another span of
  the same utterance (10%) or left as it is (10%); the loss is taken on every chosen frame.
* `channel_mask` — TERA's frequency alteration (Liu, Li & Lee 2021): a block of consecutive channels, width
  uniform in [0, max_width], set to zero for the whole utterance.
* `magnitude_alteration` — TERA: with probability `prob`, Gaussian noise of std `std` added to every value.
"""
from __future__ import annotations

import numpy as np


def span_mask(n_frames: int, mask_prob: float, span: int, rng: np.random.Generator, min_spans: int = 1) -> np.ndarray:
    """(n_frames,) bool: spans of `span` frames starting at about mask_prob * n_frames / span ... positions
    (fairseq's count: mask_prob * n / span + a uniform draw, floored)."""
    mask = np.zeros(n_frames, dtype=bool)
    if n_frames <= 0 or mask_prob <= 0:
        return mask
    span = max(1, min(span, n_frames))
    n_spans = max(min_spans, int(mask_prob * n_frames / span + rng.random()))
    n_spans = min(n_spans, n_frames - span + 1)
    starts = rng.choice(n_frames - span + 1, size=n_spans, replace=False)
    for s in starts:
        mask[s:s + span] = True
    return mask


def mockingjay_corrupt(frames: np.ndarray, rng: np.random.Generator, mask_prob: float = 0.15, span: int = 7,
                       valid: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(T, F) frames -> (corrupted frames, (T,) bool of frames the loss predicts). Only the first `valid`
    frames (the real ones, before padding) are chosen."""
    n = len(frames) if valid is None else valid
    x = np.array(frames, dtype=np.float32, copy=True)
    chosen = np.zeros(len(frames), dtype=bool)
    if n < span:
        return x, chosen
    n_spans = max(1, int(round(mask_prob * n / span)))
    for s in rng.choice(n - span + 1, size=min(n_spans, n - span + 1), replace=False):
        chosen[s:s + span] = True
        u = rng.random()
        if u < 0.8:
            x[s:s + span] = 0.0
        elif u < 0.9:
            r = int(rng.integers(0, n - span + 1))
            x[s:s + span] = frames[r:r + span]
    return x, chosen


def channel_mask(frames: np.ndarray, rng: np.random.Generator, max_width: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, F) -> (frames with a block of channels zeroed, (F,) bool of the zeroed channels)."""
    x = np.array(frames, dtype=np.float32, copy=True)
    n_ch = x.shape[1]
    width = int(rng.integers(0, min(max_width, n_ch) + 1))
    masked = np.zeros(n_ch, dtype=bool)
    if width:
        start = int(rng.integers(0, n_ch - width + 1))
        masked[start:start + width] = True
        x[:, masked] = 0.0
    return x, masked


def magnitude_alteration(frames: np.ndarray, rng: np.random.Generator, prob: float = 0.1,
                         std: float = 0.2) -> np.ndarray:
    if rng.random() >= prob:
        return np.asarray(frames, dtype=np.float32)
    return (frames + rng.normal(0.0, std, size=frames.shape)).astype(np.float32)


def tera_corrupt(frames: np.ndarray, rng: np.random.Generator, mask_prob: float = 0.15, span: int = 7,
                 max_channels: int = 16, noise_prob: float = 0.1, noise_std: float = 0.2,
                 valid: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TERA's three alterations (Liu, Li & Lee 2021, sec. III) of (T, F) frames, in the paper's order: time
    (Mockingjay's spans, `mockingjay_corrupt`), frequency (`channel_mask`, width uniform in [0, max_channels]),
    magnitude (`magnitude_alteration` of the real frames). Returns (corrupted, (T,) bool frames chosen by the
    time alteration, (F,) bool channels zeroed); the loss is taken on the union of both."""
    n = len(frames) if valid is None else valid
    x, chosen = mockingjay_corrupt(frames, rng, mask_prob, span, n)
    x, channels = channel_mask(x, rng, max_channels)
    x[:n] = magnitude_alteration(x[:n], rng, noise_prob, noise_std)
    return x, chosen, channels


def gap_bucket(gap: int, bucket_frames: int, num_buckets: int) -> int:
    """Temporal-gap class of two segments whose starts are `gap` frames apart: buckets of `bucket_frames`
    frames, the last one open-ended (gap >= (num_buckets - 1) * bucket_frames)."""
    return min(num_buckets - 1, abs(int(gap)) // bucket_frames)


def sample_segment_pair(n_frames: int, segment: int, bucket_frames: int, num_buckets: int,
                        rng: np.random.Generator) -> tuple[int, int, int]:
    """Two segments of `segment` frames inside the first `n_frames`: (start_1, start_2, gap bucket). The class
    is drawn uniformly among the ones the clip can hold, then the gap uniformly inside it, then the pair's
    position and order, so the classes are balanced whatever the clip lengths."""
    longest = max(0, n_frames - segment)  # the largest gap between two starts
    reachable = min(num_buckets, longest // bucket_frames + 1)
    bucket = int(rng.integers(0, reachable))
    low = bucket * bucket_frames
    high = longest if bucket == num_buckets - 1 else min(longest, low + bucket_frames - 1)
    gap = int(rng.integers(low, high + 1))
    first = int(rng.integers(0, longest - gap + 1))
    pair = (first, first + gap) if rng.random() < 0.5 else (first + gap, first)
    return pair[0], pair[1], bucket
