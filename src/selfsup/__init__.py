"""selfsup: self-supervised pretraining, adaptation and evaluation for every modality.

The Python API mirrors the CLI; heavy libraries (torch, transformers, lightning) are imported on first use.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["pretrain", "finetune", "evaluate", "predict", "probe", "embed", "incontext", "distill", "prune",
           "early_exit", "benchmark", "load_recipe", "list_recipes", "SelfsupError", "AutoEncoderDetector"]

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


def finetune(model: str, task: str, train: Any, eval: Any, out: str, **kwargs: Any) -> dict:
    """`selfsup finetune`: same arguments (method=, init=, shots=, seeds=, overrides=[...], ...). `train` and
    `eval` are files, `hf:` names, or in memory: a list of dicts, a pandas DataFrame, a `datasets.Dataset`."""
    from selfsup.adapt.core.run import finetune as _f

    return _f(model, task, train, eval, out, **kwargs)


def evaluate(model: str, eval: Any, out: str | None = None, **kwargs: Any) -> dict:
    """`selfsup evaluate --model FINETUNED --eval DATA`: the task metrics of a fine-tuned model."""
    from selfsup.adapt.core.evaluation import evaluate_finetuned as _f

    return _f(model, eval, out, **kwargs)


def predict(model: str, data: Any, **kwargs: Any) -> list[dict]:
    """`selfsup predict`: one prediction dict per example of `data` (a file or in-memory rows)."""
    from selfsup.adapt.core.evaluation import predict as _f

    return list(_f(model, data, **kwargs))


def probe(model: str, probe: str, train: list[str], eval: list[str], out: str | None = None, **kwargs: Any) -> dict:
    """`selfsup evaluate --probe linear|knn`: a probe on an image encoder's frozen features."""
    from selfsup.evaluation.cli import evaluate as _f

    return _f(model, probe, train, eval, out, **kwargs)


def embed(model: str, source: str, out: str, **kwargs: Any) -> dict:
    """`selfsup embed`: contextual sentence or token embeddings."""
    from selfsup.adapt.tools.embed import embed as _f

    return _f(model, source, out, **kwargs)


def incontext(model: str, task: str, train: Any, eval: Any, **kwargs: Any) -> dict:
    """`selfsup incontext`: in-context learning with a causal LM, no training."""
    from selfsup.adapt.tools.incontext import incontext as _f

    return _f(model, task, train, eval, **kwargs)


def distill(teacher: str, student: str | None, train: Any, eval: Any, out: str, **kwargs: Any) -> dict:
    """`selfsup distill`: a fine-tuned teacher into a smaller student."""
    from selfsup.adapt.tools.distill import distill as _f

    return _f(teacher, student, train, eval, out, **kwargs)


def prune(model: str, eval: Any, out: str, **kwargs: Any) -> dict:
    """`selfsup prune`: structured pruning of heads or layers."""
    from selfsup.adapt.tools.prune import prune as _f

    return _f(model, eval, out, **kwargs)


def early_exit(model: str, eval: Any, out: str, **kwargs: Any) -> dict:
    """`selfsup early-exit`: the exit-threshold sweep of a `--method early-exit` model."""
    from selfsup.adapt.tools.exit_sweep import exit_sweep as _f

    return _f(model, eval, out, **kwargs)


def benchmark(suite: str, out: str | None = None, **kwargs: Any) -> dict:
    """`selfsup benchmark SUITE.yaml`: tasks x models x inits."""
    from selfsup.adapt.tools.suite import run_suite as _f

    return _f(suite, out, **kwargs)


def __getattr__(name: str) -> Any:
    """`selfsup.AutoEncoderDetector` (anomaly detection on tables, pyod interface), imported on first use."""
    if name == "AutoEncoderDetector":
        from selfsup.adapt.tools.anomaly import AutoEncoderDetector

        return AutoEncoderDetector
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")
