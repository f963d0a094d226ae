"""Full fine-tuning (Devlin et al. 2019, "BERT"): every weight of the checkpoint and the new task head trains
on the labeled examples; the whole model is saved."""
from __future__ import annotations

from selfsup.adapt.core.kinds import TASK_KINDS
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method


@register_method("full")
class Full(AdaptMethod):
    help = "every weight trains (the whole model is saved)"
    kinds = TASK_KINDS
    default_lr = 1e-4  # at hidden 768; see text_lr
    image_lr = 1e-3
    table_lr = 3e-3  # the table auto-encoders' own pretraining lr; measured in bench/small_data_kinds.py

    def text_lr(self, model) -> float:
        """Fine-tuning lrs fall with the model's width — ELECTRA's (Clark et al. 2020, appendix table): 3e-4 at
        hidden 256, 1e-4 at 768, 5e-5 at 1024 — so the default is 1e-4 x 768 / hidden, within [2e-5, 1e-3]
        (6e-4 for a tiny hidden-128 model, 2e-4 for a MiniLM, 1e-4 for BERT-base; measured on small sets in
        bench/small_data_defaults.py)."""
        return width_scaled_lr(getattr(model.config, "hidden_size", None), self.default_lr)


def width_scaled_lr(hidden: int | None, lr_at_768: float) -> float:
    """lr_at_768 x 768 / hidden within [2e-5, 1e-3]; lr_at_768 when the width is unknown."""
    return lr_at_768 if not hidden else min(1e-3, max(2e-5, lr_at_768 * 768 / hidden))
