"""Image backbones from `transformers` configs: a small ResNet (basic blocks) and a tiny ViT, sized by the
recipe, or loaded from a local HF checkpoint folder.

`VisionEncoder` wraps the HF model: `forward(x)` gives one pooled feature vector per image, `stages(x)` the
per-stage feature maps (ResNet: stem + each stage; ViT: embeddings + each layer). `export` writes
`save_pretrained` output (loads with `transformers.AutoModel.from_pretrained`) plus `preprocessing.json`
(image size, channels, mean/std, pooling) that `selfsup evaluate` reads.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import torch

from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.registry import register_backbone

PREPROCESSING = "preprocessing.json"


@register_backbone("resnet", "vit")
class VisionBackbone:
    modality = "image"

    @dataclasses.dataclass
    class Config:
        type: Literal["resnet", "vit"] = "resnet"
        # resnet
        embedding_size: int = bounded(32, gt=0, doc="resnet: stem channels")
        hidden_sizes: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 128])
        depths: list[int] = dataclasses.field(default_factory=lambda: [1, 1, 1])
        # vit
        patch_size: int = bounded(4, gt=0, doc="vit: patch side in pixels")
        hidden_size: int = bounded(64, gt=0, doc="vit: width")
        num_layers: int = bounded(4, gt=0, doc="vit: transformer layers")
        num_heads: int = bounded(4, gt=0, doc="vit: attention heads")
        intermediate_size: int | None = bounded(None, gt=0, doc="vit: MLP width (default 4 x hidden_size)")
        dropout: float = bounded(0.0, ge=0, lt=1)
        pooling: Literal["auto", "cls", "mean"] = "auto"  # vit features: [CLS] or mean of patch tokens
        from_pretrained: str | None = None  # continue from a local HF image model folder

        def validate(self) -> None:
            if len(self.hidden_sizes) != len(self.depths) or not self.depths:
                raise SelfsupError(f"hidden_sizes/depths: need one size per stage, got {self.hidden_sizes} "
                                   f"and {self.depths}")
            if any(v <= 0 for v in self.hidden_sizes + self.depths):
                raise SelfsupError("hidden_sizes/depths: must all be > 0")
            if self.type == "vit" and self.hidden_size % self.num_heads:
                raise SelfsupError(f"hidden_size: {self.hidden_size} is not divisible by num_heads={self.num_heads}")


def check_image_size(cfg: VisionBackbone.Config, image_size: int) -> None:
    if cfg.from_pretrained:
        return
    if cfg.type == "vit" and image_size % cfg.patch_size:
        raise SelfsupError(f"model.patch_size: {cfg.patch_size} does not divide data.image_size={image_size}")
    if cfg.type == "resnet" and image_size < 8:
        raise SelfsupError(f"data.image_size: {image_size} is too small for the ResNet stem (>= 8)")


def _hf_model(cfg: VisionBackbone.Config, channels: int, image_size: int) -> torch.nn.Module:
    import transformers as tf

    if cfg.from_pretrained:
        try:
            model = tf.AutoModel.from_pretrained(cfg.from_pretrained)
        except Exception as e:
            raise SelfsupError(f"model.from_pretrained: cannot load {cfg.from_pretrained} "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
        if getattr(model.config, "num_channels", channels) != channels:
            raise SelfsupError(f"model.from_pretrained: {cfg.from_pretrained} takes {model.config.num_channels} "
                               f"channels, the data has {channels} (set data.channels)")
        return model
    if cfg.type == "resnet":
        hf = tf.ResNetConfig(num_channels=channels, embedding_size=cfg.embedding_size,
                             hidden_sizes=list(cfg.hidden_sizes), depths=list(cfg.depths), layer_type="basic",
                             downsample_in_first_stage=False)
        return tf.ResNetModel(hf)
    hf = tf.ViTConfig(image_size=image_size, patch_size=cfg.patch_size, num_channels=channels,
                      hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                      num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size,
                      hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    return tf.ViTModel(hf, add_pooling_layer=False)


class VisionEncoder(torch.nn.Module):
    """An HF image model with a pooled-feature interface: (B, C, H, W) normalized floats -> (B, D)."""

    def __init__(self, model: torch.nn.Module, pooling: str = "auto"):
        super().__init__()
        self.model = model
        # dinov2: a fine-tuned mean-pooled ViT saved as Dinov2ForImageClassification (adapt/core/image_model.py)
        self.kind = "vit" if model.config.model_type in ("vit", "dinov2") else "resnet"
        self.pooling = ("mean" if pooling == "auto" else pooling) if self.kind == "vit" else "avg"
        self.feature_dim = int(model.config.hidden_size if self.kind == "vit" else model.config.hidden_sizes[-1])

    def _pool(self, out) -> torch.Tensor:
        if self.kind == "resnet":
            return out.pooler_output.flatten(1)
        tokens = out.last_hidden_state
        return tokens[:, 0] if self.pooling == "cls" else tokens[:, 1:].mean(dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._pool(self.model(pixel_values=pixel_values))

    def stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage features: ResNet (B, C_i, H_i, W_i) maps; ViT (B, 1 + patches, D) token sequences."""
        return list(self.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states)

    def export(self, folder: Path, image_size: int, channels: int, mean: list[float], std: list[float]) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model.save_pretrained(str(folder), safe_serialization=True)
        (Path(folder) / PREPROCESSING).write_text(json.dumps(
            {"image_size": image_size, "channels": channels, "mean": list(mean), "std": list(std),
             "pooling": self.pooling, "model_type": self.kind, "scale": "pixels / 255, then (x - mean) / std"},
            indent=2) + "\n")


def build_vision_encoder(cfg: VisionBackbone.Config, channels: int, image_size: int) -> VisionEncoder:
    check_image_size(cfg, image_size)
    return VisionEncoder(_hf_model(cfg, channels, image_size), cfg.pooling)


def load_vision_encoder(folder: str | Path) -> tuple[VisionEncoder, dict]:
    """An exported encoder and its preprocessing (for evaluation)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    if (folder / "model" / PREPROCESSING).is_file():  # a run folder
        folder = folder / "model"
    if not (folder / PREPROCESSING).is_file():
        raise SelfsupError(f"{folder}: not an exported selfsup image model (no {PREPROCESSING})")
    prep = json.loads((folder / PREPROCESSING).read_text())
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no load report: a fine-tuned classifier's head is unused by the encoder
    try:
        model = AutoModel.from_pretrained(str(folder))
    except Exception as e:
        raise SelfsupError(f"{folder}: cannot load model ({type(e).__name__}: {str(e).splitlines()[0][:160]})") \
            from None
    finally:
        hf_logging.set_verbosity(level)
    return VisionEncoder(model, prep.get("pooling", "auto") if prep.get("model_type") == "vit" else "auto"), prep
