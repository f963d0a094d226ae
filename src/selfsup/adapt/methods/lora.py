"""LoRA (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models"): the frozen attention query and
value projections W get a trainable low-rank update (alpha / r) * B A; through peft. Only the artifact (the
low-rank matrices and the task head) is saved; it loads onto the checkpoint it was made on."""
from __future__ import annotations

import dataclasses
from typing import Any

from selfsup.adapt.core.kinds import SPEECH_KINDS, TEXT_KINDS
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method
from selfsup.adapt.shared.peft_tuning import PeftArtifact
from selfsup.config import bounded
from selfsup.errors import SelfsupError

# model_type -> module names of the attention query / value projections (GPT-2: the fused q/k/v `c_attn`;
# Wav2Vec2Bert's conformer attention: linear_q / linear_v)
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"], "roberta": ["query", "value"], "roformer": ["query", "value"],
    "electra": ["query", "value"], "albert": ["query", "value"], "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"], "bart": ["q_proj", "v_proj"],
    "wav2vec2": ["q_proj", "v_proj"], "hubert": ["q_proj", "v_proj"], "data2vec-audio": ["q_proj", "v_proj"],
    "wavlm": ["q_proj", "v_proj"], "wav2vec2-bert": ["linear_q", "linear_v"],
}


@dataclasses.dataclass
class LoraOptions:
    lora_r: int = bounded(8, ge=1, doc="rank r")
    lora_alpha: float = bounded(16, gt=0, doc="scale alpha (updates scaled by alpha / r)")
    lora_dropout: float = bounded(0.0, ge=0, lt=1, doc="dropout on the LoRA input")
    lora_targets: list[str] | None = dataclasses.field(
        default=None, metadata={"doc": "module names (default: the attention query/value)"})


@register_method("lora")
class Lora(PeftArtifact, AdaptMethod):
    help = "low-rank updates of the attention query/value (peft)"
    kinds = TEXT_KINDS + SPEECH_KINDS
    default_lr = 1e-3
    Options = LoraOptions

    def check(self, family: str, kind: str, opts: Any) -> None:
        if family not in LORA_TARGETS and not opts.lora_targets:
            raise SelfsupError(f"--method lora: model type {family!r} is not supported "
                               f"(supported: {', '.join(sorted(LORA_TARGETS))}; or --set lora_targets=[...])")

    def peft_config(self, model, kind: str, opts: Any, common: dict[str, Any]):
        import peft

        family = model.config.model_type
        return peft.LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                               target_modules=list(opts.lora_targets or LORA_TARGETS[family]),
                               fan_in_fan_out=family == "gpt2", **common)
