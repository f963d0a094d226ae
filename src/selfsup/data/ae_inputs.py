"""What the auto-encoders read: table rows, images or windows of log-mel frames, chosen by `data.modality`
(`auto` = by the kind of the first source). Each kind is read by its own reader and preprocessed by a
preprocessor fitted on the training data, saved as the model's `preprocessing.json` and reapplied unchanged
at scoring time:

* `table` (data/tables.py): a (D,) row of standardized / one-hot features (`TablePreprocessor`).
* `image` (data/images.py: folders, `.npz`, IDX, `hf:`, `sklearn:digits`): a (C, S, S) float32 image, resized to
  `data.image_size`, each channel standardized with the mean / std of the training images (`ImagePreprocessor`).
* `audio_frames` (data/audio.py: files, folders, manifests, `hf:`, `selfsup:speech-words`): a (1, n_mels, W)
  window of W = `data.window_frames` consecutive log-mel frames, every `data.window_hop` frames along each clip
  (the last window ends at the clip's end; a clip shorter than W is edge-padded), each mel band standardized
  with the mean / std of the training frames (`FramePreprocessor`, through `AudioFrontEnd`).

Every example is `(array float32, label id or -1)`; `AESet.classes` names the label ids (tables: "0" / "1").
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from selfsup.config import bounded
from selfsup.data.audio import AUDIO_SUFFIXES, AudioDataConfig, AudioFrontEnd, AudioSet, load_audio
from selfsup.data.images import DIGITS, IMAGE_SUFFIXES, ImageDataConfig, load_images
from selfsup.data.tables import TableDataConfig, TableExamples, TablePreprocessor, load_table
from selfsup.errors import SelfsupError

Modality = Literal["auto", "table", "image", "audio_frames"]


@dataclasses.dataclass
class AEDataConfig(TableDataConfig):
    """The auto-encoders' `data:` section: the table keys, plus the image and audio-frame keys."""

    modality: Modality = bounded("auto", doc="auto = by the first source: sklearn:digits, image files or folders, "
                                 ".npz with (N,H,W[,C]) x, IDX -> image; audio files or folders, selfsup:speech-* "
                                 "-> audio_frames; else table")
    image_size: int = bounded(32, ge=4, doc="image: every image is resized to image_size x image_size")
    channels: int | None = bounded(None, doc="image: 1 or 3 to convert every image; null = as the data (must agree)")
    image_column: str = "image"
    max_images: int | None = bounded(None, gt=0, doc="image: read at most this many images (hub data sets)")
    sample_rate: int = bounded(16000, ge=1000, doc="audio_frames: every clip is resampled to this rate (Hz)")
    n_mels: int = bounded(40, ge=8, doc="audio_frames: log-mel bands")
    win_ms: float = bounded(25.0, gt=0)
    hop_ms: float = bounded(10.0, gt=0)
    window_frames: int = bounded(16, ge=2, doc="audio_frames: consecutive log-mel frames per example")
    window_hop: int | None = bounded(None, gt=0, doc="audio_frames: frames between window starts; null = half a window")
    path_column: str = "path"
    audio_column: str = "audio"
    max_files: int | None = bounded(None, gt=0, doc="audio_frames: read at most this many clips")

    def validate(self) -> None:
        if self.channels not in (None, 1, 3):
            raise SelfsupError(f"channels: must be 1, 3 or null, got {self.channels!r}")


def detect_modality(sources: Sequence[str]) -> str:
    """`table`, `image` or `audio_frames` for `data.modality: auto`, from the first source's kind."""
    if not sources:
        raise SelfsupError("data: no data given")
    s = str(sources[0])
    if s.split("@")[0] == DIGITS:
        return "image"
    if s.startswith("selfsup:speech"):
        return "audio_frames"
    p = Path(s)
    if p.is_dir():
        kinds = {f.suffix.lower() for f in p.rglob("*") if f.is_file()}
        if kinds & AUDIO_SUFFIXES or any((p / m).is_file() for m in ("manifest.csv", "manifest.jsonl")):
            return "audio_frames"
        if kinds & IMAGE_SUFFIXES:
            return "image"
        raise SelfsupError(f"{s}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))}) and no audio "
                           f"({', '.join(sorted(AUDIO_SUFFIXES))})")
    suffix = p.suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return "audio_frames"
    if suffix in IMAGE_SUFFIXES or "idx3" in p.name.lower() or p.name.lower().endswith(".idx"):
        return "image"
    if suffix == ".npz" and p.is_file():
        try:
            with np.load(p, allow_pickle=False) as z:
                ndim = z["x"].ndim if "x" in z.files else 2
        except Exception:  # unreadable: the table reader gives the one-line error
            return "table"
        return "image" if ndim >= 3 else "table"
    return "table"


