"""Shared plumbing of the two-view speech methods (DeLoRes, Speech SimCLR): both views of a clip are drawn in
`pretext()` from the example's generator (`selfsup.pretext.audio_views`), optionally mixed with the next clip
of the batch (BYOL-A's log-mixup-exp), encoded with their own lengths, mean-pooled over real frames and
projected. A subclass defines the projector and `pair_loss(z1, z2, batch, views)`; z1, z2 are the global
batch's projections under data parallelism (gathered from every rank, differentiable), `batch` and `views`
this rank's.

The batch adds `view1`, `view2` (B, T, F), `view_lengths` (B, 2), `mixup` (B, 2) and, when a subclass sets
`keep_clean`, `clean1`, `clean2`: each view's crop before gain, noise and masks (a reconstruction target).
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch

from selfsup.distributed import gather
from selfsup.objectives.speech_base import SpeechObjective, lengths_mask, masked_mean
from selfsup.pretext.audio_views import AudioViewConfig, augment_view, log_mixup_exp


class TwoViewSpeechObjective(SpeechObjective):
    inputs = ("logmel",)
    keep_clean = False

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        self.views: AudioViewConfig = self.options.views
        std = self.front.std if self.front.normalize == "global" and self.front.std is not None else None
        # a gain in dB shifts raw log power; under global normalization that is a shift / std per channel
        self.gain_scale = 1.0 / np.asarray(std, np.float32) if std is not None else 1.0

    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        lengths = []
        for k in (1, 2):
            view, clean, n = augment_view(clip, valid, rng, self.views, self.gain_scale)
            out[f"view{k}"] = view
            if self.keep_clean:
                out[f"clean{k}"] = clean
            lengths.append(n)
        out["view_lengths"] = np.array(lengths, dtype=np.int64)
        out["mixup"] = rng.uniform(0.0, self.views.mixup, size=2).astype(np.float32) if self.views.mixup > 0 \
            else np.zeros(2, np.float32)
        return out

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        batch = super().make_batch(examples, rngs)
        if self.views.mixup > 0:
            global_norm = self.front.normalize == "global"
            mean, std = (self.front.mean, self.front.std) if global_norm else (None, None)
            for k in (1, 2):
                mixed = log_mixup_exp(batch[f"view{k}"].numpy(), batch["mixup"][:, k - 1].numpy(),
                                      batch["view_lengths"][:, k - 1].numpy(), mean, std)
                batch[f"view{k}"] = torch.from_numpy(mixed)
        return batch

    def encode_view(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(last layer (B, T, D), real-frame mask (B, T), mean-pooled (B, D)) of one batch of views."""
        hidden = self.encoder.layers(x, lengths_mask(lengths, x.shape[1]))[-1]
        frames = self.encoder.frame_mask(lengths, hidden.shape[1])
        return hidden, frames, masked_mean(hidden, frames)

    @abc.abstractmethod
    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor, batch: dict[str, torch.Tensor],
                  views: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's loss of the two projections; `views` holds each view's (hidden, frames)."""

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        encoded = [self.encode_view(batch[f"view{k}"], batch["view_lengths"][:, k - 1]) for k in (1, 2)]
        self.remember(encoded[0][0], encoded[0][1], batch["labels"])
        z1, z2 = (self.projector(pooled) for _, _, pooled in encoded)
        loss, metrics = self.pair_loss(gather(z1), gather(z2), batch, [(h, f) for h, f, _ in encoded])
        return {"loss": loss, **metrics, "n_seconds": batch["n_seconds"]}
