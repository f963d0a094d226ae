"""BitFit (Ben Zaken, Goldberg & Ravfogel 2022, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models"): only the bias terms of the backbone train, with the task head.
About 0.1% of a BERT's parameters; the whole model is saved (its weights are the checkpoint's but for the
biases), so it reloads with plain transformers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from selfsup.adapt.core.kinds import SPEECH_KINDS, TEXT_KINDS
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method


def is_bias(name: str) -> bool:
    return name == "bias" or name.endswith(".bias")


@register_method("bitfit")
class BitFit(AdaptMethod):
    help = "only the backbone's biases and the task head train (Ben Zaken et al. 2022)"
    kinds = TEXT_KINDS + SPEECH_KINDS
    default_lr = 1e-3  # the paper sweeps 1e-4 .. 1e-3; biases need a larger step than full fine-tuning

    def prepare(self, model, head: set[str], kind: str, opts: Any, source: Path) -> tuple[Any, int | None]:
        backbone = 0
        for name, p in model.named_parameters():
            p.requires_grad_(name in head or is_bias(name))
            backbone += 0 if name in head else p.numel()
        return model, backbone
