"""DeepCluster (Caron, Bojanowski, Joulin & Douze 2018, "Deep Clustering for Unsupervised Learning of
Visual Features").

Predicts: each image's k-means cluster (a pseudo-label) from the encoder's features of an augmented view.
At the start of every epoch the features of all training images (no augmentation) are PCA-whitened,
L2-normalized and clustered with k-means; the classifier head is re-initialized; an empty cluster takes the
centroid of a random non-empty one plus a small perturbation and the two split its points (the paper's fix);
the loss weights each image by 1 / its cluster's size (the paper samples uniformly over clusters), a weighted
mean over the global batch under data parallelism.
Held-out images are scored against their nearest centroid of the last clustering.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import bounded
from selfsup.distributed import all_reduce_sum, world_size
from selfsup.objectives.base import Prepared
from selfsup.objectives.image_base import ImageObjective
from selfsup.pretext.views import ViewConfig
from selfsup.registry import register_objective


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd's k-means on rows of x; returns (assignments, centroids, number of empty clusters re-seeded)."""
    n = x.shape[0]
    centroids = x[torch.randperm(n, generator=generator)[:k]].clone()
    reseeded = 0
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        full = counts > 0
        centroids[full] = sums[full] / counts[full, None].to(x.dtype)
        for empty in torch.nonzero(~full).flatten().tolist():  # split a non-empty cluster in two
            donors = torch.nonzero(counts > 1).flatten()
            if not len(donors):
                break
            donor = int(donors[torch.randint(len(donors), (1,), generator=generator)])
            noise = 1e-4 * torch.randn(centroids.shape[1], generator=generator).to(x)
            centroids[empty], centroids[donor] = centroids[donor] + noise, centroids[donor] - noise
            counts[empty] = 1
            reseeded += 1
    return torch.cdist(x, centroids).argmin(1), centroids, reseeded


class Indexed:
    """Training examples as (image, label, index): the index finds the pseudo-label."""

    def __init__(self, examples):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        image, label = self.examples[i]
        return image, label, i


@register_objective("deepcluster")
class DeepCluster(ImageObjective):
    @dataclasses.dataclass
    class Options:
        clusters: int = bounded(100, ge=2, doc="k of k-means (the paper uses ~10x the number of classes)")
        pca_dim: int = bounded(64, gt=0, doc="PCA-whitening dimension before k-means")
        kmeans_iters: int = bounded(20, gt=0)
        views: ViewConfig = dataclasses.field(default_factory=lambda: ViewConfig(  # the paper: crop + flip only
            crop_scale_min=0.4, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0))

    @classmethod
    def prepare(cls, recipe, sources: list[str]) -> Prepared:
        p = super().prepare(recipe, sources)
        return Prepared(Indexed(p.train), p.heldout, p.extras)

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        n = len(prepared.train)
        self.examples = prepared.train
        self.steps_per_epoch = max(1, n // recipe.train.batch_size)
        self.head = torch.nn.Linear(self.encoder.feature_dim, self.options.clusters)
        self.register_buffer("pseudo_labels", torch.full((n,), -1, dtype=torch.long))
        self.register_buffer("cluster_weight", torch.ones(self.options.clusters))
        self.register_buffer("pca_mean", torch.zeros(self.encoder.feature_dim))
        self.register_buffer("pca_proj", torch.zeros(self.encoder.feature_dim, self.options.pca_dim))
        self.register_buffer("centroids", torch.zeros(self.options.clusters, self.options.pca_dim))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("clustered_epoch", torch.full((), -1, dtype=torch.long))
        self.reseeded = 0

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        batch = super().make_batch([e[:2] for e in examples], rngs)
        batch["index"] = torch.tensor([e[2] if len(e) > 2 else -1 for e in examples], dtype=torch.long)
        return batch

    @torch.no_grad()
    def recluster(self) -> None:
        was_training = self.training
        self.eval()
        feats = []
        for i in range(0, len(self.examples), 256):
            imgs = np.stack([self.examples[j][0] for j in range(i, min(i + 256, len(self.examples)))])
            x = torch.from_numpy(imgs).to(self.pixel_mean.device)
            feats.append(self.encoder(self.normalize(self.to_unit(x))).float())
        self.train(was_training)
        x = torch.cat(feats)
        mean = x.mean(0)
        _, s, v = torch.linalg.svd(x - mean, full_matrices=False)  # PCA whitening
        d = min(self.options.pca_dim, int((s > 1e-6 * s[0]).sum()) or 1)
        proj = torch.zeros_like(self.pca_proj)
        proj[:, :d] = v[:d].t() / (s[:d] / (len(x) - 1) ** 0.5)
        self.pca_mean.copy_(mean)
        self.pca_proj.copy_(proj)
        gen = torch.Generator().manual_seed(self.recipe.train.seed * 1_000 + int(self.epoch))
        assign, centroids, self.reseeded = kmeans(self.whiten(x).cpu(), self.options.clusters,
                                                  self.options.kmeans_iters, gen)
        self.centroids.copy_(centroids.to(self.centroids.device))
        self.pseudo_labels.copy_(assign.to(self.pseudo_labels.device))
        counts = torch.bincount(assign, minlength=self.options.clusters).float().clamp(min=1)
        self.cluster_weight.copy_((len(assign) / (self.options.clusters * counts)).to(self.cluster_weight.device))
        torch.nn.init.normal_(self.head.weight, std=0.01, generator=gen)  # a fresh classifier per clustering
        torch.nn.init.zeros_(self.head.bias)
        self.clustered_epoch.fill_(int(self.epoch))

    def whiten(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize((h.float() - self.pca_mean) @ self.pca_proj, dim=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.training and int(self.clustered_epoch) != int(self.epoch):
            self.recluster()
        x1 = self.views(batch["images"], 1)[0] if self.training else self.normalize(self.to_unit(batch["images"]))
        h = self.encoder(x1)
        logits = self.head(h)
        self.remember(h, batch["labels"])
        index = batch["index"]
        if (index < 0).any():  # held-out images: their nearest centroid of the last clustering
            targets = torch.cdist(self.whiten(h.detach()), self.centroids).argmin(1)
        else:
            targets = self.pseudo_labels[index]
        # the weighted mean over the global batch: normalized by every rank's weights (the mean over ranks)
        weight = self.cluster_weight[targets]
        per_image = F.cross_entropy(logits.float(), targets, reduction="none")
        loss = (weight * per_image).sum() / (all_reduce_sum(weight.sum()) / world_size())
        used = torch.tensor(float(torch.unique(self.pseudo_labels).numel()), device=h.device)
        return {"loss": loss, "clusters_used": used, "n_images": batch["n_images"]}

    def on_step_end(self, step: int, max_steps: int) -> None:
        self.epoch.fill_((step + 1) // self.steps_per_epoch)
