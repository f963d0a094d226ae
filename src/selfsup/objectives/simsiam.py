"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

Predicts: one view's projection z from the other view's predictor output p, maximizing cos(p, z) with a
stop-gradient on z (symmetrized); no negatives and no momentum encoder — the stop-gradient alone prevents
collapse (watch `feature_std` in the logs). Projector (BN on its output) and predictor are dropped after
pretraining.
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.config import bounded
from selfsup.losses import negative_cosine
from selfsup.objectives.image_base import ImageObjective, mlp
from selfsup.pretext.views import ViewConfig
from selfsup.registry import register_objective


@register_objective("simsiam")
class SimSiam(ImageObjective):
    @dataclasses.dataclass
    class Options:
        projection_dim: int = bounded(128, gt=0)
        predictor_hidden: int = bounded(32, gt=0, doc="bottleneck width (the paper: projection_dim / 4)")
        views: ViewConfig = dataclasses.field(default_factory=ViewConfig)

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        d = self.encoder.feature_dim
        self.projector = mlp([d, o.projection_dim, o.projection_dim, o.projection_dim], last_bn=True)
        self.predictor = mlp([o.projection_dim, o.predictor_hidden, o.projection_dim])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x1, x2 = self.two_views(batch["images"])
        h1, h2 = self.encoder(x1), self.encoder(x2)
        z1, z2 = self.projector(h1), self.projector(h2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        self.remember(h1, batch["labels"])
        loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2
        z_std = torch.nn.functional.normalize(z1.detach().float(), dim=1).std(0).mean()
        return {"loss": loss, "projection_std": z_std, "n_images": batch["n_images"]}
