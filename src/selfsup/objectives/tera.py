"""TERA (Liu, Li & Lee 2021, "TERA: Self-Supervised Learning of Transformer Encoder Representation for Speech").

Predicts: the original log-mel frames from a copy altered along three axes — time (Mockingjay's spans: 7
consecutive frames, 15% of the utterance, zeroed / swapped / kept), frequency (one block of consecutive
channels, width uniform in [0, max_channels], zeroed for the whole utterance) and magnitude (Gaussian noise
added with probability noise_prob) — through a bidirectional transformer and a small prediction head, with an
L1 loss on the altered values only: every value of the time-altered frames and of the zeroed channels. The
head is dropped after pretraining.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from selfsup.config import bounded
from selfsup.objectives.speech_base import SpeechObjective
from selfsup.objectives.speech_reconstruction import masked_l1, reconstruction_head
from selfsup.pretext.speech_masking import tera_corrupt
from selfsup.registry import register_objective


@register_objective("tera")
class Tera(SpeechObjective):
    inputs = ("logmel",)

    @dataclasses.dataclass
    class Options:
        mask_prob: float = bounded(0.15, gt=0, lt=1, doc="time alteration: fraction of frames chosen")
        mask_span: int = bounded(7, gt=0, doc="time alteration: consecutive frames per chosen span")
        max_channels: int = bounded(16, ge=0, doc="frequency alteration: widest block of zeroed channels")
        noise_prob: float = bounded(0.1, ge=0, le=1, doc="magnitude alteration: chance of noise per utterance")
        noise_std: float = bounded(0.2, ge=0, doc="magnitude alteration: std of the added Gaussian noise")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        self.head = reconstruction_head(self.encoder.feature_dim, prepared.extras["audio"].dims)

    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        o = self.options
        corrupted, chosen, channels = tera_corrupt(clip, rng, o.mask_prob, o.mask_span, o.max_channels,
                                                   o.noise_prob, o.noise_std, valid)
        return {"corrupted": corrupted, "chosen": chosen, "channels": channels}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        layers, frames = self.encode(batch["corrupted"], batch)
        self.remember(layers[-1], frames, batch["labels"])
        altered = (batch["chosen"][:, :, None] | batch["channels"][:, None, :]) & frames[:, :, None]
        loss = masked_l1(self.head(layers[-1]), batch["inputs"], altered)
        real = frames.sum().clamp_min(1)
        return {"loss": loss, "masked_fraction": (batch["chosen"] & frames).sum() / real,
                "altered_fraction": altered.sum() / (real * altered.shape[-1]), "n_seconds": batch["n_seconds"]}
