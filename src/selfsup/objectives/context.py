"""Context prediction (Doersch, Gupta & Efros 2015, "Unsupervised Visual Representation Learning by Context
Prediction").

Predicts: where a second patch lies relative to the centre patch of a 3x3 grid (8 positions), from the
concatenated encoder features of both patches. Patches are separated by a gap and jittered (see
`selfsup.pretext.views.context_pair`) so that continuing edges or textures give no trivial cue. Each patch is
resized to the recipe's image size before the encoder, so the exported encoder works on whole images; the
position head is dropped after pretraining. The online probe sees centre-patch features.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.objectives.image_base import ImageObjective, mlp
from selfsup.pretext.views import context_geometry, context_pair
from selfsup.registry import register_objective


@register_objective("context")
class ContextPrediction(ImageObjective):
    @dataclasses.dataclass
    class Options:
        gap: int = bounded(2, ge=0, doc="pixels between neighbouring patches")
        jitter: int = bounded(1, ge=0, doc="random shift of each patch, in pixels either way")
        head_hidden: int = bounded(256, gt=0)

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        _, patch = context_geometry(recipe.data.image_size, recipe.objective.gap)
        if recipe.data.image_size // 3 - recipe.objective.gap < 2:
            raise SelfsupError(f"objective.gap: {recipe.objective.gap} leaves patches of {patch} pixel(s) in a "
                               f"{recipe.data.image_size}-pixel image; lower it or raise data.image_size")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        d = self.encoder.feature_dim
        self.head = mlp([2 * d, self.options.head_hidden, 8])

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        o = self.options
        pairs = [context_pair(image, rng, o.gap, o.jitter) for (image, _), rng in zip(examples, rngs)]
        return {"centre": torch.from_numpy(np.stack([p[0] for p in pairs])),
                "neighbour": torch.from_numpy(np.stack([p[1] for p in pairs])),
                "position": torch.tensor([p[2] for p in pairs], dtype=torch.long),
                "labels": torch.tensor([label for _, label in examples], dtype=torch.long),
                "n_images": torch.tensor(len(examples))}

    def _patch_input(self, patches: torch.Tensor) -> torch.Tensor:
        size = self.data_info["image_size"]
        x = F.interpolate(self.to_unit(patches), size=(size, size), mode="bilinear", align_corners=False)
        return self.normalize(x)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = batch["centre"].shape[0]
        h = self.encoder(torch.cat([self._patch_input(batch["centre"]), self._patch_input(batch["neighbour"])]))
        logits = self.head(torch.cat([h[:n], h[n:]], dim=1))
        loss = F.cross_entropy(logits.float(), batch["position"])
        self.remember(h[:n], batch["labels"])
        accuracy = (logits.argmax(-1) == batch["position"]).float().mean().detach()
        return {"loss": loss, "position_accuracy": accuracy, "n_images": batch["n_images"]}
