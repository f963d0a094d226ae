"""DeLoRes (Ghosh, Seth, Umesh & Manocha 2022, "DeLoRes: Decorrelating Latent Spaces for Low-Resource Audio
Representation Learning").

Predicts: nothing explicit — two augmented views of a clip (random crop + stretch, gain, noise, SpecAugment
masks, optional mixup with another clip) go through the same encoder, are mean-pooled over real frames and
projected; the Barlow Twins loss drives the cross-correlation of the two batch-standardized projections to
the identity (`regularizer: barlow`), or VICReg's variance-invariance-covariance terms are used instead
(`regularizer: vicreg`, the redundancy-reduction variant of the same framework). The projector is dropped
after pretraining.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from selfsup.config import bounded
from selfsup.losses import barlow_twins_loss, cross_correlation, vicreg_loss
from selfsup.objectives.image_base import mlp
from selfsup.objectives.speech_two_view import TwoViewSpeechObjective
from selfsup.pretext.audio_views import AudioViewConfig
from selfsup.registry import register_objective


@register_objective("delores")
class DeLoRes(TwoViewSpeechObjective):
    @dataclasses.dataclass
    class Options:
        regularizer: Literal["barlow", "vicreg"] = "barlow"
        lambd: float = bounded(0.0051, ge=0, doc="barlow: weight of the off-diagonal (redundancy) term")
        sim_weight: float = bounded(25.0, ge=0, doc="vicreg: invariance weight")
        var_weight: float = bounded(25.0, ge=0, doc="vicreg: variance weight")
        cov_weight: float = bounded(1.0, ge=0, doc="vicreg: covariance weight")
        projection_dim: int = bounded(256, gt=0)
        projection_hidden: int = bounded(256, gt=0)
        views: AudioViewConfig = dataclasses.field(default_factory=AudioViewConfig)

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.projector = mlp([self.encoder.feature_dim, o.projection_hidden, o.projection_dim])

    def pair_loss(self, z1, z2, batch, views) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.options
        if o.regularizer == "vicreg":
            return vicreg_loss(z1, z2, o.sim_weight, o.var_weight, o.cov_weight)
        loss = barlow_twins_loss(z1, z2, o.lambd)
        with torch.no_grad():
            diag = torch.diagonal(cross_correlation(z1, z2)).mean()
        return loss, {"mean_diagonal": diag}
