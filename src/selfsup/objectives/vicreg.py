"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning").

Predicts: each view's embedding from the other's (invariance: mean squared error), while a hinge keeps every
embedding dimension's standard deviation above 1 (variance) and the off-diagonal covariances are pushed to 0
(covariance); the paper's weights 25, 25, 1. The expander (projector) is dropped after pretraining.
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.config import bounded
from selfsup.losses import vicreg_loss
from selfsup.objectives.image_base import TwoViewObjective, mlp
from selfsup.pretext.views import ViewConfig
from selfsup.registry import register_objective


@register_objective("vicreg")
class VICReg(TwoViewObjective):
    @dataclasses.dataclass
    class Options:
        sim_weight: float = bounded(25.0, ge=0, doc="lambda (invariance)")
        var_weight: float = bounded(25.0, ge=0, doc="mu (variance)")
        cov_weight: float = bounded(1.0, ge=0, doc="nu (covariance)")
        projection_dim: int = bounded(256, gt=0)
        projection_hidden: int = bounded(256, gt=0)
        views: ViewConfig = dataclasses.field(default_factory=ViewConfig)

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.projector = mlp([self.encoder.feature_dim, o.projection_hidden, o.projection_hidden, o.projection_dim])

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.options
        return vicreg_loss(z1, z2, o.sim_weight, o.var_weight, o.cov_weight)
