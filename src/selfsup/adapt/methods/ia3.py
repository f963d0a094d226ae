"""(IA)^3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning"): learned vectors rescale the keys, the values and the feed-forward activations of the frozen model
(elementwise, initialized to one); through peft's `IA3Config`. Fewer trainable parameters than LoRA."""
from __future__ import annotations

from typing import Any

from selfsup.adapt.core.kinds import TEXT_KINDS
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method
from selfsup.adapt.shared.peft_tuning import PeftArtifact
from selfsup.errors import SelfsupError

# model_type -> (key/value projections, feed-forward module rescaled at its input) — peft's own mapping for
# these families, spelled out so RoFormer and ELECTRA (absent from peft's table) work the same way
IA3_TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "roberta": (["key", "value", "output.dense"], ["output.dense"]),
    "roformer": (["key", "value", "output.dense"], ["output.dense"]),
    "electra": (["key", "value", "output.dense"], ["output.dense"]),
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "bart": (["k_proj", "v_proj", "fc2"], ["fc2"]),
}


@register_method("ia3")
class IA3(PeftArtifact, AdaptMethod):
    help = "learned rescaling of keys, values and feed-forward activations (peft (IA)^3)"
    kinds = TEXT_KINDS
    default_lr = 3e-3  # the paper's 3e-3 (T-Few)

    def check(self, family: str, kind: str, opts: Any) -> None:
        if family not in IA3_TARGETS:
            raise SelfsupError(f"--method ia3: model type {family!r} is not supported "
                               f"(supported: {', '.join(sorted(IA3_TARGETS))})")

    def peft_config(self, model, kind: str, opts: Any, common: dict[str, Any]):
        import peft

        family = model.config.model_type
        targets, feedforward = IA3_TARGETS[family]
        return peft.IA3Config(target_modules=targets, feedforward_modules=feedforward,
                              fan_in_fan_out=family == "gpt2", **common)
