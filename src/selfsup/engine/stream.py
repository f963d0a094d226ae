"""A deterministic, step-indexed example stream.

Micro-batch m of rank r holds the examples at global positions m*B*W + r*B ... + B-1 (B = per-device micro
batch, W = world size); position k is example perm_e[k mod n] of epoch e = k div n, with perm_e a seeded
permutation. Each example's pretext noise is drawn from a Generator seeded by (seed, k). Hence a resumed run
continues exactly where it stopped, and W processes see the same examples and noise as one process with the
same global batch. (Hand-written: Lightning's samplers restart epochs on resume and reshuffle per rank.)
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

TRAIN, HELDOUT = 0, 1


def example_rng(seed: int, stream: int, position: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, position])


class StepBatches:
    """Yields lists of (example index, global position, micro-batch index); endless for training."""

    def __init__(self, n_examples: int, micro_batch: int, world: int, rank: int, seed: int,
                 start: Callable[[], int] = lambda: 0, shuffle: bool = True, limit: int | None = None):
        self.n, self.b, self.world, self.rank, self.seed = n_examples, micro_batch, world, rank, seed
        self.start, self.shuffle, self.limit = start, shuffle, limit
        self._epoch, self._perm = -1, np.arange(0)

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, 2, epoch]).permutation(self.n)
        return int(self._perm[offset])

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        m = self.start()
        end = None if self.limit is None else m + self.limit
        while end is None or m < end:
            first = m * self.b * self.world + self.rank * self.b
            yield [(self.index(k), k, m) for k in range(first, first + self.b)]
            m += 1

    def __len__(self) -> int:
        if self.limit is None:
            raise TypeError("an endless stream has no length")
        return self.limit


class Keyed(torch.utils.data.Dataset):
    def __init__(self, examples: Sequence[Any]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Any, int, int]:
        index, position, micro = key
        return self.examples[index], position, micro


class ExampleRngs(Sequence):
    """The examples' Generators, each made on first use (building one costs ~30-60 us, and methods that draw
    their noise in `forward` never use them); a Generator is kept once made, so repeated access continues its
    stream exactly as a list of Generators would."""

    def __init__(self, seed: int, stream: int, positions: list[int]):
        self.seed, self.stream, self.positions = seed, stream, positions
        self.made: dict[int, np.random.Generator] = {}

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        if i not in self.made:
            self.made[i] = example_rng(self.seed, self.stream, self.positions[i])
        return self.made[i]


class Collate:
    """Draws each example's pretext noise from its own seeded Generator and collates with the objective."""

    def __init__(self, objective, seed: int, stream: int):
        self.objective, self.seed, self.stream = objective, seed, stream

    def __call__(self, items: list[tuple[Any, int, int]]) -> dict[str, Any]:
        batch = self.objective.make_batch([e for e, _, _ in items],
                                          ExampleRngs(self.seed, self.stream, [k for _, k, _ in items]))
        batch["micro_step"] = torch.tensor(items[0][2])
        return batch


def make_loader(objective, examples: Sequence[Any], sampler: StepBatches, seed: int, stream: int,
                num_workers: int = 0) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(Keyed(examples), batch_sampler=sampler, collate_fn=Collate(objective, seed, stream),
                                       num_workers=num_workers, persistent_workers=num_workers > 0)
