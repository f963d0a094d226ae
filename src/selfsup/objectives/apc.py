"""APC, autoregressive predictive coding (Chung, Hsu, Tang & Glass 2019, "An Unsupervised Autoregressive Model
for Speech Representation Learning").

Predicts: the log-mel frame n steps ahead, x_{t+n}, from frames x_1..x_t, through a causal (unidirectional
GRU) encoder and a linear head, with an L1 loss summed over every t whose target is a real frame (n = 3 is
the paper's best for phone classification). Nothing is masked: predicting the not-yet-seen frame is the task,
so `model.type` must be causal (`gru`). The head is dropped after pretraining.
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.objectives.speech_base import SpeechObjective
from selfsup.objectives.speech_reconstruction import masked_l1
from selfsup.registry import register_objective


def future_l1(predictions: torch.Tensor, frames: torch.Tensor, real: torch.Tensor, steps: int) -> torch.Tensor:
    """APC's loss: mean |x_{t+n} - y_t| over the values of every t whose target frame t+n is real ((B, T) mask)."""
    return masked_l1(predictions[:, :-steps], frames[:, steps:], real[:, steps:])


@register_objective("apc")
class APC(SpeechObjective):
    inputs = ("logmel",)
    default_backbone = "gru"

    @dataclasses.dataclass
    class Options:
        prediction_steps: int = bounded(3, ge=1, doc="n: how many frames ahead the target is")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        if recipe.model.type != "gru":
            raise SelfsupError(f"model.type: apc needs a causal backbone (gru), got {recipe.model.type!r}")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        self.head = torch.nn.Linear(self.encoder.feature_dim, prepared.extras["audio"].dims)

    def predictions(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(y_t for every t: (B, T, F), the encoder's layers, the real-frame mask)."""
        layers, frames = self.encode(batch["inputs"], batch)
        return self.head(layers[-1]), layers, frames

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        predicted, layers, frames = self.predictions(batch)
        self.remember(layers[-1], frames, batch["labels"])
        steps = self.options.prediction_steps
        if frames.shape[1] <= steps:
            raise SelfsupError(f"objective.prediction_steps: {steps} frames ahead, but the clips hold only "
                               f"{frames.shape[1]} frames (lower it or raise data.crop_seconds)")
        loss = future_l1(predicted, batch["inputs"], frames, steps)
        copy_last = future_l1(batch["inputs"], batch["inputs"], frames, steps)  # baseline: y_t = x_t
        return {"loss": loss, "copy_baseline_l1": copy_last.detach(), "n_seconds": batch["n_seconds"]}
