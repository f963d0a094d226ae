"""MLP encoder / decoder pairs for the auto-encoders (`model.type: mlp`): input -> hidden_sizes -> bottleneck,
and the mirror image back to the input width. A table row is its own input; an image (C, H, W) or a window of
log-mel frames (1, n_mels, W) is flattened first and the decoder's output reshaped back. The auto-encoder
objectives (objectives/autoencoder_base.py) size the encoder's output themselves (twice the bottleneck for a
VAE's mean and log-variance).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.registry import register_backbone

ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "tanh": torch.nn.Tanh}


@register_backbone("mlp")
class TabularBackbone:
    modality = "table, image or audio-frame"

    @dataclasses.dataclass
    class Config:
        type: Literal["mlp"] = "mlp"
        hidden_sizes: list[int] = dataclasses.field(default_factory=lambda: [64, 32])
        bottleneck: int = bounded(8, gt=0, doc="width of the code (latent) layer")
        activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
        dropout: float = bounded(0.0, ge=0, lt=1)

        def validate(self) -> None:
            if any(h <= 0 for h in self.hidden_sizes):
                raise SelfsupError(f"hidden_sizes: must all be > 0, got {self.hidden_sizes}")


def mlp(dims: list[int], activation: str = "relu", dropout: float = 0.0) -> torch.nn.Sequential:
    """Linear layers dims[0] -> ... -> dims[-1] with the activation (and dropout) between them, none after."""
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(torch.nn.Dropout(dropout))
    return torch.nn.Sequential(*layers)


def encoder_decoder(cfg: TabularBackbone.Config, input_shape: int | tuple[int, ...],
                    code_out: int | None = None) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    """The encoder (input -> ... -> code_out, default the bottleneck) and the decoder (bottleneck -> ... ->
    input). A (D,) input keeps the plain layer stack (the saved weights' names of table models)."""
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
    width = int(math.prod(shape))
    hidden = list(cfg.hidden_sizes)
    encoder = mlp([width, *hidden, code_out or cfg.bottleneck], cfg.activation, cfg.dropout)
    decoder = mlp([cfg.bottleneck, *reversed(hidden), width], cfg.activation, cfg.dropout)
    if len(shape) > 1:
        encoder = torch.nn.Sequential(torch.nn.Flatten(), *encoder)
        decoder = torch.nn.Sequential(*decoder, torch.nn.Unflatten(1, shape))
    return encoder, decoder
