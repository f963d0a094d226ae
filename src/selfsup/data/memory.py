"""Rows given in memory — a list of dicts (or of plain texts), a pandas DataFrame, a `datasets.Dataset` — read
like the rows of a file, each named `<data>[i]` in error messages."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from selfsup.errors import SelfsupError


def is_in_memory(source: Any) -> bool:
    """Rows given in memory (a list of dicts or strings, a pandas DataFrame, a `datasets.Dataset`) rather
    than a file path or an `hf:` name."""
    return not isinstance(source, (str, Path))


def source_name(source: Any) -> str:
    """How an error message names a data source."""
    if not is_in_memory(source):
        return str(source)
    return f"<{type(source).__name__} of {len(source)} rows>" if hasattr(source, "__len__") else \
        f"<{type(source).__name__}>"


def memory_rows(source: Any) -> Iterator[tuple[str, dict]]:
    """(where, row) of in-memory data; `where` names the row (`<data>[i]`). A plain string is a `text`."""
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a pandas DataFrame
        rows: Any = source.to_dict("records")
    elif hasattr(source, "features") and hasattr(source, "column_names"):  # a datasets.Dataset
        rows = iter(source)
    elif isinstance(source, (list, tuple)) or hasattr(source, "__iter__"):
        rows = source
    else:
        raise SelfsupError(f"{source_name(source)}: not data (a file path, hf:NAME, a list of dicts, a "
                           "DataFrame or a datasets.Dataset)")
    for i, row in enumerate(rows):
        where = f"<data>[{i}]"
        if isinstance(row, str):
            row = {"text": row}
        if not isinstance(row, dict):
            raise SelfsupError(f"{where}: a row must be a dict (column -> value) or a text, got {type(row).__name__}")
        yield where, dict(row)
