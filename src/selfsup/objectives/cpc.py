"""CPC, contrastive predictive coding (van den Oord, Li & Vinyals 2018, "Representation Learning with
Contrastive Predictive Coding"), on log-mel frames.

Predicts: the future latent z_{t+k}, k = 1..K, from the context c_t, by telling it apart from other latents.
z_t is the causal GRU backbone's layer 0 (its input projection of frame t), c_t its last layer (the GRU
context of frames <= t); a linear W_k per step gives the prediction W_k c_t, scored against candidates by the
log-bilinear f_k = exp(z^T W_k c_t) with the InfoNCE loss (eq. 4), averaged over k. The candidates of a
prediction are the targets of every anchor drawn in the batch (other times of the same utterance and other
utterances), each utterance contributing up to `anchors_per_utterance` anchors per step, drawn in `pretext`.
The paper's encoder is a strided CNN over the waveform; here the frames are 10 ms log-mel, as in the paper's
100 Hz latents. The W_k are dropped after pretraining.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.losses import info_nce
from selfsup.objectives.speech_base import SpeechObjective
from selfsup.registry import register_objective


def draw_anchors(valid: int, steps: int, per_utterance: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, per_utterance) int: for step k (row k - 1) distinct times t with t + k < valid, -1 padding."""
    anchors = np.full((steps, per_utterance), -1, dtype=np.int64)
    for k in range(1, steps + 1):
        usable = valid - k
        if usable > 0:
            n = min(per_utterance, usable)
            anchors[k - 1, :n] = np.sort(rng.choice(usable, size=n, replace=False))
    return anchors


@register_objective("cpc")
class CPC(SpeechObjective):
    inputs = ("logmel",)
    default_backbone = "gru"

    @dataclasses.dataclass
    class Options:
        prediction_steps: int = bounded(12, ge=1, doc="K: predict z_{t+1} .. z_{t+K} (the paper's 12)")
        anchors_per_utterance: int = bounded(16, ge=1, doc="times t per utterance and step scored per batch")
        temperature: float = bounded(1.0, gt=0, doc="divides the scores z^T W_k c_t (1 = the paper's)")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        if recipe.model.type != "gru":
            raise SelfsupError(f"model.type: cpc needs a causal backbone (gru), got {recipe.model.type!r}")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        d = self.encoder.feature_dim
        self.predictors = torch.nn.ModuleList(torch.nn.Linear(d, d, bias=False)
                                              for _ in range(self.options.prediction_steps))

    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        o = self.options
        return {"anchors": draw_anchors(valid, o.prediction_steps, o.anchors_per_utterance, rng)}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        layers, frames = self.encode(batch["inputs"], batch)
        self.remember(layers[-1], frames, batch["labels"])
        latents, context = layers[0], layers[-1]
        losses, accuracies = [], []
        for k, predictor in enumerate(self.predictors, start=1):
            anchors = batch["anchors"][:, k - 1]  # (B, P)
            rows, slots = torch.nonzero(anchors >= 0, as_tuple=True)
            if len(rows) < 2:
                continue
            times = anchors[rows, slots]
            loss, accuracy = info_nce(predictor(context[rows, times]), latents[rows, times + k],
                                      self.options.temperature)
            losses.append(loss)
            accuracies.append(accuracy)
        if not losses:
            raise SelfsupError("objective.prediction_steps: the clips are too short to predict even 1 frame ahead")
        return {"loss": torch.stack(losses).mean(), "contrastive_accuracy": torch.stack(accuracies).mean(),
                "step1_accuracy": accuracies[0], "n_seconds": batch["n_seconds"]}
