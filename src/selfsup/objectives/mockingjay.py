"""Mockingjay (Liu, Yang, Chi, Hsu & Lee 2020, "Mockingjay: Unsupervised Speech Representation Learning with
Deep Bidirectional Transformer Encoders").

Predicts: the original log-mel frames of masked spans (7 consecutive frames, 15% of the utterance; zeroed,
swapped with another span or kept) from the whole corrupted utterance, through a bidirectional transformer
and a small prediction head, with an L1 loss on the chosen frames only. The head is dropped after pretraining.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from selfsup.config import bounded
from selfsup.objectives.speech_base import SpeechObjective
from selfsup.objectives.speech_reconstruction import masked_l1, reconstruction_head
from selfsup.pretext.speech_masking import mockingjay_corrupt
from selfsup.registry import register_objective


@register_objective("mockingjay")
class Mockingjay(SpeechObjective):
    inputs = ("logmel",)

    @dataclasses.dataclass
    class Options:
        mask_prob: float = bounded(0.15, gt=0, lt=1, doc="fraction of frames chosen for prediction")
        mask_span: int = bounded(7, gt=0, doc="consecutive frames per chosen span")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        self.head = reconstruction_head(self.encoder.feature_dim, prepared.extras["audio"].dims)

    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        corrupted, chosen = mockingjay_corrupt(clip, rng, self.options.mask_prob, self.options.mask_span, valid)
        return {"corrupted": corrupted, "chosen": chosen}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        layers, frames = self.encode(batch["corrupted"], batch)
        self.remember(layers[-1], frames, batch["labels"])
        chosen = batch["chosen"] & frames
        loss = masked_l1(self.head(layers[-1]), batch["inputs"], chosen)
        return {"loss": loss, "masked_fraction": chosen.sum() / frames.sum().clamp_min(1),
                "n_seconds": batch["n_seconds"]}
