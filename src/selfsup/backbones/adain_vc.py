"""The AdaIN-VC networks (`model.type: adain-vc`; Chou, Yeh & Lee 2019, "One-shot Voice Conversion by Separating
Speaker and Content Representations with Instance Normalization"), scaled down:

* the content encoder: residual 1-D convolution blocks over log-mel frames, each ending in instance normalization
  without affine parameters — every channel's mean and spread over the utterance, much of what tells speakers
  apart, are removed — then a 1x1 convolution to the content code's mean and log-variance;
* the speaker encoder: residual convolution blocks, the mean over the utterance's real frames, two dense layers
  -> one speaker vector per utterance;
* the decoder: residual convolution blocks on the content code, each convolution followed by adaptive instance
  normalization whose per-channel scale and shift are predicted from the speaker vector, then a 1x1 convolution
  back to the mel bands.

Tensors are (B, channels, T) with a (B, T) mask of real frames: padding never enters a statistic and is zeroed
after every block, so a clip's output does not depend on what it was batched with.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.registry import register_backbone


@register_backbone("adain-vc")
class AdainVCBackbone:
    modality = "voice"  # log-mel in, log-mel out: only the voice-conversion objective reads it

    @dataclasses.dataclass
    class Config:
        type: Literal["adain-vc"] = "adain-vc"
        hidden_size: int = bounded(128, gt=0, doc="channels of every convolution")
        num_blocks: int = bounded(3, gt=0, doc="residual convolution blocks in each of the three networks")
        kernel_size: int = bounded(5, gt=0, doc="convolution width in frames (odd)")
        content_dim: int = bounded(16, gt=0, doc="channels of the content code (the bottleneck)")
        speaker_dim: int = bounded(64, gt=0, doc="size of the speaker vector")

        def validate(self) -> None:
            if self.kernel_size % 2 == 0:
                raise SelfsupError(f"kernel_size: must be odd (same-length convolutions), got {self.kernel_size}")


# torch's InstanceNorm1d takes no mask: the zero padding of short clips would enter the statistics
def instance_norm(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, C, T) -> each channel minus its mean over the real frames, over its (population) standard deviation
    there; padded frames are zero."""
    m = mask[:, None, :].to(x.dtype)
    n = m.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (x * m).sum(-1, keepdim=True) / n
    var = ((x - mean).pow(2) * m).sum(-1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * m


def adain(x: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Adaptive instance normalization: instance_norm(x) * scale + shift, per channel ((B, C) scale and shift)."""
    return (instance_norm(x, mask) * scale[..., None] + shift[..., None]) * mask[:, None, :].to(x.dtype)


def masked_time_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B, C) mean over the real frames."""
    m = mask[:, None, :].to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def _conv(c_in: int, c_out: int, kernel: int) -> torch.nn.Conv1d:
    return torch.nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)


class _Blocks(torch.nn.Module):
    """The residual blocks' convolution pairs (ReLU between them); each network adds its own normalization."""

    def __init__(self, cfg: AdainVCBackbone.Config):
        super().__init__()
        c, k = cfg.hidden_size, cfg.kernel_size
        self.convs = torch.nn.ModuleList(torch.nn.ModuleList([_conv(c, c, k), _conv(c, c, k)])
                                         for _ in range(cfg.num_blocks))


class ContentEncoder(_Blocks):
    def __init__(self, cfg: AdainVCBackbone.Config, n_mels: int):
        super().__init__(cfg)
        self.inp = _conv(n_mels, cfg.hidden_size, 1)
        self.out = _conv(cfg.hidden_size, 2 * cfg.content_dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, T) -> the content code's mean and log-variance, each (B, content_dim, T)."""
        h = instance_norm(self.inp(x), mask)
        for a, b in self.convs:
            h = instance_norm(h + b(torch.relu(a(h))), mask)
        mu, log_var = self.out(h).chunk(2, dim=1)
        m = mask[:, None, :].to(h.dtype)
        return mu * m, log_var * m


class SpeakerEncoder(_Blocks):
    def __init__(self, cfg: AdainVCBackbone.Config, n_mels: int):
        super().__init__(cfg)
        c = cfg.hidden_size
        self.inp = _conv(n_mels, c, 1)
        self.dense = torch.nn.Sequential(torch.nn.Linear(c, c), torch.nn.ReLU(), torch.nn.Linear(c, cfg.speaker_dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, speaker_dim), one vector per utterance."""
        m = mask[:, None, :].to(x.dtype)
        h = self.inp(x) * m
        for a, b in self.convs:
            h = (h + b(torch.relu(a(h)))) * m
        return self.dense(masked_time_mean(h, mask))


class Decoder(_Blocks):
    def __init__(self, cfg: AdainVCBackbone.Config, n_mels: int):
        super().__init__(cfg)
        c = cfg.hidden_size
        self.inp = _conv(cfg.content_dim, c, 1)
        # per block: scale and shift of both convolutions' AdaIN, from the speaker vector
        self.affine = torch.nn.ModuleList(torch.nn.Linear(cfg.speaker_dim, 4 * c) for _ in range(cfg.num_blocks))
        self.out = _conv(c, n_mels, 1)

    def forward(self, content: torch.Tensor, speaker: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Content code (B, content_dim, T) and speaker vector (B, speaker_dim) -> (B, n_mels, T) frames."""
        m = mask[:, None, :].to(content.dtype)
        h = self.inp(content) * m
        for (a, b), affine in zip(self.convs, self.affine):
            s1, t1, s2, t2 = affine(speaker).chunk(4, dim=1)
            # scale = 1 + prediction: at initialization AdaIN is plain instance normalization, not a zero gate
            y = torch.relu(adain(a(h), mask, 1 + s1, t1))
            h = (h + adain(b(y), mask, 1 + s2, t2)) * m
        return self.out(h) * m


class AdainVC(torch.nn.Module):
    """The three networks of AdaIN-VC."""

    def __init__(self, cfg: AdainVCBackbone.Config, n_mels: int):
        super().__init__()
        self.content = ContentEncoder(cfg, n_mels)
        self.speaker = SpeakerEncoder(cfg, n_mels)
        self.decoder = Decoder(cfg, n_mels)
