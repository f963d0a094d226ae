"""Examples of similar length side by side, so that right padding to the longest of a batch wastes few positions:
length-grouped training order (the `group_by_length` key; Hugging Face's `LengthGroupedSampler` grouping, then a
shuffled batch order) and length-sorted inference batches whose results go back to input order."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def feature_lengths(feats: Sequence) -> list[int] | None:
    """Each feature's token count (its `input_ids`), or None when the features are not token sequences
    (images, audio clips): those keep the plain random order."""
    lengths = []
    for f in feats:
        ids = f.get("input_ids") if isinstance(f, dict) else None
        if not isinstance(ids, (list, tuple)):
            return None
        lengths.append(len(ids))
    return lengths


def length_grouped_order(lengths: Sequence[int], batch_size: int, generator) -> np.ndarray:
    """One epoch's order of the examples (a permutation) in which each run of `batch_size` consecutive positions
    holds examples of similar length: transformers' `get_length_grouped_indices` (a random permutation cut into
    megabatches of up to 50 batches, each sorted by length, the batch holding the longest example first so an
    out-of-memory error shows at the first step), then the order of the other full batches shuffled (so the
    lengths of consecutive steps do not run from long to short within each megabatch); a last partial batch
    stays last. Every draw comes from the torch `generator`: the order is a function of its seed."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order = np.asarray(get_length_grouped_indices(list(lengths), batch_size, generator=generator), dtype=np.int64)
    full = len(order) // batch_size
    if full > 2:
        rest = 1 + torch.randperm(full - 1, generator=generator).numpy()
        blocks = [order[:batch_size]] + [order[b * batch_size:(b + 1) * batch_size] for b in rest]
        order = np.concatenate(blocks + [order[full * batch_size:]])
    return order


def length_sorted_positions(feats: Sequence) -> list[int]:
    """Positions of `feats` from the longest to the shortest (a stable sort: equal lengths keep input order),
    for inference batches padded to little more than their own length; identity when lengths are unknown."""
    lengths = feature_lengths(feats)
    if lengths is None:
        return list(range(len(feats)))
    return sorted(range(len(feats)), key=lambda i: -lengths[i])
