"""Linear probing (Alain & Bengio 2016; the "feature-based" setting of BERT): the backbone is frozen and only
the task head trains — plus any layer the checkpoint did not provide, e.g. BERT's pooler on a masked-LM
checkpoint. Frozen BatchNorm layers keep their pretrained statistics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from selfsup.adapt.core.kinds import TASK_KINDS
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method


@register_method("linear")
class Linear(AdaptMethod):
    help = "frozen backbone, only the task head trains"
    kinds = TASK_KINDS
    default_lr = 1e-3
    image_lr = 1e-2

    def prepare(self, model, head: set[str], kind: str, opts: Any, source: Path) -> tuple[Any, int | None]:
        from selfsup.adapt.core.models import freeze_backbone

        freeze_backbone(model, head)
        return model, None
