"""selfsup: self-supervised pretraining, adaptation and evaluation for every modality.

The Python API mirrors the CLI; heavy libraries (torch, transformers, lightning) are imported on first use.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["pretrain", "load_recipe", "list_recipes", "SelfsupError"]

from selfsup.errors import SelfsupError


def pretrain(recipe: str, data: list[str], out: str, **kwargs: Any) -> dict:
    """Pretrain with RECIPE on DATA into OUT; same arguments as `selfsup pretrain`. Returns metrics.json's dict."""
    from selfsup.engine.pretrain import pretrain as _pretrain

    return _pretrain(recipe, data, out, **kwargs)


def load_recipe(recipe: str, overrides: list[str] | None = None):
    """Load and validate a recipe by name or YAML path, with `key=value` overrides."""
    from selfsup.recipes import load_recipe as _load

    return _load(recipe, overrides or [])


def list_recipes() -> dict[str, str]:
    """Recipe name -> one-line description."""
    from selfsup.recipes import list_recipes as _list

    return _list()
