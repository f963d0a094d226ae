"""Rotation prediction (RotNet; Gidaris, Singh & Komodakis 2018, "Unsupervised Representation Learning by
Predicting Image Rotations").

Predicts: by how much (0, 90, 180 or 270 degrees) an image was rotated, from the encoder's features of the
rotated image; every image is shown in all four rotations in the same batch. The 4-way head is dropped after
pretraining.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from selfsup.config import bounded
from selfsup.objectives.image_base import ImageObjective, eval_seeded, mlp
from selfsup.pretext.views import rotations
from selfsup.registry import register_objective


@register_objective("rotation")
class RotationPrediction(ImageObjective):
    @dataclasses.dataclass
    class Options:
        head_hidden: int = bounded(0, ge=0, doc="hidden width of the rotation head; 0 = linear head")
        crop_pad: int = bounded(2, ge=0, doc="random translation by up to this many pixels (0 = none)")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        d, h = self.encoder.feature_dim, self.options.head_hidden
        self.head = mlp([d, h, 4]) if h else torch.nn.Linear(d, 4)
        self.shift = None
        if self.options.crop_pad:
            import kornia.augmentation as K

            pad, size = self.options.crop_pad, self.data_info["image_size"]
            self.shift = torch.nn.Sequential(K.RandomCrop((size, size), padding=pad, padding_mode="reflect"))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.to_unit(batch["images"])
        if self.shift is not None and self.split_invariant():
            x = self.global_view(self.shift, x, 0)
        elif self.shift is not None:
            with eval_seeded(batch["images"], self.training, self.recipe.train.seed):
                x = self.shift(x)
        rotated, labels = rotations(self.normalize(x))
        h = self.encoder(rotated)
        logits = self.head(h)
        loss = F.cross_entropy(logits.float(), labels)
        self.remember(h[: x.shape[0]], batch["labels"])  # the upright images
        accuracy = (logits.argmax(-1) == labels).float().mean().detach()
        return {"loss": loss, "rotation_accuracy": accuracy, "n_images": batch["n_images"]}
