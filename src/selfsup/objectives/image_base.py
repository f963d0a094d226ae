"""Shared plumbing of the image objectives: cached images, the encoder, normalization, two augmented views,
MLP heads, the online probe, and the HF export.

A batch is `{"images": (B, C, S, S) uint8, "labels": (B,) long (-1 = unknown), "n_images"}`; floats, views
and normalization happen in `forward`, on the model's device. Training views draw their augmentation
parameters for the global micro-batch (the engine passes its index to `on_micro_step`) and apply this rank's
rows, so they do not depend on how the batch is split across processes (`selfsup.pretext.views`). Held-out
batches draw their views from a generator seeded by the batch content, so the held-out loss is the same for
every run and step.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
from typing import Any, Iterator

import numpy as np
import torch

from selfsup.backbones.vision import build_vision_encoder
from selfsup.data.images import ImageDataConfig, ImageExamples, ImageSet, load_images
from selfsup.distributed import gather, rank, world_size
from selfsup.objectives.base import Objective, Prepared, split_indices
from selfsup.pretext.views import (ViewConfig, apply_view_params, draw_view_params, simclr_pipeline,
                                   slice_view_params, view_seed)


def mlp(dims: list[int], batch_norm: bool = True, last_bn: bool = False) -> torch.nn.Sequential:
    """Linear layers of widths dims[0] -> ... -> dims[-1], BN + ReLU between (SimCLR/BYOL-style heads)."""
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(torch.nn.Linear(a, b, bias=not (batch_norm and (not last or last_bn))))
        if not last:
            if batch_norm:
                layers.append(torch.nn.BatchNorm1d(b))
            layers.append(torch.nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(torch.nn.BatchNorm1d(b, affine=False))
    return torch.nn.Sequential(*layers)


@contextlib.contextmanager
def eval_seeded(images: torch.Tensor, training: bool, seed: int) -> Iterator[None]:
    """Outside training, draw torch randomness from a generator seeded by the batch content."""
    if training:
        yield
        return
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed * 7_919 + int(images[:, :, ::3, ::3].sum().item()))
        yield


class ImageObjective(Objective):
    modality = "image"
    default_backbone = "resnet"
    count_key = "n_images"

    @dataclasses.dataclass
    class Options:
        views: ViewConfig = dataclasses.field(default_factory=ViewConfig)

    @classmethod
    def data_config_class(cls) -> type:
        return ImageDataConfig

    @classmethod
    def check_recipe(cls, recipe) -> None:
        from selfsup.backbones.vision import check_image_size

        check_image_size(recipe.model, recipe.data.image_size)

    @classmethod
    def prepare(cls, recipe, sources: list[str]) -> Prepared:
        data: ImageSet = load_images(sources, recipe.data)
        train, held = split_indices(len(data.images), recipe.data.holdout_fraction, recipe.train.seed, "image")
        return Prepared(ImageExamples(data, train), ImageExamples(data, held), {"images": data})

    def __init__(self, recipe, prepared: Prepared):
        super().__init__(recipe, prepared)
        data: ImageSet = prepared.extras["images"]
        self.data_info = {"image_size": data.size, "channels": data.channels, "mean": data.mean, "std": data.std}
        self.num_classes = data.num_classes if data.has_labels else 0
        self.encoder = build_vision_encoder(recipe.model, data.channels, data.size)
        self.register_buffer("pixel_mean", torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        views = getattr(self.options, "views", None)
        self.augment = simclr_pipeline(data.size, data.channels, views) if views is not None else None
        self.micro_step: int | None = None

    def on_micro_step(self, micro_step: int) -> None:
        self.micro_step = micro_step

    # ---- batches and views ----
    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        images = np.stack([e[0] for e in examples])
        return {"images": torch.from_numpy(images), "labels": torch.tensor([e[1] for e in examples], dtype=torch.long),
                "n_images": torch.tensor(len(examples))}

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pixel_mean) / self.pixel_std

    def split_invariant(self) -> bool:
        """Training with a known micro step: views are drawn for the global micro-batch."""
        return self.training and self.micro_step is not None

    def global_view(self, pipeline: torch.nn.Sequential, x: torch.Tensor, view: int) -> torch.Tensor:
        """`pipeline` on this rank's x with this rank's rows of the parameters drawn for the whole global
        micro-batch (seed, micro step, view): what one process with the same global batch computes."""
        b = x.shape[0]
        params = draw_view_params(pipeline, (b * world_size(), *x.shape[1:]),
                                  view_seed(self.recipe.train.seed, int(self.micro_step), view), x.device)
        return apply_view_params(pipeline, x, slice_view_params(params, rank() * b, (rank() + 1) * b))

    def views(self, images: torch.Tensor, n: int) -> list[torch.Tensor]:
        """`n` independent augmentations of the batch, normalized for the encoder (view i is the same whatever n)."""
        x = self.to_unit(images)
        if self.split_invariant():
            out = [self.global_view(self.augment, x, i) for i in range(n)]
        else:
            with eval_seeded(images, self.training, self.recipe.train.seed):
                out = [self.augment(x) for _ in range(n)]
        return [self.normalize(v) for v in out]

    def two_views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent SimCLR augmentations of the batch, normalized for the encoder."""
        v1, v2 = self.views(images, 2)
        return v1, v2

    def remember(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Leave backbone features for the online probe and the collapse diagnostics."""
        self.probe_batch = (features.detach(), labels)

    def callbacks(self) -> list:
        from selfsup.objectives.probe import OnlineLinearProbe

        return [OnlineLinearProbe(self.encoder.feature_dim, self.num_classes)]

    def export(self, folder) -> None:
        self.encoder.export(folder, **self.data_info)


class TwoViewObjective(ImageObjective):
    """Joint-embedding methods: encoder -> projector on two views; subclasses give `pair_loss`, which sees the
    global batch's projections under data parallelism (gathered from every rank, differentiable), so a
    W-process run optimizes the single-process loss of the same global batch."""

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h, self.projector(h)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x1, x2 = self.two_views(batch["images"])
        h1, z1 = self.embed(x1)
        _, z2 = self.embed(x2)
        self.remember(h1, batch["labels"])
        loss, metrics = self.pair_loss(gather(z1), gather(z2))
        return {"loss": loss, **metrics, "n_images": batch["n_images"]}

    @abc.abstractmethod
    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's loss between the two views' embeddings, and its metrics."""
