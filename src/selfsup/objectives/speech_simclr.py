"""Speech SimCLR (Jiang, Li, Cao, Zou & Li 2020, "Speech SimCLR: Combining Contrastive and Reconstruction
Objective for Self-supervised Speech Representation Learning").

Predicts: which of the 2B pooled, projected views in the batch is the other view of the same clip (NT-Xent,
SimCLR's contrastive loss) — views are random crops + speed changes, gain, noise and SpecAugment time /
frequency masks of the log-mel frames — plus, weighted by `reconstruction_weight`, the clean frames of each
view's crop (before gain, noise and masks) from the encoder's frame outputs through a small head (L1 over
real frames). `reconstruction_weight: 0` is contrastive learning alone. Projector and head are dropped after
pretraining.
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.config import bounded
from selfsup.losses import nt_xent
from selfsup.objectives.image_base import mlp
from selfsup.objectives.speech_reconstruction import masked_l1, reconstruction_head
from selfsup.objectives.speech_two_view import TwoViewSpeechObjective
from selfsup.pretext.audio_views import AudioViewConfig
from selfsup.registry import register_objective


@register_objective("speech_simclr")
class SpeechSimCLR(TwoViewSpeechObjective):
    @dataclasses.dataclass
    class Options:
        temperature: float = bounded(0.2, gt=0, doc="NT-Xent temperature")
        reconstruction_weight: float = bounded(1.0, ge=0, doc="weight of the clean-frame L1 term (0 = off)")
        projection_dim: int = bounded(128, gt=0)
        projection_hidden: int = bounded(256, gt=0)
        views: AudioViewConfig = dataclasses.field(default_factory=AudioViewConfig)

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.keep_clean = o.reconstruction_weight > 0
        self.projector = mlp([self.encoder.feature_dim, o.projection_hidden, o.projection_dim])
        self.head = reconstruction_head(self.encoder.feature_dim, prepared.extras["audio"].dims) \
            if self.keep_clean else None

    def pair_loss(self, z1, z2, batch, views) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.options
        contrastive = nt_xent(z1, z2, o.temperature)
        metrics = {"contrastive_loss": contrastive.detach()}
        loss = contrastive
        if self.head is not None:
            reconstruction = sum(masked_l1(self.head(h), batch[f"clean{k}"], frames)
                                 for k, (h, frames) in enumerate(views, start=1)) / 2
            metrics["reconstruction_loss"] = reconstruction.detach()
            loss = loss + o.reconstruction_weight * reconstruction
        with torch.no_grad():  # how often a view's nearest neighbour among the other 2B - 2 is its positive
            z = torch.nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
            sim = (z @ z.t()).fill_diagonal_(float("-inf"))
            n = z1.shape[0]
            positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
            metrics["positive_top1"] = (sim.argmax(1) == positive).float().mean()
        return loss, metrics
