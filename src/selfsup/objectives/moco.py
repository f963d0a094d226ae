"""MoCo v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning"; Chen et
al. 2020, "Improved Baselines with Momentum Contrastive Learning").

Predicts: which key is the momentum encoder's embedding of the other view of the same image, among that key
and a FIFO queue of keys from earlier batches (InfoNCE with a temperature). The query encoder + MLP head is
trained; the key encoder is its exponential moving average (momentum m); the current batch's keys join the
queue only after the loss, so a query never meets its own positive as a negative. Under data parallelism every
rank enqueues all ranks' keys (one queue, as in one process). BatchNorm: with `train.sync_batchnorm` (the
default) both encoders normalize over the global batch, as one process does; without it, the key encoder's
batch is shuffled across ranks (the paper's shuffling BN, §3.3), so a query and its key never share BatchNorm
statistics. In one process there is nothing to shuffle: BatchNorm over the whole batch does not depend on its
order. The MLP head is dropped after pretraining.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F

from selfsup.config import bounded
from selfsup.distributed import (gather_detached, has_local_batchnorm, shuffle_across_ranks, unshuffle_across_ranks,
                                 world_size)
from selfsup.errors import SelfsupError
from selfsup.losses import ema_update, info_nce_queue
from selfsup.objectives.image_base import ImageObjective, mlp
from selfsup.pretext.views import ViewConfig
from selfsup.registry import register_objective


def enqueue(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """Write `keys` over the oldest rows of the (K, d) ring buffer `queue` starting at `ptr` (in place)."""
    k, n = queue.shape[0], keys.shape[0]
    rows = (int(ptr) + torch.arange(n, device=queue.device)) % k
    queue[rows] = keys.detach().to(queue.dtype)
    ptr.fill_((int(ptr) + n) % k)


@register_objective("moco")
class MoCo(ImageObjective):
    @dataclasses.dataclass
    class Options:
        queue_size: int = bounded(1024, gt=0, doc="K negatives kept from earlier batches")
        momentum: float = bounded(0.99, ge=0, lt=1, doc="key encoder EMA rate m")
        temperature: float = bounded(0.2, gt=0)
        projection_dim: int = bounded(64, gt=0)
        projection_hidden: int = bounded(256, gt=0)
        views: ViewConfig = dataclasses.field(default_factory=ViewConfig)

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        if recipe.objective.queue_size < recipe.train.batch_size:
            raise SelfsupError(f"objective.queue_size: {recipe.objective.queue_size} is smaller than "
                               f"train.batch_size={recipe.train.batch_size}")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.projector = mlp([self.encoder.feature_dim, o.projection_hidden, o.projection_dim], batch_norm=False)
        self.key_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(o.queue_size, o.projection_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def contrast(self, q: torch.Tensor, k: torch.Tensor, update: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE of queries against their keys and the queue as it was before this batch; then enqueue."""
        loss, logits = info_nce_queue(q, k, self.queue.clone(), self.options.temperature)
        if update:
            # every rank enqueues the global batch's keys in rank order: one queue, as in one process
            enqueue(self.queue, self.queue_ptr, F.normalize(gather_detached(k.detach().float()), dim=1))
        return loss, logits

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x1, x2 = self.two_views(batch["images"])
        h1 = self.encoder(x1)
        q = self.projector(h1)
        with torch.no_grad():
            k = self.keys(x2)
        self.remember(h1, batch["labels"])
        loss, logits = self.contrast(q, k, update=self.training)
        accuracy = (logits.argmax(1) == 0).float().mean().detach()
        return {"loss": loss, "contrastive_accuracy": accuracy, "n_images": batch["n_images"]}

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """The key encoder's embeddings of x; shuffled across ranks when its BatchNorm is rank-local."""
        if not (self.training and world_size() > 1 and has_local_batchnorm(self.key_encoder)):
            return self.key_projector(self.key_encoder(x))
        generator = torch.Generator().manual_seed(self.recipe.train.seed * 1_000_003 + (self.micro_step or 0))
        shuffled, order = shuffle_across_ranks(x, generator)
        return unshuffle_across_ranks(self.key_projector(self.key_encoder(shuffled)), order)

    def on_step_end(self, step: int, max_steps: int) -> None:
        ema_update(self.key_encoder, self.encoder, self.options.momentum)
        ema_update(self.key_projector, self.projector, self.options.momentum)
