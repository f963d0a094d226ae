"""Hugging Face data sets named `hf:NAME[:CONFIG][@SPLIT]`, for every modality (never trust_remote_code).

Loading or streaming failures (network, missing data set, bad config) become one-line `SelfsupError`s.
"""
from __future__ import annotations

from typing import Any, Iterator

from selfsup.errors import SelfsupError


def _failed(spec: str, e: Exception) -> SelfsupError:
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return SelfsupError(f"{spec}: cannot load data set ({type(e).__name__}: {first})")


def load_hub(spec: str, streaming: bool = True) -> Any:
    """The `datasets` data set (or streaming iterable) that `spec` names; the split defaults to train."""
    try:
        import datasets
    except ImportError:
        raise SelfsupError(f"{spec}: Hugging Face data sets need `pip install datasets`") from None
    body, _, split = spec.removeprefix("hf:").partition("@")
    name, _, config = body.partition(":")
    try:
        return datasets.load_dataset(name, config or None, split=split or "train", streaming=streaming)
    except Exception as e:
        raise _failed(spec, e) from None


def hub_rows(spec: str, dataset: Any = None) -> Iterator[tuple[str, dict]]:
    """(`SPEC row I`, row) for each row, streamed unless a loaded `dataset` is given."""
    rows = iter(load_hub(spec) if dataset is None else dataset)
    i = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:  # a stream can fail half-way
            raise _failed(spec, e) from None
        yield f"{spec} row {i}", dict(row)
        i += 1
