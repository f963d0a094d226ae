"""SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive Learning of Visual
Representations").

Predicts: which of the other 2B - 1 augmented views in the batch comes from the same image as a given view,
from the cosine similarity of their projections (NT-Xent with a temperature); the projector is an MLP on the
backbone's pooled features and is dropped after pretraining.
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.config import bounded
from selfsup.losses import nt_xent
from selfsup.objectives.image_base import TwoViewObjective, mlp
from selfsup.pretext.views import ViewConfig
from selfsup.registry import register_objective


@register_objective("simclr")
class SimCLR(TwoViewObjective):
    @dataclasses.dataclass
    class Options:
        temperature: float = bounded(0.5, gt=0, doc="NT-Xent temperature")
        projection_dim: int = bounded(64, gt=0)
        projection_hidden: int = bounded(256, gt=0)
        views: ViewConfig = dataclasses.field(default_factory=ViewConfig)

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.projector = mlp([self.encoder.feature_dim, o.projection_hidden, o.projection_dim])

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = nt_xent(z1, z2, self.options.temperature)
        with torch.no_grad():  # how often the positive is the most similar of the 2B - 1 candidates
            z = torch.nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
            sim = (z @ z.t()).fill_diagonal_(-2)
            n = z1.shape[0]
            target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
            acc = (sim.argmax(1) == target).float().mean()
        return loss, {"contrastive_accuracy": acc}
