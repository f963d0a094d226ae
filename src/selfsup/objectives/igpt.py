"""Image GPT (Chen, Radford, Child, Wu, Jun, Luan & Sutskever 2020, "Generative Pretraining from Pixels"),
scaled down.

Predicts: every pixel's colour cluster from the pixels before it in raster order (autoregressive next-pixel
prediction with a GPT-2 decoder). `prepare` fits a colour palette by k-means over the training images' pixel
values (iGPT: 512 RGB clusters; grey digits: ~16 intensities) and turns each image into its palette ids,
row by row; the model reads [start] + ids and is trained with the mean next-token cross-entropy. Logged:
`next_pixel_accuracy` and `bits_per_pixel` (the loss in bits). Features for probes (and the online probe):
a middle layer's hidden states, layer-normed and averaged over the pixel positions (iGPT's linear probe).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from selfsup.backbones.igpt import build_igpt_model, export_igpt, pooled_features
from selfsup.config import bounded
from selfsup.data.images import ImageDataConfig, ImageSet, load_images
from selfsup.objectives.base import Objective, Prepared
from selfsup.objectives.clm import next_token_loss
from selfsup.objectives.image_base import split_indices
from selfsup.pretext.pixel_tokens import fit_palette, images_to_tokens
from selfsup.registry import register_objective


class PixelTokens:
    """Examples: (palette ids of one image in raster order, label or -1) for a subset of the images."""

    def __init__(self, tokens: np.ndarray, labels: np.ndarray, indices: np.ndarray):
        self.tokens, self.labels, self.indices = tokens, labels, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        j = int(self.indices[i])
        return self.tokens[j], int(self.labels[j])


@register_objective("igpt")
class ImageGPT(Objective):
    modality = "image"
    default_backbone = "igpt"
    count_key = "n_images"

    @dataclasses.dataclass
    class Options:
        clusters: int = bounded(16, ge=2, doc="palette size: k of k-means over pixel values (iGPT: 512 RGB)")
        palette_pixels: int = bounded(200_000, gt=0, doc="k-means runs on at most this many sampled pixels")

    @classmethod
    def data_config_class(cls) -> type:
        return ImageDataConfig

    @classmethod
    def prepare(cls, recipe, sources: list[str]) -> Prepared:
        data: ImageSet = load_images(sources, recipe.data)
        train, held = split_indices(len(data.images), recipe.data.holdout_fraction, recipe.train.seed)
        o = recipe.objective
        palette = fit_palette(np.asarray(data.images[train]), o.clusters, recipe.train.seed, o.palette_pixels)
        tokens = images_to_tokens(data.images, palette).numpy().astype(np.int16 if len(palette) < 32_000 else np.int32)
        labels = np.asarray(data.labels)
        return Prepared(PixelTokens(tokens, labels, train), PixelTokens(tokens, labels, held),
                        {"images": data, "palette": palette})

    def __init__(self, recipe, prepared: Prepared):
        super().__init__(recipe, prepared)
        data: ImageSet = prepared.extras["images"]
        self.palette = prepared.extras["palette"]
        self.image_size, self.channels = data.size, data.channels
        self.num_classes = data.num_classes if data.has_labels else 0
        self.start_token = len(self.palette)
        self.model = build_igpt_model(recipe.model, len(self.palette), data.size * data.size)
        self.feature_layer = recipe.model.probe_layer
        self.probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        tokens = torch.from_numpy(np.stack([e[0] for e in examples]).astype(np.int64))
        start = torch.full((len(examples), 1), self.start_token, dtype=torch.long)
        return {"input_ids": torch.cat([start, tokens], dim=1),
                "labels": torch.tensor([e[1] for e in examples], dtype=torch.long),
                "n_images": torch.tensor(len(examples))}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"]
        out = self.model(input_ids=ids, output_hidden_states=True)
        loss = next_token_loss(out.logits, ids)  # position t (start, pixels < t) predicts pixel t
        accuracy = (out.logits[:, :-1].argmax(-1) == ids[:, 1:]).float().mean()
        self.probe_batch = (pooled_features(out.hidden_states[self.feature_layer]).detach(), batch["labels"])
        return {"loss": loss, "next_pixel_accuracy": accuracy.detach(), "bits_per_pixel": loss.detach() / math.log(2),
                "n_images": batch["n_images"]}

    def callbacks(self) -> list:
        from selfsup.objectives.probe import OnlineLinearProbe

        return [OnlineLinearProbe(self.model.config.n_embd, self.num_classes)]

    def export(self, folder) -> None:
        export_igpt(self.model, self.palette, folder, self.image_size, self.channels, self.feature_layer)
