"""Tabular data: CSV / TSV (optionally .gz), Parquet, `.npz` (`x` and optionally `y`, its label column), Hugging Face data sets
(`hf:NAME[:CONFIG][@SPLIT]`) and the embedded `sklearn:breast_cancer[@train|@test]` (data/builtin.py's split).

`data.columns` chooses the feature columns (default: every column but the label column, when the table has
one). String (and categorical / boolean-as-string) columns are one-hot encoded; numeric columns are imputed
(`data.impute: mean | median | none`) and standardized. `TablePreprocessor` holds everything fitted on the
training table (columns, categories, fill values, means and scales); it is saved as `preprocessing.json` next
to the weights and reapplied unchanged at scoring time.

`sklearn:breast_cancer` is the Wisconsin diagnostic breast cancer table (569 rows x 30 numeric features). In
scikit-learn's `target` 0 means *malignant* and 1 benign; selfsup's `label` column flips it, so `label` 1 =
malignant (the "anomaly" of the anomaly-detection benchmark) and 0 = benign.

Every bad table is a one-line `SelfsupError` naming the file (and column / row): an unreadable or empty
file, no numeric feature column, a missing value without imputation, an unknown column, and at scoring time a
table that lacks a column the model was fitted on.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from selfsup.config import bounded
from selfsup.data.builtin import parse_builtin, split_rows
from selfsup.errors import SelfsupError

BREAST_CANCER = "sklearn:breast_cancer"
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


@dataclasses.dataclass
class TableDataConfig:
    """How a table becomes examples (the recipe's `data:` section for table objectives)."""

    columns: list[str] | str | None = None  # feature columns, a list or "a,b,c"; null = all but label_column
    label_column: str | None = "label"  # excluded from the features when present (1 = anomaly for scoring)
    impute: Literal["mean", "median", "none"] = "mean"
    standardize: bool = True
    holdout_fraction: float = bounded(0.1, ge=0, lt=0.5, doc="rows kept out for the held-out loss")
    max_categories: int = bounded(50, gt=0, doc="a string column with more distinct values is refused")
    categorical: list[str] | str | None = None  # columns one-hot encoded even if most values look like numbers

    def feature_columns(self) -> list[str] | None:
        if self.columns is None:
            return None
        cols = column_names(self.columns)
        if not cols:
            raise SelfsupError("data.columns: no column named")
        return cols


# ---- reading --------------------------------------------------------------------------------------------

def _breast_cancer(split: str | None):
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    rows = split_rows(d.target, split)
    frame = pd.DataFrame(d.data[rows], columns=[str(c) for c in d.feature_names])
    frame["label"] = (d.target[rows] == 0).astype(np.int64)  # sklearn: 0 = malignant; here 1 = malignant
    return frame


def _npz(path: Path):
    import pandas as pd

    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise SelfsupError(f"{path}: an .npz table needs an array named x (found {', '.join(z.files)})")
            x, y = np.asarray(z["x"]), (np.asarray(z["y"]) if "y" in z.files else None)
    except SelfsupError:
        raise
    except Exception as e:
        raise SelfsupError(f"{path}: cannot read .npz ({type(e).__name__}: {str(e)[:120]})") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise SelfsupError(f"{path}: x must be a (rows, features) array, got shape {x.shape}")
    frame = pd.DataFrame(x.astype(np.float64) if x.dtype.kind in "biuf" else x,
                         columns=[f"x{i}" for i in range(x.shape[1])])
    if y is not None:
        if len(y) != len(x):
            raise SelfsupError(f"{path}: y has {len(y)} rows, x has {len(x)}")
        frame["y"] = y
        frame.attrs["label_column"] = "y"  # an .npz table's labels are its y, whatever data.label_column says
    return frame


def read_table(source: str):
    """One source as a pandas DataFrame (columns named by strings)."""
    import pandas as pd

    builtin, split = parse_builtin(source, BREAST_CANCER)
    if builtin:
        return _breast_cancer(split)
    if source.startswith("hf:"):
        from selfsup.data.hub import load_hub

        frame = load_hub(source, streaming=False).to_pandas()
    else:
        path = Path(source)
        if not path.is_file():
            raise SelfsupError(f"{source}: no such file (a .csv, .tsv, .parquet or .npz table, hf:NAME or "
                               f"{BREAST_CANCER}[@train|@test])")
        suffixes = [s.lower() for s in path.suffixes]
        main = suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else \
            (suffixes[-1] if suffixes else "")
        try:
            if main == ".npz":
                frame = _npz(path)
            elif main in (".parquet", ".pq"):
                frame = pd.read_parquet(path)
            elif main in TEXT_SUFFIXES:
                frame = pd.read_csv(path, sep=TEXT_SUFFIXES[main])
            else:
                raise SelfsupError(f"{source}: unknown table format {main or '(no suffix)'!r} "
                                   "(expected .csv, .tsv, .parquet or .npz)")
        except SelfsupError:
            raise
        except pd.errors.EmptyDataError:
            raise SelfsupError(f"{source}: empty table (no header, no rows)") from None
        except UnicodeDecodeError as e:
            raise SelfsupError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except Exception as e:
            first = str(e).splitlines()[0][:160] if str(e) else ""
            raise SelfsupError(f"{source}: unreadable table ({type(e).__name__}: {first})") from None
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise SelfsupError(f"{source}: empty table (no rows)")
    return frame


def label_in(frame, name: str | None) -> str | None:
    """The table's label column: `name` when the table has it, else the one its format names (.npz: y)."""
    if name and name in frame.columns:
        return name
    fallback = frame.attrs.get("label_column")
    return fallback if fallback in frame.columns else None


def row_name(source: str, i: int) -> str:
    """Where row i (0-based data row) of `source` is, for messages: text tables also give the line."""
    suffixes = [s.lower() for s in Path(source).suffixes]
    if any(s in TEXT_SUFFIXES for s in suffixes):
        return f"row {i + 1} (line {i + 2})"
    return f"row {i + 1}"


def read_tables(sources: Sequence[str]):
    """Several sources with the same columns, stacked; returns (frame, [(source, first row, n rows)])."""
    import pandas as pd

    if not sources:
        raise SelfsupError("data: no table given")
    frames, spans, start = [], [], 0
    for s in sources:
        f = read_table(str(s))
        if frames and list(f.columns) != list(frames[0].columns):
            raise SelfsupError(f"{s}: columns {list(f.columns)[:8]} differ from {sources[0]}'s "
                               f"{list(frames[0].columns)[:8]}")
        frames.append(f)
        spans.append((str(s), start, len(f)))
        start += len(f)
    if len(frames) == 1:
        return frames[0], spans
    combined = pd.concat(frames, ignore_index=True)
    combined.attrs = dict(frames[0].attrs)  # the format's label column (.npz: y)
    return combined, spans


def locate(spans: list[tuple[str, int, int]], i: int) -> str:
    for source, start, n in spans:
        if start <= i < start + n:
            return f"{source}: {row_name(source, i - start)}"
    return f"row {i + 1}"


def column_names(value: list[str] | str | None) -> list[str]:
    """Column names from a list or a comma-separated string (`data.columns`, `data.categorical`)."""
    if value is None:
        return []
    return [str(c).strip() for c in (value.split(",") if isinstance(value, str) else value) if str(c).strip()]


def _check_not_numeric_with_typos(column, name: str, spans: list[tuple[str, int, int]]) -> None:
    """A string column whose values are mostly numbers holds typos (`oops` in a column of floats), not
    categories: a one-line error naming the first bad cell, unless `data.categorical` names the column."""
    import pandas as pd

    present = column.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    if len(present) and numbers.notna().mean() >= 0.5:
        bad = numbers[numbers.isna()].index[0]
        raise SelfsupError(f"{locate(spans, int(bad))}: column {name!r}: {str(column[bad])[:40]!r} is not a number "
                           f"though {int(numbers.notna().sum())} of its {len(present)} values are (fix or empty the "
                           f"cell; data.categorical={name} one-hot encodes the column instead)")


# ---- preprocessing --------------------------------------------------------------------------------------

@dataclasses.dataclass
class TablePreprocessor:
    """What was fitted on the training table: feature columns (numeric and categorical with their
    categories), per-column fill values, and the mean / scale of every numeric output feature."""

    numeric: list[str]
    categorical: dict[str, list[str]]
    fill: dict[str, float | None]
    mean: list[float]
    scale: list[float]
    label_column: str | None = None
    impute: str = "mean"

    @property
    def columns(self) -> list[str]:
        return self.numeric + list(self.categorical)

    @property
    def feature_names(self) -> list[str]:
        return self.numeric + [f"{c}={v}" for c, cats in self.categorical.items() for v in cats]

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    @classmethod
    def fit(cls, frame, cfg: TableDataConfig, spans: list[tuple[str, int, int]]) -> "TablePreprocessor":
        import pandas as pd
        from sklearn.preprocessing import StandardScaler

        where = spans[0][0] if len(spans) == 1 else "data"
        label = label_in(frame, cfg.label_column)
        wanted = cfg.feature_columns()
        if wanted is None:
            wanted = [c for c in frame.columns if c != label]
        else:
            unknown = [c for c in wanted if c not in frame.columns]
            if unknown:
                raise SelfsupError(f"{where}: data.columns: unknown column {unknown[0]!r} (the table has "
                                   f"{', '.join(list(frame.columns)[:12])})")
        numeric = [c for c in wanted if pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])]
        if not numeric:
            raise SelfsupError(f"{where}: no numeric feature column among {', '.join(wanted[:12])}")
        categorical = {}
        forced = set(column_names(cfg.categorical))
        for c in wanted:
            if c in numeric:
                continue
            if c not in forced:
                _check_not_numeric_with_typos(frame[c], c, spans)
            values = frame[c].dropna().astype(str)
            cats = sorted(values.unique().tolist())
            if len(cats) > cfg.max_categories:
                raise SelfsupError(f"{where}: column {c!r} has {len(cats)} distinct strings (> data.max_categories"
                                   f"={cfg.max_categories}); choose columns with data.columns")
            categorical[c] = cats
        values = frame[numeric].astype(np.float64)
        fill: dict[str, float | None] = {}
        for c in numeric:
            col = values[c]
            if cfg.impute == "none":
                fill[c] = None
            elif col.notna().any():
                fill[c] = float(col.mean() if cfg.impute == "mean" else col.median())
            else:
                raise SelfsupError(f"{where}: column {c!r} has no value to impute from (every row is missing)")
        pre = cls(numeric, categorical, fill, [], [], cfg.label_column, cfg.impute)
        x = pre.numeric_block(frame, spans)
        if cfg.standardize:
            scaler = StandardScaler().fit(x)  # a zero-variance column gets scale 1
            pre.mean, pre.scale = scaler.mean_.tolist(), scaler.scale_.tolist()
        else:
            pre.mean, pre.scale = [0.0] * len(numeric), [1.0] * len(numeric)
        return pre

    def numeric_block(self, frame, spans: list[tuple[str, int, int]]) -> np.ndarray:
        import pandas as pd

        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            where = spans[0][0] if len(spans) == 1 else "data"
            raise SelfsupError(f"{where}: column {missing[0]!r} is missing (the model was fitted on columns "
                               f"{', '.join(self.columns[:12])})")
        out = np.empty((len(frame), len(self.numeric)), dtype=np.float64)
        for j, c in enumerate(self.numeric):
            col = pd.to_numeric(frame[c], errors="coerce") if not pd.api.types.is_numeric_dtype(frame[c]) \
                else frame[c].astype(np.float64)
            bad = col.isna().to_numpy() & frame[c].notna().to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise SelfsupError(f"{locate(spans, i)}: column {c!r} holds {frame[c].iloc[i]!r}, not a number")
            v = col.to_numpy(dtype=np.float64)
            nan = ~np.isfinite(v)
            if nan.any():
                i = int(np.flatnonzero(nan)[0])
                if self.fill.get(c) is None or np.isinf(v[i]):
                    what = "an infinite value" if np.isinf(v[i]) else "a missing value"
                    raise SelfsupError(f"{locate(spans, i)}: column {c!r} holds {what} (set data.impute=mean or "
                                       "median, or fix the table)")
                v = np.where(nan, self.fill[c], v)
            out[:, j] = v
        return out

    def transform(self, frame, spans: list[tuple[str, int, int]]) -> np.ndarray:
        """(rows, dim) float32: standardized numeric columns, then one-hot blocks (unseen category = zeros)."""
        x = (self.numeric_block(frame, spans) - np.asarray(self.mean)) / np.asarray(self.scale)
        blocks = [x]
        for c, cats in self.categorical.items():
            index = {v: k for k, v in enumerate(cats)}
            codes = np.array([index.get(str(v), -1) if v == v and v is not None else -1 for v in frame[c]])
            onehot = np.zeros((len(frame), len(cats)))
            rows = np.flatnonzero(codes >= 0)
            onehot[rows, codes[rows]] = 1.0
            blocks.append(onehot)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def inverse_numeric(self, x: np.ndarray) -> np.ndarray:
        """The numeric block of transformed rows back in the table's units (undo the standardization)."""
        k = len(self.numeric)
        return np.asarray(x)[:, :k] * np.asarray(self.scale) + np.asarray(self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"modality": "table", **dataclasses.asdict(self), "feature_names": self.feature_names}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TablePreprocessor":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def labels_of(frame, column: str | None, spans: list[tuple[str, int, int]]) -> np.ndarray | None:
    """The 0/1 anomaly labels of `column` (1 = anomaly; booleans allowed), None when the column is absent."""
    if not column or column not in frame.columns:
        return None
    col = frame[column]
    try:
        y = col.astype(np.float64).to_numpy()
    except (TypeError, ValueError):
        y = np.full(len(col), np.nan)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SelfsupError(f"{locate(spans, i)}: label column {column!r} holds {col.iloc[i]!r} (expected 0 = normal "
                           "or 1 = anomaly)")
    return y.astype(np.int64)


@dataclasses.dataclass
class TableSet:
    """A preprocessed table: features (rows, dim) float32, labels (-1 = unknown), the fitted preprocessor."""

    x: np.ndarray
    labels: np.ndarray
    preprocessor: TablePreprocessor


def load_table(sources: Sequence[str], cfg: TableDataConfig,
               preprocessor: TablePreprocessor | None = None) -> TableSet:
    """Read, validate and preprocess; fits the preprocessor unless one is given (scoring time)."""
    frame, spans = read_tables(sources)
    pre = preprocessor or TablePreprocessor.fit(frame, cfg, spans)
    x = pre.transform(frame, spans)
    y = labels_of(frame, label_in(frame, pre.label_column or cfg.label_column), spans)
    return TableSet(x, y if y is not None else np.full(len(x), -1, np.int64), pre)


class TableExamples(Sequence):
    """The examples the engine streams: (feature row float32, label or -1) for a subset of a TableSet."""

    def __init__(self, data: TableSet, indices: np.ndarray):
        self.data, self.indices = data, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        j = int(self.indices[i])
        return self.data.x[j], int(self.data.labels[j])
