"""Prompt tuning (Lester, Al-Rfou & Constant 2021, "The Power of Scale for Parameter-Efficient Prompt
Tuning"): trainable input embeddings (a soft prompt) before the text of the frozen model; through peft.
Sequence-level kinds only (on token classification and QA the outputs would include the virtual tokens)."""
from __future__ import annotations

import dataclasses
from typing import Any

from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method
from selfsup.adapt.shared.peft_tuning import SEQUENCE_KINDS, PeftArtifact
from selfsup.config import bounded
from selfsup.errors import SelfsupError


@dataclasses.dataclass
class SoftPromptOptions:
    num_virtual_tokens: int = bounded(10, ge=1, doc="soft-prompt length in tokens")


@register_method("soft-prompt")
class SoftPrompt(PeftArtifact, AdaptMethod):
    help = "trainable input embeddings before the text (peft prompt tuning)"
    kinds = SEQUENCE_KINDS
    default_lr = 3e-2
    Options = SoftPromptOptions

    def check(self, family: str, kind: str, opts: Any) -> None:
        if family == "bart":
            raise SelfsupError("--method soft-prompt: BART is not supported (its heads take no input "
                               "embeddings); try --method lora")
        if kind not in SEQUENCE_KINDS:
            raise SelfsupError(f"--method soft-prompt: supports {', '.join(SEQUENCE_KINDS)} only, not {kind} "
                               f"(the outputs would include the virtual tokens); try --method lora")

    def peft_config(self, model, kind: str, opts: Any, common: dict[str, Any]):
        import peft

        init = getattr(peft.PromptTuningInit, "SAMPLE_VOCAB", peft.PromptTuningInit.RANDOM)
        return peft.PromptTuningConfig(num_virtual_tokens=opts.num_virtual_tokens, prompt_tuning_init=init,
                                       token_dim=model.get_input_embeddings().weight.shape[1], **common)
