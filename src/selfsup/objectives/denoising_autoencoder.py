"""Denoising auto-encoder (Vincent, Larochelle, Bengio & Manzagol 2008, "Extracting and Composing Robust
Features with Denoising Autoencoders"; Vincent et al. 2010, "Stacked Denoising Autoencoders").

Predicts: the clean table row (image, window of log-mel frames) from a corrupted copy — additive Gaussian
noise, masking noise (features set to the training mean, 0 after standardization) or salt-and-pepper noise
(features set to their training minimum or maximum; element-wise on images and frames), drawn per row by
`selfsup.pretext.table_noise` — through the bottleneck, with the mean
squared error over all features. At scoring time the input is not corrupted: the score is the clean row's
reconstruction error.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch

from selfsup.config import bounded
from selfsup.objectives.autoencoder_base import TableObjective, row_error
from selfsup.pretext.table_noise import corrupt
from selfsup.registry import register_objective


@register_objective("denoising_autoencoder")
class DenoisingAutoEncoder(TableObjective):

    @dataclasses.dataclass
    class Options:
        noise: Literal["gaussian", "masking", "salt_and_pepper"] = "masking"
        level: float = bounded(0.2, gt=0, doc="gaussian: std; masking / salt_and_pepper: fraction of features")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        extras = prepared.extras
        zeros = np.zeros(self.shape, dtype=np.float32)
        # training minimum / maximum per feature (salt-and-pepper's values); saved, so a reload keeps them
        self.register_buffer("feature_low", torch.tensor(np.asarray(extras.get("low", zeros), np.float32)))
        self.register_buffer("feature_high", torch.tensor(np.asarray(extras.get("high", zeros), np.float32)))
        self._low, self._high = self.feature_low.numpy().copy(), self.feature_high.numpy().copy()

    def pretext(self, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        o = self.options
        noisy, mask = corrupt(x, rng, o.noise, o.level, self._low, self._high)
        return {"corrupted": noisy.astype(np.float32), "noise_mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        loss = row_error(self.decoder(self.encoder(batch["corrupted"])), x).mean()
        return {"loss": loss, "corrupted_fraction": batch["noise_mask"].float().mean(), "n_rows": batch["n_rows"]}
