"""Temporal-gap prediction, the TemporalGap task of Tagliasacchi, Gfeller, de Chaumont Quitry & Roblek 2020
("Pre-Training Audio Representations With Self-Supervision", IEEE Signal Processing Letters 27).

Predicts: how far apart two short segments of one utterance are — the distance between their starts, in K
buckets of `bucket_seconds` (the last one open-ended) — from the two segments alone: each is encoded on its
own (a bidirectional conformer on its log-mel frames, mean-pooled to h1, h2) and a small classifier reads
[h1, h2, |h1 - h2|, h1 * h2]; cross-entropy. The paper estimates the gap between two slices of a clip; the
bucketed classes and the pair features are this implementation's choice. Classes are drawn balanced (see
`sample_segment_pair`); the classifier is dropped after pretraining.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import bounded
from selfsup.objectives.speech_base import SpeechObjective, masked_mean
from selfsup.pretext.speech_masking import sample_segment_pair
from selfsup.registry import register_objective


def pair_features(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """(B, D) x 2 -> (B, 4D): [h1, h2, |h1 - h2|, h1 * h2]."""
    return torch.cat([h1, h2, (h1 - h2).abs(), h1 * h2], dim=-1)


@register_objective("temporal_gap")
class TemporalGap(SpeechObjective):
    inputs = ("logmel",)

    @dataclasses.dataclass
    class Options:
        segment_seconds: float = bounded(0.1, gt=0, doc="length of each of the two segments")
        bucket_seconds: float = bounded(0.1, gt=0, doc="width of each gap class (gap = distance of the starts)")
        num_buckets: int = bounded(4, ge=2, doc="K gap classes; the last holds every longer gap")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.segment = max(1, int(round(o.segment_seconds * self.rate)))
        self.bucket = max(1, int(round(o.bucket_seconds * self.rate)))
        d = self.encoder.feature_dim
        self.classifier = torch.nn.Sequential(torch.nn.Linear(4 * d, d), torch.nn.ReLU(),
                                              torch.nn.Linear(d, o.num_buckets))

    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        first, second, bucket = sample_segment_pair(valid, self.segment, self.bucket, self.options.num_buckets, rng)
        seg_len = min(self.segment, valid)
        segments = np.zeros((2, self.segment, *clip.shape[1:]), dtype=np.float32)
        for i, start in enumerate((first, second)):
            segments[i, :seg_len] = clip[start:start + seg_len]
        return {"segments": segments, "segment_lengths": np.array([seg_len, seg_len], dtype=np.int64),
                "starts": np.array([first, second], dtype=np.int64), "gap_bucket": np.array([bucket], dtype=np.int64)}

    def gap_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K) logits of the gap class of each example's segment pair."""
        segments = batch["segments"]
        b = segments.shape[0]
        flat = {"inputs": segments.flatten(0, 1), "lengths": batch["segment_lengths"].flatten()}
        layers, frames = self.encode(flat["inputs"], flat)
        pooled = masked_mean(layers[-1], frames).view(b, 2, -1)
        return self.classifier(pair_features(pooled[:, 0], pooled[:, 1]))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # the online probe reads whole utterances
            layers, frames = self.encode(batch["inputs"], batch)
        self.remember(layers[-1], frames, batch["labels"])
        logits = self.gap_logits(batch)
        target = batch["gap_bucket"].flatten()
        loss = F.cross_entropy(logits.float(), target)
        return {"loss": loss, "gap_accuracy": (logits.argmax(-1) == target).float().mean(),
                "n_seconds": batch["n_seconds"]}
