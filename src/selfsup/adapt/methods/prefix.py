"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"): trainable
key/value vectors prepended at every attention layer of the frozen model; through peft. BERT, RoBERTa,
RoFormer, ELECTRA, GPT-2, Llama (ALBERT and BART have no key/value cache to hold the prefix)."""
from __future__ import annotations

import dataclasses
from typing import Any

from selfsup.adapt.core.kinds import TEXT_KINDS
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method
from selfsup.adapt.shared.peft_tuning import PREFIX_FAMILIES, PeftArtifact
from selfsup.config import bounded
from selfsup.errors import SelfsupError


@dataclasses.dataclass
class PrefixOptions:
    num_virtual_tokens: int = bounded(10, ge=1, doc="prefix length (key/value vectors per layer)")


@register_method("prefix")
class Prefix(PeftArtifact, AdaptMethod):
    help = "trainable key/value prefixes at every layer (peft)"
    kinds = TEXT_KINDS
    default_lr = 1e-2
    Options = PrefixOptions
    passes_cache = True

    def check(self, family: str, kind: str, opts: Any) -> None:
        if family not in PREFIX_FAMILIES:
            raise SelfsupError(f"--method prefix: model type {family!r} is not supported (no key/value cache "
                               f"for the prefix; supported: {', '.join(PREFIX_FAMILIES)}); try --method lora")

    def peft_config(self, model, kind: str, opts: Any, common: dict[str, Any]):
        import peft

        return peft.PrefixTuningConfig(num_virtual_tokens=opts.num_virtual_tokens, **common)
