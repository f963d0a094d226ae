"""Houlsby adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"): a bottleneck
(down, GELU, up, residual) after the attention and feed-forward outputs of every layer of the frozen model;
adapters, layer norms and the head train. Hand-written (`selfsup.adapt.shared.adapters`): peft has none."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from selfsup.adapt.core.kinds import TEXT_KINDS
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method
from selfsup.config import bounded
from selfsup.errors import SelfsupError


@dataclasses.dataclass
class AdapterOptions:
    adapter_size: int = bounded(64, ge=1, doc="bottleneck width")


@register_method("adapter")
class Adapter(AdaptMethod):
    help = "Houlsby bottleneck adapters in every layer (hand-written; peft has none)"
    kinds = TEXT_KINDS
    default_lr = 1e-3
    Options = AdapterOptions
    needs_pretrained = True
    whole_model = False

    def check(self, family: str, kind: str, opts: Any) -> None:
        from selfsup.adapt.shared.adapters import SITES

        if family not in SITES:
            raise SelfsupError(f"--method adapter: model type {family!r} is not supported "
                               f"(supported: {', '.join(sorted(SITES))})")

    def prepare(self, model, head: set[str], kind: str, opts: Any, source: Path) -> tuple[Any, int | None]:
        from selfsup.adapt.shared.adapters import adapt

        backbone = sum(p.numel() for n, p in model.named_parameters() if n not in head)
        model.selfsup_adapters = adapt(model, head, opts.adapter_size)
        return model, backbone

    def save(self, model, folder: Path) -> int:
        from selfsup.adapt.shared.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, save_adapters

        save_adapters(model, Path(folder), model.selfsup_adapters)
        return sum((Path(folder) / f).stat().st_size for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))

    def load(self, folder: Path, info: dict, tokenizer) -> tuple[Any, Any]:
        from selfsup.adapt.shared.adapters import load_adapters
        from selfsup.adapt.shared.peft_tuning import base_for

        model = base_for(folder, info, tokenizer, self.name)
        load_adapters(model, folder)
        return model.eval(), tokenizer
