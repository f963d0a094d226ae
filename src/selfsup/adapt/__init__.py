"""The adaptation side: fine-tune any checkpoint (a selfsup run or a local HF folder) with few labels and few
trainable parameters, evaluate, predict, and the tools over it (distill, prune, early-exit sweep, in-context
learning, embeddings, suites).

Layout (arrows point down only): `core/` (task kinds, features, the one fitting loop, evaluation, run
scaffolding, artifacts, encoders) <- `registry.py` <- `shared/` (what two methods share: peft wrapping,
Houlsby adapters, prompts, exit heads, layer surgery) <- `methods/` (one file per method) <- `tools/` <-
`cli.py`. The functions below are the Python API; heavy libraries load on first use."""
from __future__ import annotations

from typing import Any


def finetune(*args: Any, **kwargs: Any) -> dict:
    """`selfsup finetune` (see `selfsup.adapt.core.run.finetune`)."""
    from selfsup.adapt.core.run import finetune as _f

    return _f(*args, **kwargs)


def evaluate_finetuned(*args: Any, **kwargs: Any) -> dict:
    """`selfsup evaluate --model FINETUNED --eval DATA` (see `selfsup.adapt.core.evaluation`)."""
    from selfsup.adapt.core.evaluation import evaluate_finetuned as _f

    return _f(*args, **kwargs)


def predict(*args: Any, **kwargs: Any):
    """`selfsup predict`: an iterator of one prediction dict per example."""
    from selfsup.adapt.core.evaluation import predict as _f

    return _f(*args, **kwargs)


def load_shared(*args: Any, **kwargs: Any):
    """Several task artifacts on one backbone instance: (model, tokenizer, {name: task info})."""
    from selfsup.adapt.shared.shared_backbone import load_shared as _f

    return _f(*args, **kwargs)


def use_task(*args: Any, **kwargs: Any) -> None:
    """Make one task of a `load_shared` model the active one."""
    from selfsup.adapt.shared.shared_backbone import use_task as _f

    return _f(*args, **kwargs)
