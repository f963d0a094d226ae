"""Hugging Face data sets named `hf:NAME[:CONFIG][@SPLIT][?data_files=FILE[,FILE...]]`, for every modality (never
trust_remote_code). `data_files` goes to `datasets.load_dataset` as is (globs allowed), e.g.
`hf:json@train?data_files=notes/*.jsonl` or `hf:csv?data_files=a.csv,b.csv` (quote it in a shell).

Loading or streaming failures (network, missing data set, bad config) become one-line `SelfsupError`s.
"""
from __future__ import annotations

from typing import Any, Iterator

from selfsup.errors import SelfsupError


def _failed(spec: str, e: Exception) -> SelfsupError:
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return SelfsupError(f"{spec}: cannot load data set ({type(e).__name__}: {first})")


def parse_hub_spec(spec: str) -> tuple[str, str, str, list[str]]:
    """`hf:NAME[:CONFIG][@SPLIT][?data_files=A,B]` -> (name, config, split, data files); '' where absent."""
    body, _, query = spec.removeprefix("hf:").partition("?")
    data_files: list[str] = []
    if query:
        key, eq, value = query.partition("=")
        if key != "data_files" or not eq or not value:
            raise SelfsupError(f"{spec}: after '?' expected data_files=FILE[,FILE...], got {query!r}")
        data_files = [f for f in value.split(",") if f]
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    if not name:
        raise SelfsupError(f"{spec}: no data set name (expected hf:NAME[:CONFIG][@SPLIT][?data_files=...])")
    return name, config, split, data_files


def load_hub(spec: str, streaming: bool = True) -> Any:
    """The `datasets` data set (or streaming iterable) that `spec` names; the split defaults to train."""
    try:
        import datasets
    except ImportError:
        raise SelfsupError(f"{spec}: Hugging Face data sets need `pip install datasets`") from None
    name, config, split, data_files = parse_hub_spec(spec)
    try:
        return datasets.load_dataset(name, config or None, split=split or "train", streaming=streaming,
                                     **({"data_files": data_files} if data_files else {}))
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
