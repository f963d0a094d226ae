"""The objective contract every method follows (any modality).

An objective is an `nn.Module` that owns its model(s) — backbone, heads, momentum teachers, target makers —
and knows how to turn raw examples into batches:

* `prepare(recipe, sources)` (classmethod) reads and caches the data, returning `Prepared` with the training
  and held-out example sets. It runs before anything is written to the output folder, so bad input leaves
  no trace.
* `make_batch(examples, rngs)` draws the pretext corruption (one numpy Generator per example, seeded from the
  example's global position, so resume and data-parallel runs see identical noise) and collates tensors.
* `forward(batch)` returns `{"loss": tensor, **metrics}`.
* `export(folder)` writes the model in Hugging Face format.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch

from selfsup.errors import SelfsupError


def split_indices(n: int, fraction: float, seed: int, what: str = "example") -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train / held-out split of n examples, at least one of each when fraction > 0 (the same
    split for every run with the same seed, whatever the modality)."""
    if n < (2 if fraction > 0 else 1):
        raise SelfsupError(f"data: {n} {what}(s) is too few for a training and a held-out split "
                           "(add data, or lower data.block_size for text)")
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    n_hold = min(max(1, math.ceil(fraction * n)), n - 1) if fraction > 0 else 0
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


@dataclasses.dataclass
class Prepared:
    """What `prepare` hands the engine: example sets plus anything the model needs to be built (tokenizer)."""

    train: Sequence[Any]
    heldout: Sequence[Any]
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


class Objective(torch.nn.Module, abc.ABC):
    name: str = ""
    modality: str = ""
    default_backbone: str = ""
    # a metric from forward() that counts work items (tokens, frames, images) for throughput
    count_key: str = "n_tokens"

    @dataclasses.dataclass
    class Options:
        pass

    def __init__(self, recipe, prepared: Prepared):
        super().__init__()
        self.recipe = recipe
        self.options = recipe.objective
        self.prepared = prepared

    @classmethod
    @abc.abstractmethod
    def data_config_class(cls) -> type:
        """The dataclass that validates the recipe's `data:` section."""

    @classmethod
    def check_recipe(cls, recipe) -> None:
        """Cross-section checks (e.g. block size vs. position embeddings); raise SelfsupError."""

    @classmethod
    @abc.abstractmethod
    def prepare(cls, recipe, sources: list[str]) -> Prepared:
        """Read, validate and cache the data; return the training and held-out examples."""

    @abc.abstractmethod
    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        """Draw each example's pretext noise from its generator and collate tensors."""

    def heldout_summary(self, heldout: dict[str, float]) -> dict[str, float]:
        """Extra held-out numbers derived from the held-out means (perplexity for language models)."""
        return {}

    def on_micro_step(self, micro_step: int) -> None:
        """Before each training micro-batch: its index in the step-indexed stream, the same on every rank
        (image views draw their parameters for the global micro-batch from it)."""

    def on_step_end(self, step: int, max_steps: int) -> None:
        """After each optimizer step: momentum updates, schedules (BYOL, MoCo, data2vec)."""

    def callbacks(self) -> list:
        """Extra Lightning callbacks this objective wants (e.g. an online linear probe)."""
        return []

    @abc.abstractmethod
    def export(self, folder) -> None:
        """Write the model in Hugging Face format into `folder`."""
