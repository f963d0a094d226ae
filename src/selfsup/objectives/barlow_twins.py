"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction").

Predicts: nothing explicit — the cross-correlation matrix between the batch-standardized projections of two
views is driven to the identity: diagonal to 1 (invariance), off-diagonal to 0 weighted by lambda
(redundancy reduction). The projector is dropped after pretraining.
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.config import bounded
from selfsup.losses import barlow_twins_loss, cross_correlation
from selfsup.objectives.image_base import TwoViewObjective, mlp
from selfsup.pretext.views import ViewConfig
from selfsup.registry import register_objective


@register_objective("barlow_twins")
class BarlowTwins(TwoViewObjective):
    @dataclasses.dataclass
    class Options:
        lambd: float = bounded(0.0051, ge=0, doc="weight of the off-diagonal (redundancy) term")
        projection_dim: int = bounded(256, gt=0)
        projection_hidden: int = bounded(256, gt=0)
        views: ViewConfig = dataclasses.field(default_factory=ViewConfig)

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.projector = mlp([self.encoder.feature_dim, o.projection_hidden, o.projection_dim])

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = barlow_twins_loss(z1, z2, self.options.lambd)
        with torch.no_grad():
            diag = torch.diagonal(cross_correlation(z1, z2)).mean()
        return loss, {"mean_diagonal": diag}
