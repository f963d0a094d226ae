"""The image-GPT backbone (`model.type: igpt`): a small `transformers.GPT2LMHeadModel` over palette tokens.

The vocabulary is the palette (K colours, fitted on the training images by the objective) plus one start
token (id K); positions = image_size**2 + 1. `IGPTEncoder` is the feature extractor `selfsup evaluate` uses
(iGPT's linear-probe protocol, Chen et al. 2020): pixels -> nearest palette colour -> [start] + tokens in
raster order -> the hidden states of one layer (the middle one by default), layer-normed per position and
averaged over the pixel positions. `export` writes `save_pretrained` output (loads with
`transformers.AutoModelForCausalLM`), `palette.npy` and `preprocessing.json`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.backbones.vision import PREPROCESSING
from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.pretext.pixel_tokens import images_to_tokens
from selfsup.registry import register_backbone

PALETTE = "palette.npy"


@register_backbone("igpt")
class IGPTBackbone:
    modality = "image"

    @dataclasses.dataclass
    class Config:
        type: Literal["igpt"] = "igpt"
        hidden_size: int = bounded(64, gt=0)
        num_layers: int = bounded(2, gt=0)
        num_heads: int = bounded(2, gt=0)
        intermediate_size: int | None = bounded(None, gt=0, doc="MLP width (default 4 x hidden_size)")
        dropout: float = bounded(0.0, ge=0, lt=1)
        feature_layer: int | None = bounded(None, ge=0, doc="hidden state averaged into features (0 = embeddings,"
                                            " num_layers = last); null = the middle, num_layers // 2")

        def validate(self) -> None:
            if self.hidden_size % self.num_heads:
                raise SelfsupError(f"hidden_size: {self.hidden_size} is not divisible by num_heads={self.num_heads}")
            if self.feature_layer is not None and self.feature_layer > self.num_layers:
                raise SelfsupError(f"feature_layer: {self.feature_layer} exceeds num_layers={self.num_layers}")

        @property
        def probe_layer(self) -> int:
            return self.num_layers // 2 if self.feature_layer is None else self.feature_layer


def build_igpt_model(cfg: IGPTBackbone.Config, palette_size: int, sequence_length: int):
    """A fresh GPT2LMHeadModel: vocabulary palette_size + 1 (the start token is id palette_size)."""
    import transformers as tf

    start = palette_size
    config = tf.GPT2Config(vocab_size=palette_size + 1, n_positions=sequence_length + 1, n_embd=cfg.hidden_size,
                           n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.intermediate_size,
                           resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                           bos_token_id=start, eos_token_id=start)
    return tf.GPT2LMHeadModel(config)


def pooled_features(hidden: torch.Tensor) -> torch.Tensor:
    """(B, 1 + n, D) hidden states -> (B, D): layer norm (no affine) per position, mean over the n pixels."""
    return F.layer_norm(hidden[:, 1:].float(), hidden.shape[-1:]).mean(1)


class IGPTEncoder(torch.nn.Module):
    """Images (B, C, S, S) scaled to [0, 1] -> (B, D) features of the GPT's `layer`-th hidden state."""

    def __init__(self, model: torch.nn.Module, palette: np.ndarray, layer: int):
        super().__init__()
        self.model, self.layer = model, layer
        self.register_buffer("palette", torch.as_tensor(np.asarray(palette, np.float32)), persistent=False)
        self.feature_dim = int(model.config.n_embd)

    def input_ids(self, unit_images: torch.Tensor) -> torch.Tensor:
        tokens = images_to_tokens(unit_images * 255.0, self.palette)
        start = torch.full((len(tokens), 1), len(self.palette), dtype=torch.long, device=tokens.device)
        return torch.cat([start, tokens], dim=1)

    def forward(self, unit_images: torch.Tensor) -> torch.Tensor:
        out = self.model.transformer(input_ids=self.input_ids(unit_images), output_hidden_states=True)
        return pooled_features(out.hidden_states[self.layer])


def export_igpt(model, palette: np.ndarray, folder: Path, image_size: int, channels: int, layer: int) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model.save_pretrained(str(folder), safe_serialization=True)
    np.save(Path(folder) / PALETTE, np.asarray(palette, np.float32))
    (Path(folder) / PREPROCESSING).write_text(json.dumps(
        {"image_size": image_size, "channels": channels, "mean": [0.0] * channels, "std": [1.0] * channels,
         "model_type": "igpt", "pooling": "mean", "feature_layer": layer, "palette": PALETTE,
         "start_token": int(len(palette)),
         "scale": "pixels / 255 (no normalization); the encoder maps each pixel x 255 to its nearest palette "
                  "colour and reads [start_token] + the ids in raster order"}, indent=2) + "\n")


def load_igpt_encoder(folder: Path) -> tuple[IGPTEncoder, dict]:
    """An exported igpt model folder -> (feature encoder, preprocessing) for `selfsup evaluate`."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    prep = json.loads((folder / PREPROCESSING).read_text())
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        palette = np.load(folder / prep.get("palette", PALETTE))
    except Exception as e:
        raise SelfsupError(f"{folder}: cannot load igpt model ({type(e).__name__}: {str(e).splitlines()[0][:160]})") \
            from None
    return IGPTEncoder(model, palette, int(prep["feature_layer"])), prep