@dataclasses.dataclass
class ImagePreprocessor:
    """A fitted image front end: size, channels, per-channel mean / std (of the training images, in 0..1)."""

    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    convert: bool = False  # data.channels was set: convert every image (else a channel mismatch is an error)
    label_column: str = "label"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """(..., C, S, S) uint8 -> standardized float32."""
        m = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        s = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return ((np.asarray(images, np.float32) / 255.0 - m) / s).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"modality": "image", **dataclasses.asdict(self)}


@dataclasses.dataclass
class FramePreprocessor:
    """A fitted audio-frame front end: the log-mel spec and its per-band standardization, the window."""

    front: AudioFrontEnd
    window_frames: int
    window_hop: int
    label_column: str | None = "label"

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, self.front.spec.n_mels, self.window_frames)

    def to_dict(self) -> dict[str, Any]:
        return {"modality": "audio_frames", "window_frames": self.window_frames, "window_hop": self.window_hop,
                "label_column": self.label_column, **self.front.to_dict()}


def preprocessor_from_dict(d: dict[str, Any]):
    """A saved `preprocessing.json` (any of the three kinds) -> its preprocessor."""
    kind = d.get("modality", "table")
    if kind == "image":
        names = {f.name for f in dataclasses.fields(ImagePreprocessor)}
        return ImagePreprocessor(**{k: v for k, v in d.items() if k in names})
    if kind == "audio_frames":
        return FramePreprocessor(AudioFrontEnd.from_dict(d), int(d["window_frames"]), int(d["window_hop"]),
                                 d.get("label_column"))
    return TablePreprocessor.from_dict(d)


def input_shape(pre) -> tuple[int, ...]:
    """The model's input shape for a preprocessor: (D,), (C, S, S) or (1, n_mels, W)."""
    return tuple(pre.shape) if hasattr(pre, "shape") else (pre.dim,)


class ImageRows(Sequence):
    """(standardized (C, S, S) float32 image, label id or -1), read from the memory-mapped uint8 cache."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, pre: ImagePreprocessor):
        self.images, self.labels, self.pre = images, labels, pre

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.pre.apply(self.images[i]), int(self.labels[i])


def window_starts(n: int, width: int, hop: int) -> list[int]:
    """Start frames of the windows of `width` frames every `hop` along n frames; the last one ends at n."""
    if n <= width:
        return [0]
    starts = list(range(0, n - width + 1, hop))
    return starts if starts[-1] == n - width else starts + [n - width]


class FrameRows(Sequence):
    """(standardized (1, n_mels, W) window of log-mel frames, label id of its clip or -1)."""

    def __init__(self, data: AudioSet, pre: FramePreprocessor, labels: np.ndarray):
        self.data, self.pre, self.labels = data, pre, labels
        w, hop = pre.window_frames, pre.window_hop
        self.windows = np.array([(c, s) for c in range(len(data))
                                 for s in window_starts(int(data.offsets[c + 1] - data.offsets[c]), w, hop)],
                                dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        clip, start = (int(v) for v in self.windows[i])
        frames = self.pre.front.apply(self.data.raw(clip)[start:start + self.pre.window_frames])
        short = self.pre.window_frames - len(frames)
        if short > 0:  # a clip shorter than one window: repeat its last frame
            frames = np.pad(frames, ((0, short), (0, 0)), mode="edge")
        return np.ascontiguousarray(frames.T[None], dtype=np.float32), int(self.labels[clip])

    def where(self, i: int) -> str:
        clip, start = (int(v) for v in self.windows[i])
        return f"{self.data.names[clip]} frame {start}"


@dataclasses.dataclass
class AESet:
    """The rows an auto-encoder trains on or scores, the fitted preprocessor, and the label ids' names."""

    rows: Sequence
    preprocessor: Any
    classes: list[str]
    modality: str

    def label_values(self) -> list[str]:
        """Each row's label as text ('' = unknown)."""
        ids = [r[1] for r in self.rows] if self.modality != "table" else list(self.rows.data.labels)
        return ["" if int(i) < 0 else (self.classes[int(i)] if int(i) < len(self.classes) else str(int(i)))
                for i in ids]


