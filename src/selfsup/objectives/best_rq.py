"""BEST-RQ (Chiu, Qin, Zhang, Yu & Wu 2022, "Self-supervised Learning with Random-projection Quantizer for
Speech Recognition").

Predicts: the discrete code of each masked stack of `stack_frames` log-mel frames (40 ms at 4 x 10 ms), with a
softmax head and cross-entropy over masked stacks only. The codes come from a frozen random-projection
quantizer (vector_quantize_pytorch's `RandomProjectionQuantizer`: a Xavier-initialized projection of the
layer-normalized stack, then the nearest of `codebook_size` random unit vectors by cosine similarity), never
trained. Masked stacks (spans of `mask_span` stacks; `mask_prob` is fairseq's span count, so about that share
of frames before overlaps) are replaced by noise N(0, `noise_std`) in the input. The conformer keeps 100
frames/s, so the head reads each stack's `stack_frames` output frames concatenated (the paper's encoder
subsamples 4x instead). Head and quantizer are dropped after pretraining.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import bounded
from selfsup.diagnostics import codebook_health
from selfsup.objectives.speech_base import SpeechObjective
from selfsup.pretext.speech_masking import span_mask
from selfsup.registry import register_objective


def stack_frames(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T, F) -> (B, T // k, k * F): consecutive groups of k frames side by side (a tail < k is dropped)."""
    n = x.shape[1] // k
    return x[:, :n * k].reshape(x.shape[0], n, k * x.shape[2])


def noise_masked_frames(frames: np.ndarray, masked: np.ndarray, rng: np.random.Generator,
                        std: float) -> np.ndarray:
    """(T, F) frames with the (T,) masked ones replaced by N(0, std) noise (BEST-RQ's masking)."""
    x = np.array(frames, dtype=np.float32, copy=True)
    x[masked] = rng.normal(0.0, std, size=(int(masked.sum()), x.shape[1]))
    return x


@register_objective("best_rq")
class BestRQ(SpeechObjective):
    inputs = ("logmel",)

    @dataclasses.dataclass
    class Options:
        stack_frames: int = bounded(4, gt=0, doc="frames per quantized target (4 x 10 ms = 40 ms)")
        codebook_size: int = bounded(512, ge=2, doc="codes (paper: 8192)")
        codebook_dim: int = bounded(16, gt=0, doc="projection size (paper: 16)")
        mask_prob: float = bounded(0.4, gt=0, lt=1, doc="share of stacks in masked spans before overlaps")
        mask_span: int = bounded(4, gt=0, doc="stacks per masked span (paper: 10 = 400 ms)")
        noise_std: float = bounded(0.1, ge=0, doc="masked frames become N(0, noise_std)")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        from vector_quantize_pytorch import RandomProjectionQuantizer

        o = self.options
        dims = prepared.extras["audio"].dims
        self.quantizer = RandomProjectionQuantizer(dim=o.stack_frames * dims, codebook_size=o.codebook_size,
                                                   codebook_dim=o.codebook_dim).requires_grad_(False)
        self.head = torch.nn.Linear(o.stack_frames * self.encoder.feature_dim, o.codebook_size)

    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        o = self.options
        k = o.stack_frames
        stacks = np.zeros(len(clip) // k, dtype=bool)
        real = valid // k
        stacks[:real] = span_mask(real, o.mask_prob, o.mask_span, rng)
        frames = np.zeros(len(clip), dtype=bool)
        frames[:len(stacks) * k] = np.repeat(stacks, k)
        return {"noised": noise_masked_frames(clip, frames, rng, o.noise_std), "masked_stacks": stacks}

    @torch.no_grad()
    def targets(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T // k) code ids of the clean stacked frames (the quantizer is frozen: buffers only)."""
        codes = self.quantizer(stack_frames(inputs.float(), self.options.stack_frames))
        return codes.reshape(codes.shape[0], codes.shape[1])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        o = self.options
        layers, frames = self.encode(batch["noised"], batch)
        self.remember(layers[-1], frames, batch["labels"])
        codes = self.targets(batch["inputs"])
        real_stacks = (batch["lengths"] // o.stack_frames)[:, None] > torch.arange(codes.shape[1],
                                                                                    device=codes.device)[None]
        chosen = batch["masked_stacks"] & real_stacks
        logits = self.head(stack_frames(layers[-1], o.stack_frames))[chosen].float()
        loss = F.cross_entropy(logits, codes[chosen])
        health = codebook_health(codes[real_stacks], o.codebook_size)
        return {"loss": loss, "masked_accuracy": (logits.argmax(-1) == codes[chosen]).float().mean(),
                "masked_fraction": chosen.sum() / real_stacks.sum().clamp_min(1), **health,
                "n_seconds": batch["n_seconds"]}
