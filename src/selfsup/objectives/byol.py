"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning").

Predicts: the target network's projection of one view from the online network's prediction of the other
view (2 - 2 cos, both directions). The target (encoder + projector) is not trained by gradients but is an
exponential moving average of the online weights, with the momentum rising from `momentum` to 1 on BYOL's
cosine schedule; the predictor and projector are dropped after pretraining.
"""
from __future__ import annotations

import copy
import dataclasses

import torch

from selfsup.config import bounded
from selfsup.losses import byol_loss, cosine_momentum, ema_update
from selfsup.objectives.image_base import ImageObjective, mlp
from selfsup.pretext.views import ViewConfig
from selfsup.registry import register_objective


@register_objective("byol")
class BYOL(ImageObjective):
    @dataclasses.dataclass
    class Options:
        momentum: float = bounded(0.99, ge=0, lt=1, doc="base EMA rate tau_base (cosine schedule to 1)")
        projection_dim: int = bounded(64, gt=0)
        projection_hidden: int = bounded(256, gt=0)
        predictor_hidden: int = bounded(256, gt=0)
        views: ViewConfig = dataclasses.field(default_factory=ViewConfig)

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.projector = mlp([self.encoder.feature_dim, o.projection_hidden, o.projection_dim])
        self.predictor = mlp([o.projection_dim, o.predictor_hidden, o.projection_dim])
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.tau = o.momentum

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x1, x2 = self.two_views(batch["images"])
        h1 = self.encoder(x1)
        p1 = self.predictor(self.projector(h1))
        p2 = self.predictor(self.projector(self.encoder(x2)))
        with torch.no_grad():
            t1 = self.target_projector(self.target_encoder(x1))
            t2 = self.target_projector(self.target_encoder(x2))
        self.remember(h1, batch["labels"])
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        return {"loss": loss, "momentum": torch.tensor(self.tau), "n_images": batch["n_images"]}

    def on_step_end(self, step: int, max_steps: int) -> None:
        self.tau = cosine_momentum(self.options.momentum, step, max_steps)
        ema_update(self.target_encoder, self.encoder, self.tau)
        ema_update(self.target_projector, self.projector, self.tau)
