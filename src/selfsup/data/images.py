"""Image data: folders of PNG/JPG (class sub-folders = labels), `.npz` arrays, MNIST-format IDX files,
Hugging Face data sets (`hf:NAME[:CONFIG][@SPLIT]`) and the embedded `sklearn:digits`.

Every source is decoded once, resized to the recipe's `image_size` (square) and cached as one uint8
(N, C, S, S) `.npy` under `$SELFSUP_CACHE/images/<key>/` with the labels (-1 where unknown); later runs
memory-map it. Bad input is a `SelfsupError` naming the file: a corrupt image, an empty folder, mixed
channel counts (unless `data.channels` asks for a conversion), an `.npz` without `x`.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from selfsup.config import bounded
from selfsup.data.builtin import is_builtin, parse_builtin
from selfsup.data.corpus import fingerprint, cache_root
from selfsup.errors import SelfsupError
from selfsup.fileio import atomic_dir

DIGITS = "sklearn:digits"

FORMAT_VERSION = 1
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "La"}


@dataclasses.dataclass
class ImageDataConfig:
    """How images become examples (the recipe's `data:` section for image objectives)."""

    image_size: int = bounded(32, ge=4, doc="every image is resized to image_size x image_size")
    channels: int | None = bounded(None, doc="1 or 3 to convert every image; null = as the data (must agree)")
    holdout_fraction: float = bounded(0.1, ge=0, lt=0.5, doc="images kept out for held-out loss")
    image_column: str = "image"
    label_column: str = "label"
    max_images: int | None = bounded(None, gt=0, doc="read at most this many images (hub data sets)")

    def validate(self) -> None:
        if self.channels not in (None, 1, 3):
            raise SelfsupError(f"channels: must be 1, 3 or null, got {self.channels!r}")


@dataclasses.dataclass
class ImageSet:
    """Decoded, resized images (N, C, S, S uint8, usually memory-mapped) with labels (-1 = unlabelled)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    mean: list[float]
    std: list[float]

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[2])

    @property
    def has_labels(self) -> bool:
        return bool((np.asarray(self.labels) >= 0).any())

    @property
    def num_classes(self) -> int:
        return max(len(self.classes), int(np.max(self.labels)) + 1 if len(self.labels) else 0)


class ImageExamples(Sequence):
    """The examples the engine streams: (uint8 CHW image, label or -1) for a subset of an ImageSet."""

    def __init__(self, data: ImageSet, indices: np.ndarray):
        self.data, self.indices = data, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        j = int(self.indices[i])
        return np.array(self.data.images[j]), int(self.data.labels[j])


# ---- decoding -------------------------------------------------------------------------------------------

def _pil_channels(mode: str) -> int:
    return 1 if mode in _GRAY_MODES else 3


def _to_pil_array(img, channels: int, size: int) -> np.ndarray:
    """A PIL image -> (C, size, size) uint8."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _array_to_uint8(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if x.dtype == bool:
        return x.astype(np.uint8) * 255
    if not np.issubdtype(x.dtype, np.number):
        raise SelfsupError(f"{where}: images must be numbers, got dtype {x.dtype}")
    floats = np.issubdtype(x.dtype, np.floating)
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise SelfsupError(f"{where}: images contain NaN or infinite values")
    if x.min() < 0:
        raise SelfsupError(f"{where}: negative pixel values (expected 0..255, or 0..1 floats)")
    if x.max() <= 1.0:
        x = x * 255.0
    elif floats and x.max() <= 64:  # e.g. scikit-learn's raw digits (0..16): read as 0..255 they are near black
        import sys

        print(f"selfsup: warning: {where}: float pixels reach only {x.max():g}; read as 0..255 (rescale them to "
              "0..1 or 0..255 if that is not their scale)", file=sys.stderr)
    if x.max() > 255:
        raise SelfsupError(f"{where}: pixel values up to {x.max():g}; expected 0..255 (or 0..1 floats)")
    return np.rint(x).astype(np.uint8)


def _resize_array(x: np.ndarray, channels: int | None, size: int, where: str) -> np.ndarray:
    """(N,H,W) or (N,H,W,C) uint8 -> (N, C, size, size) uint8."""
    from PIL import Image

    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise SelfsupError(f"{where}: expected images of shape (N,H,W) or (N,H,W,C) with C in 1, 3, 4; "
                           f"got {tuple(x.shape)}")
    if x.shape[-1] == 4:
        x = x[..., :3]
    c = channels or x.shape[-1]
    out = np.empty((len(x), c, size, size), np.uint8)
    for i, a in enumerate(x):
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
        out[i] = _to_pil_array(img, c, size)
    return out


def _decode_file(path: Path, channels: int | None, size: int, first: tuple[Path, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            c = _pil_channels(img.mode)
            if channels is None and first is not None and c != first[1]:
                raise SelfsupError(f"{path}: {c}-channel image, but {first[0]} has {first[1]} "
                                   "(mixed channel counts; set data.channels: 1 or 3 to convert)")
            return _to_pil_array(img, channels or c, size)
    except SelfsupError:
        raise
    except Exception as e:  # PIL raises many types for truncated or non-image files
        raise SelfsupError(f"{path}: not a readable image ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else 'corrupt'})") from None


def _folder(path: Path, channels: int | None, size: int,
            first_label: int) -> tuple[list[np.ndarray], list[int], list[str]]:
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(path).parts))
    if not files:
        raise SelfsupError(f"{path}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    # class sub-folders = labels, when every image sits one level down
    labelled = all(len(f.relative_to(path).parts) == 2 for f in files)
    classes = sorted({f.relative_to(path).parts[0] for f in files}) if labelled else []
    index = {c: i for i, c in enumerate(classes)}
    images, labels, first = [], [], None
    for f in files:
        arr = _decode_file(f, channels, size, first)
        if first is None:
            first = (f, arr.shape[0])
        images.append(arr)
        labels.append(first_label + index[f.relative_to(path).parts[0]] if labelled else -1)
    return images, labels, classes


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise SelfsupError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SelfsupError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise SelfsupError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise SelfsupError(f"{path}: IDX header says {shape} ({int(np.prod(shape))} bytes) but holds {data.size}")
    return data.reshape(shape)


def _idx(path: Path, channels: int | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    x = _read_idx(path)
    if x.ndim not in (3, 4):
        raise SelfsupError(f"{path}: an IDX image file has 3 or 4 dimensions, got {x.ndim}")
    y = np.full(len(x), -1, np.int64)
    label_file = path.with_name(path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
    if label_file != path and label_file.is_file():
        y = _read_idx(label_file).astype(np.int64)
        if y.shape != (len(x),):
            raise SelfsupError(f"{label_file}: {len(y)} labels for {len(x)} images in {path}")
    return _resize_array(x, channels, size, str(path)), y


def _npz(path: Path, channels: int | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise SelfsupError(f"{path}: no array named 'x' (found: {', '.join(z.files) or 'none'})")
            x, y = z["x"], (z["y"] if "y" in z.files else None)
    except SelfsupError:
        raise
    except Exception as e:
        raise SelfsupError(f"{path}: not a readable .npz ({type(e).__name__}: {str(e)[:160]})") from None
    if x.ndim not in (3, 4) or len(x) == 0:
        raise SelfsupError(f"{path}: x must be (N,H,W) or (N,H,W,C) with N > 0, got shape {x.shape}")
    labels = np.full(len(x), -1, np.int64)
    if y is not None:
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise SelfsupError(f"{path}: y must be {len(x)} integer labels, got shape {y.shape} dtype {y.dtype}")
        labels = y.astype(np.int64)
    return _resize_array(_array_to_uint8(x, str(path)), channels, size, str(path)), labels


def _sklearn_digits(channels: int | None, size: int, split: str | None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    from selfsup.data.builtin import split_rows

    d = load_digits()
    rows = split_rows(d.target, split)
    x = np.rint(d.images[rows] * (255.0 / 16.0)).astype(np.uint8)
    return _resize_array(x, channels, size, "sklearn:digits"), d.target[rows].astype(np.int64)


def _hub(spec: str, cfg: ImageDataConfig) -> tuple[np.ndarray, np.ndarray]:
    from selfsup.data.hub import hub_rows

    try:
        images, labels, first = [], [], None
        for i, (_, row) in enumerate(hub_rows(spec)):
            if cfg.max_images is not None and i >= cfg.max_images:
                break
            if cfg.image_column not in row:
                raise SelfsupError(f"{spec} row {i}: no column {cfg.image_column!r} (set data.image_column; "
                                   f"columns: {', '.join(row)})")
            img = row[cfg.image_column]
            if isinstance(img, dict) and img.get("bytes") is not None:
                import io

                from PIL import Image
                img = Image.open(io.BytesIO(img["bytes"]))
            if not hasattr(img, "convert"):
                arr = _array_to_uint8(np.asarray(img), f"{spec} row {i}")
                a = _resize_array(arr[None], cfg.channels, cfg.image_size, f"{spec} row {i}")[0]
            else:
                c = _pil_channels(img.mode)
                if cfg.channels is None and first is not None and c != first:
                    raise SelfsupError(f"{spec} row {i}: {c}-channel image, but row 0 has {first} "
                                       "(mixed channel counts; set data.channels: 1 or 3 to convert)")
                a = _to_pil_array(img, cfg.channels or c, cfg.image_size)
            first = a.shape[0] if first is None else first
            images.append(a)
            label = row.get(cfg.label_column, -1)
            labels.append(int(label) if isinstance(label, (int, np.integer)) else -1)
    except SelfsupError:
        raise
    except Exception as e:  # network, missing data set, bad config: one line
        raise SelfsupError(f"{spec}: cannot load data set ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None
    if not images:
        raise SelfsupError(f"{spec}: empty (no images)")
    return np.stack(images), np.asarray(labels, np.int64)


def _is_idx(p: Path) -> bool:
    name = p.name.lower().removesuffix(".gz")
    return "idx3" in name or name.endswith(".idx")


def _read_source(s: str, cfg: ImageDataConfig, first_label: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    c, size = cfg.channels, cfg.image_size
    digits, split = parse_builtin(s, DIGITS)
    if digits:
        x, y = _sklearn_digits(c, size, split)
        return x, y, [str(i) for i in range(10)]
    if s.startswith("hf:"):
        x, y = _hub(s, cfg)
        return x, y, []
    p = Path(s)
    if p.is_dir():
        images, labels, classes = _folder(p, c, size, first_label)
        return np.stack(images), np.asarray(labels, np.int64), classes
    if not p.is_file():
        raise SelfsupError(f"{s}: no such file or folder")
    if p.suffix.lower() == ".npz":
        x, y = _npz(p, c, size)
    elif _is_idx(p):
        x, y = _idx(p, c, size)
    elif p.suffix.lower() in IMAGE_SUFFIXES:
        x, y = _decode_file(p, c, size, None)[None], np.full(1, -1, np.int64)
    else:
        raise SelfsupError(f"{p}: unknown image source (a folder of images, .npz with x[, y], an IDX "
                           "*-images-idx3-ubyte[.gz] file, hf:NAME or sklearn:digits[@train|@test])")
    return x, y, []


def load_images(sources: list[str], cfg: ImageDataConfig) -> ImageSet:
    """Decode, resize and cache the sources (once); every later call memory-maps the cache."""
    if not sources:
        raise SelfsupError("--data: no data given")
    for s in sources:
        if not (s.startswith("hf:") or is_builtin(s, DIGITS) or Path(s).exists()):
            raise SelfsupError(f"{s}: no such file or folder")
    fingerprint_sources: list[str] = []  # files (a folder's images too) by path, size and mtime
    for s in sources:
        if not is_builtin(s, DIGITS):
            p = Path(s)
            fingerprint_sources.extend(sorted(str(f) for f in p.rglob("*") if f.is_file()) if p.is_dir() else [s])
    key = fingerprint(fingerprint_sources, {"v": FORMAT_VERSION, "all": sources, "size": cfg.image_size,
                                             "channels": cfg.channels, "max": cfg.max_images,
                                             "cols": [cfg.image_column, cfg.label_column]})
    folder = cache_root() / "images" / key
    if not (folder / "meta.json").exists():
        parts, labels, classes, first = [], [], [], None
        for s in sources:
            x, y, names = _read_source(s, cfg, first_label=len(classes))
            if first is not None and x.shape[1] != first[1]:
                raise SelfsupError(f"{s}: {x.shape[1]}-channel images, but {first[0]} has {first[1]} "
                                   "(mixed channel counts; set data.channels: 1 or 3 to convert)")
            first = first or (s, x.shape[1])
            parts.append(x)
            labels.append(y)
            classes.extend(names)
        images = np.concatenate(parts)
        flat = images.reshape(len(images), images.shape[1], -1).astype(np.float64) / 255.0
        mean = flat.mean(axis=(0, 2))
        std = np.maximum(flat.std(axis=(0, 2)), 1e-3)
        with atomic_dir(folder) as tmp:
            np.save(tmp / "images.npy", images)
            np.save(tmp / "labels.npy", np.concatenate(labels))
            (tmp / "meta.json").write_text(json.dumps({"classes": classes, "mean": mean.tolist(),
                                                       "std": std.tolist(), "sources": sources}))
    meta = json.loads((folder / "meta.json").read_text())
    return ImageSet(np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "labels.npy"),
                    meta["classes"], meta["mean"], meta["std"])


def digits_split(folder: str | Path, n_train: int = 1200, seed: int = 0) -> tuple[Path, Path]:
    """scikit-learn's digits as two labelled `.npz` files (a fixed seeded split): `digits-train.npz` with
    `n_train` images and `digits-eval.npz` with the rest, pixels scaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(seed).permutation(len(d.target))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, idx in (("train", perm[:n_train]), ("eval", perm[n_train:])):
        path = folder / f"digits-{name}.npz"
        np.savez(path, x=np.rint(d.images[idx] * 255 / 16).astype(np.uint8), y=d.target[idx])
        paths.append(path)
    return paths[0], paths[1]
