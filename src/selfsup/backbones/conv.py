"""Convolutional encoder / decoder pairs for the auto-encoders on images and windows of log-mel frames
(`model.type: conv`), in the manner of the convolutional auto-encoders of Masci, Meier, Cireşan & Schmidhuber
2011 ("Stacked Convolutional Auto-Encoders for Hierarchical Feature Extraction"): each encoder stage is a
stride-2 convolution (kernel `kernel_size`, "same" padding: H -> ceil(H / 2)) and an activation; fully
connected layers (`hidden_sizes`, possibly none) map the flattened last feature map to the code (`bottleneck`,
or what the objective asks: twice it for a VAE). The decoder mirrors it: fully connected layers back to the
last feature map, then stride-2 transposed convolutions (kernel 4, padding 1: exactly H -> 2H) with the
activation between them, none after the last, and a crop to the input size (the stages round odd sizes up). Input: (B, C, H, W) — an image, or (1, n_mels, W) frames.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from selfsup.backbones.tabular import ACTIVATIONS, mlp
from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.registry import register_backbone


@register_backbone("conv")
class ConvBackbone:
    modality = "table, image or audio-frame"

    @dataclasses.dataclass
    class Config:
        type: Literal["conv"] = "conv"
        channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64])  # one stride-2 stage each
        hidden_sizes: list[int] = dataclasses.field(default_factory=list)  # fully connected, feature map -> code
        bottleneck: int = bounded(16, gt=0, doc="width of the code (latent) layer")
        kernel_size: int = bounded(3, ge=1, doc="the encoder's convolution kernel (odd: same padding)")
        activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"

        def validate(self) -> None:
            if not self.channels or any(c <= 0 for c in self.channels):
                raise SelfsupError(f"channels: one or more widths > 0, got {self.channels}")
            if any(h <= 0 for h in self.hidden_sizes):
                raise SelfsupError(f"hidden_sizes: must all be > 0, got {self.hidden_sizes}")
            if self.kernel_size % 2 == 0:
                raise SelfsupError(f"kernel_size: must be odd (same padding), got {self.kernel_size}")


class Crop(torch.nn.Module):
    """Keeps the top-left (H, W) of a feature map: transposed convolutions double sizes, so an odd input size
    comes back one larger; torch has no crop layer, hence this one."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :self.height, :self.width]


def stage_sizes(size: int, stages: int) -> int:
    """Spatial size after `stages` stride-2 'same' convolutions: ceil(size / 2) each time."""
    for _ in range(stages):
        size = math.ceil(size / 2)
    return size


def encoder_decoder(cfg: ConvBackbone.Config, input_shape: tuple[int, ...],
                    code_out: int | None = None) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    """The encoder ((C, H, W) -> code_out, default the bottleneck) and the decoder (bottleneck -> (C, H, W))."""
    if len(input_shape) != 3:
        raise SelfsupError(f"model.type: conv needs images or audio frames ((C, H, W) inputs), got rows of shape "
                           f"{tuple(input_shape)} (use model.type: mlp for tables)")
    c_in, height, width = (int(d) for d in input_shape)
    act = ACTIVATIONS[cfg.activation]
    widths = [c_in, *cfg.channels]
    h, w = stage_sizes(height, len(cfg.channels)), stage_sizes(width, len(cfg.channels))
    flat = widths[-1] * h * w
    enc: list[torch.nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        enc += [torch.nn.Conv2d(a, b, cfg.kernel_size, stride=2, padding=cfg.kernel_size // 2), act()]
    hidden = list(cfg.hidden_sizes)
    enc += [torch.nn.Flatten(), *mlp([flat, *hidden, code_out or cfg.bottleneck], cfg.activation)]
    dec: list[torch.nn.Module] = [*mlp([cfg.bottleneck, *reversed(hidden), flat], cfg.activation), act(),
                                  torch.nn.Unflatten(1, (widths[-1], h, w))]
    back = list(reversed(widths))
    for i, (a, b) in enumerate(zip(back[:-1], back[1:])):
        dec.append(torch.nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
        if i < len(back) - 2:
            dec.append(act())
    dec.append(Crop(height, width))
    return torch.nn.Sequential(*enc), torch.nn.Sequential(*dec)