def _audio_config(cfg: AEDataConfig, label_column: str | None) -> AudioDataConfig:
    return AudioDataConfig(sample_rate=cfg.sample_rate, n_mels=cfg.n_mels, win_ms=cfg.win_ms, hop_ms=cfg.hop_ms,
                           normalize="global", crop_seconds=None, path_column=cfg.path_column,
                           audio_column=cfg.audio_column, label_column=label_column, max_files=cfg.max_files)


def _load_images(sources: Sequence[str], cfg: AEDataConfig, pre: ImagePreprocessor | None,
                 label_column: str | None) -> AESet:
    size = pre.image_size if pre else cfg.image_size
    channels = (pre.channels if pre.convert else None) if pre else cfg.channels
    icfg = ImageDataConfig(image_size=size, channels=channels, holdout_fraction=0.0, image_column=cfg.image_column,
                           label_column=label_column or (pre.label_column if pre else cfg.label_column) or "label",
                           max_images=cfg.max_images)
    data = load_images([str(s) for s in sources], icfg)
    if pre is None:
        pre = ImagePreprocessor(size, data.channels, list(data.mean), list(data.std), cfg.channels is not None,
                                icfg.label_column)
    elif data.channels != pre.channels:
        raise SelfsupError(f"{sources[0]}: {data.channels}-channel images, but the model was fitted on "
                           f"{pre.channels}-channel images (fit with data.channels={pre.channels} to convert)")
    classes = list(data.classes) or [str(i) for i in range(int(data.labels.max()) + 1 if len(data.labels) else 0)]
    return AESet(ImageRows(data.images, np.asarray(data.labels), pre), pre, classes, "image")


def _load_frames(sources: Sequence[str], cfg: AEDataConfig, pre: FramePreprocessor | None,
                 label_column: str | None) -> AESet:
    column = label_column or (pre.label_column if pre else cfg.label_column)
    if pre is not None:  # the fitted spec, whatever the recipe says
        spec = pre.front.spec
        cfg = dataclasses.replace(cfg, sample_rate=spec.sample_rate, n_mels=spec.n_mels, win_ms=spec.win_ms,
                                  hop_ms=spec.hop_ms)
    data = load_audio([str(s) for s in sources], _audio_config(cfg, column), "logmel")
    if pre is None:
        hop = cfg.window_hop or max(1, cfg.window_frames // 2)
        pre = FramePreprocessor(AudioFrontEnd.fit(data, "global"), cfg.window_frames, hop, cfg.label_column)
    labels, classes = np.full(len(data), -1, np.int64), []
    if column and column in data.columns:
        labels, classes = data.labels(column)
    elif label_column:
        raise SelfsupError(f"{sources[0]}: label column {label_column!r}: not in the data (columns: "
                           f"{', '.join(data.columns)})")
    return AESet(FrameRows(data, pre, labels), pre, classes, "audio_frames")


def load_ae_data(sources: Sequence[str], cfg: AEDataConfig, preprocessor: Any = None,
                 label_column: str | None = None) -> AESet:
    """Read and preprocess `sources` as the configured (or detected) modality; fits the preprocessor unless one
    is given (scoring time: the saved preprocessor decides the modality and every size)."""
    sources = [str(s) for s in sources]
    if preprocessor is not None:
        kind = "image" if isinstance(preprocessor, ImagePreprocessor) else \
            "audio_frames" if isinstance(preprocessor, FramePreprocessor) else "table"
    else:
        kind = detect_modality(sources) if cfg.modality == "auto" else cfg.modality
    if kind == "image":
        return _load_images(sources, cfg, preprocessor, label_column)
    if kind == "audio_frames":
        return _load_frames(sources, cfg, preprocessor, label_column)
    table = load_table(sources, cfg, preprocessor)
    return AESet(TableExamples(table, np.arange(len(table.x))), table.preprocessor, ["0", "1"], "table")


def value_range(rows: Sequence, indices: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise minimum and maximum over rows[indices] (salt-and-pepper noise's values), in chunks."""
    low = high = None
    for start in range(0, len(indices), chunk):
        x = np.stack([rows[int(i)][0] for i in indices[start:start + chunk]])
        lo, hi = x.min(0), x.max(0)
        low, high = (lo, hi) if low is None else (np.minimum(low, lo), np.maximum(high, hi))
    if low is None:
        raise SelfsupError("data: no training rows")
    return low, high
