"""Named splits of the embedded scikit-learn sets: `sklearn:NAME[@train|@test]`.

`@train` and `@test` are one fixed, stratified 75 / 25 split (scikit-learn's `train_test_split` defaults,
`random_state=0`), the same on every machine and in every verb, so a probe can be fitted on `@train` and scored on
`@test` without the two sharing a row. No split (`sklearn:digits`) means every row, as before.
"""
from __future__ import annotations

import numpy as np

from selfsup.errors import SelfsupError

SPLITS = ("train", "test")
TEST_FRACTION = 0.25


def parse_builtin(spec: str, name: str) -> tuple[bool, str | None]:
    """(whether `spec` names the built-in set `name`, its split or None)."""
    body, at, split = spec.partition("@")
    if body != name:
        return False, None
    if not at:
        return True, None
    if split not in SPLITS:
        raise SelfsupError(f"{spec}: unknown split {split!r} (expected {name}@train or {name}@test)")
    return True, split


def is_builtin(spec: str, name: str) -> bool:
    return spec.partition("@")[0] == name


def split_rows(labels: np.ndarray, split: str | None) -> np.ndarray:
    """Row indices of `split` (all rows for None), in their original order."""
    if split is None:
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, random_state=0,
                                   stratify=labels)
    return np.sort(train if split == "train" else test)
