"""Auto-encoder (Rumelhart, Hinton & Williams 1986, "Learning representations by back-propagating errors";
Hinton & Salakhutdinov 2006, "Reducing the Dimensionality of Data with Neural Networks").

Predicts: every feature of a table row (every pixel of an image, every value of a window of log-mel frames)
from the row itself, through a narrow MLP or convolutional bottleneck (mean squared error on the standardized
features). The bottleneck is the representation; the per-row reconstruction error
is the anomaly score (rows unlike the training data reconstruct badly).
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.objectives.autoencoder_base import TableObjective, row_error
from selfsup.registry import register_objective


@register_objective("autoencoder")
class AutoEncoder(TableObjective):

    @dataclasses.dataclass
    class Options:
        pass

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        loss = row_error(self.reconstruct(x), x).mean()
        return {"loss": loss, "n_rows": batch["n_rows"]}
