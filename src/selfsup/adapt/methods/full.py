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
    default_lr = 1e-4
    image_lr = 1e-3
