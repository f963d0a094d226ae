"""Audio data: WAV/FLAC/OGG files through `soundfile`, folders (class sub-folders = labels, searched
recursively; a folder holding `manifest.csv` is read through it), manifests (CSV/TSV/JSONL with a `path`
column, absolute or relative to the manifest, and any label columns), Hugging Face audio sets
(`hf:NAME[:CONFIG][@SPLIT]`, decoded here, not by torchcodec) and the shipped synthesized sets
(`selfsup:speech-words`, `selfsup:speech-sentences`).

Every clip is mixed to mono, resampled to the recipe's rate (soxr), turned into the backbone's input — the
waveform, log-mel frames or MFCCs — and cached once as one flat memory-mapped array with offsets under
`$SELFSUP_CACHE/audio/<key>/`, with every manifest column kept as text. Normalization (`AudioFrontEnd`) is
applied when an example is read, with statistics fitted on the data and saved with the model.

Bad input is a one-line `SelfsupError` naming the file (and manifest line): empty, zero-length, corrupt,
unsupported or all-silent audio, a missing file, a manifest without its path column.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from selfsup.config import bounded
from selfsup.data.audio_features import FrameSpec, log_mel, mfcc, normalize_utterance, resample, to_mono
from selfsup.data.corpus import cache_root
from selfsup.errors import SelfsupError
from selfsup.fileio import atomic_dir, atomic_write_text

FORMAT_VERSION = 1
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga"}
MANIFEST_SUFFIXES = {".csv", ".tsv", ".jsonl"}
SILENCE_PEAK = 1e-4
InputKind = Literal["waveform", "logmel", "mfcc"]


@dataclasses.dataclass
class AudioDataConfig:
    """How audio becomes examples (the recipe's `data:` section for speech objectives)."""

    sample_rate: int = bounded(16000, ge=1000, doc="every clip is resampled to this rate (Hz)")
    n_mels: int = bounded(80, ge=8, doc="log-mel bands (mel-frame backbones)")
    win_ms: float = bounded(25.0, gt=0)
    hop_ms: float = bounded(10.0, gt=0)
    normalize: Literal["global", "utterance", "none"] = "global"
    crop_seconds: float | None = bounded(1.0, gt=0, doc="training crops of at most this length; null = whole clips")
    holdout_fraction: float = bounded(0.1, ge=0, lt=0.5, doc="clips kept out for held-out loss")
    path_column: str = "path"
    audio_column: str = "audio"
    label_column: str | None = "word"  # for the online probe; a missing column just turns it off
    max_files: int | None = bounded(None, gt=0, doc="read at most this many clips")

    def spec(self) -> FrameSpec:
        return FrameSpec(sample_rate=self.sample_rate, win_ms=self.win_ms, hop_ms=self.hop_ms, n_mels=self.n_mels)


@dataclasses.dataclass
class AudioSet:
    """Decoded clips as one flat array (waveform samples or feature frames) with offsets, plus columns."""

    values: np.ndarray                       # (total,) waveform or (total_frames, dims) features
    offsets: np.ndarray                      # (n + 1,) int64
    columns: dict[str, list[str]]            # manifest columns (and `label` from class sub-folders), as text
    names: list[str]                         # where each clip came from
    kind: str
    spec: FrameSpec

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> np.ndarray:
        return np.asarray(self.values[self.offsets[i]:self.offsets[i + 1]], dtype=np.float32)

    @property
    def dims(self) -> int:
        return 1 if self.values.ndim == 1 else int(self.values.shape[1])

    @property
    def rate(self) -> float:
        """Values per second of audio: samples (waveform) or frames (features)."""
        return float(self.spec.sample_rate) if self.kind == "waveform" else self.spec.frame_rate

    def seconds(self) -> float:
        return float(self.offsets[-1]) / self.rate

    def labels(self, column: str, classes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
        """Class ids of a column (-1 where empty or not in `classes`), and the class names."""
        if column not in self.columns:
            raise SelfsupError(f"label column {column!r}: not in the data (columns: {', '.join(self.columns)})")
        values = self.columns[column]
        classes = list(classes) if classes is not None else sorted({v for v in values if v != ""})
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index.get(v, -1) for v in values], dtype=np.int64), classes


@dataclasses.dataclass
class AudioFrontEnd:
    """What a model saw: the input kind, the frame spec and its normalization (saved in preprocessing.json)."""

    kind: str
    spec: FrameSpec
    normalize: str
    mean: list[float] | None = None
    std: list[float] | None = None

    @classmethod
    def fit(cls, data: AudioSet, normalize: str) -> "AudioFrontEnd":
        mean = std = None
        if normalize == "global":  # in chunks: a float64 copy of every value would not fit for a large set
            total, sums, squares = 0, np.zeros(data.dims), np.zeros(data.dims)
            for start in range(0, len(data.values), 1 << 20):
                v = np.asarray(data.values[start:start + (1 << 20)], dtype=np.float64).reshape(-1, data.dims)
                total, sums, squares = total + len(v), sums + v.sum(0), squares + (v * v).sum(0)
            m = sums / max(total, 1)
            mean, std = m.tolist(), np.maximum(np.sqrt(np.maximum(squares / max(total, 1) - m * m, 0)), 1e-5).tolist()
        return cls(data.kind, data.spec, normalize, mean, std)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if self.normalize == "utterance":
            return normalize_utterance(raw)
        if self.normalize == "global" and self.mean is not None:
            shape = (-1,) if raw.ndim == 1 else (1, -1)
            return ((raw - np.asarray(self.mean, np.float32).reshape(shape))
                    / np.asarray(self.std, np.float32).reshape(shape)).astype(np.float32)
        return raw

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.kind, **dataclasses.asdict(self.spec), "frame_rate": self.spec.frame_rate,
                "normalize": self.normalize, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AudioFrontEnd":
        fields = {f.name for f in dataclasses.fields(FrameSpec)}
        return cls(d["input"], FrameSpec(**{k: d[k] for k in fields if k in d}), d.get("normalize", "none"),
                   d.get("mean"), d.get("std"))


class AudioExamples(Sequence):
    """What the engine streams: (normalized clip, label id or -1) for a subset of an AudioSet."""

    def __init__(self, data: AudioSet, indices: np.ndarray, front: AudioFrontEnd, labels: np.ndarray | None = None):
        self.data, self.front = data, front
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = labels if labels is not None else np.full(len(data), -1, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        j = int(self.indices[i])
        return self.front.apply(self.data.raw(j)), int(self.labels[j])


# ---- reading -----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Clip:
    name: str                       # for messages: "FILE" or "MANIFEST line N (FILE)"
    path: Path | None = None
    data: bytes | None = None
    row: dict[str, str] = dataclasses.field(default_factory=dict)


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SelfsupError(f"{path}: cannot read manifest ({type(e).__name__}: {e})") from None
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SelfsupError(f"{path} line {n}: not JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise SelfsupError(f"{path} line {n}: expected a JSON object per line")
                yield n, row
        return
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
    for row in reader:
        yield reader.line_num, row


def _from_manifest(path: Path, cfg: AudioDataConfig) -> list[_Clip]:
    clips = []
    for n, row in _manifest_rows(path):
        where = f"{path} line {n}"
        if cfg.path_column not in row:
            raise SelfsupError(f"{where}: no column {cfg.path_column!r} (columns: {', '.join(map(str, row))}; "
                               "set data.path_column)")
        value = str(row[cfg.path_column] or "").strip()
        if not value:
            raise SelfsupError(f"{where}: empty {cfg.path_column!r}")
        audio = Path(value) if Path(value).is_absolute() else path.parent / value
        if not audio.is_file():
            raise SelfsupError(f"{where}: no such audio file {audio}")
        text_row = {str(k): "" if v is None else (v if isinstance(v, str) else json.dumps(v)) for k, v in row.items()}
        clips.append(_Clip(f"{where} ({audio})", audio, row=text_row))
    if not clips:
        raise SelfsupError(f"{path}: manifest has no rows")
    return clips


def _folder_manifest(path: Path) -> Path | None:
    return next((path / n for n in ("manifest.csv", "manifest.jsonl", "manifest.tsv") if (path / n).is_file()), None)


def _from_folder(path: Path) -> list[_Clip]:
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(path).parts))
    if not files:
        raise SelfsupError(f"{path}: folder has no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    labelled = all(len(f.relative_to(path).parts) >= 2 for f in files)
    return [_Clip(str(f), f, row={"path": str(f), **({"label": f.relative_to(path).parts[0]} if labelled else {})})
            for f in files]


def _from_hub(spec: str, cfg: AudioDataConfig) -> list[_Clip]:
    from selfsup.data.hub import hub_rows, load_hub

    ds = load_hub(spec, streaming=False)
    if cfg.audio_column not in ds.column_names:
        raise SelfsupError(f"{spec}: no audio column {cfg.audio_column!r} (columns: {', '.join(ds.column_names)}; "
                           "set data.audio_column)")
    import datasets

    ds = ds.cast_column(cfg.audio_column, datasets.Audio(decode=False))  # decoded here with soundfile
    clips = []
    for where, row in hub_rows(spec, ds):
        audio = row.pop(cfg.audio_column) or {}
        data = audio.get("bytes")
        path = Path(audio["path"]) if not data and audio.get("path") else None
        clips.append(_Clip(where, path, data, {k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()}))
        if cfg.max_files and len(clips) >= cfg.max_files:
            break
    return clips


def expand_sources(sources: Sequence[str], cfg: AudioDataConfig) -> list[_Clip]:
    clips: list[_Clip] = []
    for s in sources:
        if s.startswith("hf:"):
            clips += _from_hub(s, cfg)
            continue
        if s.startswith("selfsup:"):
            from selfsup.data.speech_synth import embedded_speech

            s = str(embedded_speech(s.removeprefix("selfsup:")) / "manifest.csv")
        p = Path(s)
        if p.is_dir():
            manifest = _folder_manifest(p)
            clips += _from_manifest(manifest, cfg) if manifest else _from_folder(p)
        elif not p.exists():
            raise SelfsupError(f"{p}: no such file or folder")
        elif p.suffix.lower() in MANIFEST_SUFFIXES:
            clips += _from_manifest(p, cfg)
        elif p.suffix.lower() in AUDIO_SUFFIXES:
            clips.append(_Clip(str(p), p, row={"path": str(p)}))
        else:
            raise SelfsupError(f"{p}: unsupported audio format {p.suffix or '(none)'} (WAV, FLAC, OGG, or a "
                               "CSV/TSV/JSONL manifest)")
    if cfg.max_files:
        clips = clips[:cfg.max_files]
    if not clips:
        raise SelfsupError(f"{', '.join(sources)}: no audio")
    return clips


def wav_data_shortfall(head: bytes, size: int) -> tuple[int, int] | None:
    """(announced, present) bytes of a RIFF/WAVE file's `data` chunk when the file is cut short, else None;
    `head` is the file's first bytes (up to its data chunk), `size` its length. libsndfile reads such a file
    without a word, returning only the samples present. (A streaming writer's 0xFFFFFFFF size is not a cut.)"""
    import struct

    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    order = "<" if head[:4] == b"RIFF" else ">"
    at = 12
    while at + 8 <= len(head):
        chunk, length = head[at:at + 4], struct.unpack(order + "I", head[at + 4:at + 8])[0]
        if chunk == b"data":
            present = size - (at + 8)
            return (length, present) if length != 0xFFFFFFFF and length > present else None
        at += 8 + length + (length & 1)
    return None


def decode(clip: _Clip, sample_rate: int) -> np.ndarray:
    """A clip -> mono float32 samples at `sample_rate`; refuses empty, corrupt and all-silent audio."""
    import soundfile as sf

    if clip.path is not None and clip.path.suffix.lower() not in AUDIO_SUFFIXES and clip.data is None:
        raise SelfsupError(f"{clip.name}: unsupported audio format {clip.path.suffix or '(none)'} (WAV, FLAC, OGG)")
    if clip.data is None and clip.path is not None and clip.path.stat().st_size == 0:
        raise SelfsupError(f"{clip.name}: empty file (0 bytes)")
    if clip.data is not None:
        cut = wav_data_shortfall(clip.data[:65536], len(clip.data))
    else:
        with open(clip.path, "rb") as f:
            cut = wav_data_shortfall(f.read(65536), clip.path.stat().st_size)
    if cut:
        raise SelfsupError(f"{clip.name}: truncated WAV: its header announces {cut[0]} bytes of samples, the file "
                           f"holds {cut[1]}")
    try:
        source = io.BytesIO(clip.data) if clip.data is not None else str(clip.path)
        samples, rate = sf.read(source, dtype="float32", always_2d=False)
    except Exception as e:  # libsndfile's errors for truncated, empty or foreign files
        first = str(e).splitlines()[0][:160] if str(e) else "corrupt"
        raise SelfsupError(f"{clip.name}: cannot read audio ({type(e).__name__}: {first})") from None
    samples = to_mono(samples)
    if samples.size == 0:
        raise SelfsupError(f"{clip.name}: empty audio (0 samples)")
    if not np.isfinite(samples).all():
        raise SelfsupError(f"{clip.name}: audio holds NaN or infinite samples")
    if float(np.abs(samples).max()) < SILENCE_PEAK:
        raise SelfsupError(f"{clip.name}: all-silent audio (peak {float(np.abs(samples).max()):.1e})")
    return resample(samples, int(rate), sample_rate)


def featurize(samples: np.ndarray, kind: str, spec: FrameSpec) -> np.ndarray:
    if kind == "waveform":
        return samples.astype(np.float32)
    return log_mel(samples, spec) if kind == "logmel" else mfcc(samples, spec)


def _cache_key(clips: list[_Clip], kind: str, spec: FrameSpec) -> str:
    import hashlib

    h = hashlib.sha256(json.dumps([FORMAT_VERSION, kind, dataclasses.asdict(spec)]).encode())
    for c in clips:
        h.update(c.name.encode())
        if c.path is not None:
            st = c.path.stat()
            h.update(f"{c.path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        if c.data is not None:
            h.update(hashlib.sha256(c.data).digest())
        h.update(json.dumps(c.row, sort_keys=True).encode())
    return h.hexdigest()[:20]


def load_audio(sources: Sequence[str], cfg: AudioDataConfig, kind: InputKind) -> AudioSet:
    """Read, decode, featurize and cache `sources`; later calls memory-map the cache."""
    clips = expand_sources(list(sources), cfg)
    spec = cfg.spec()
    folder = cache_root() / "audio" / _cache_key(clips, kind, spec)
    if not (folder / "meta.json").is_file():
        arrays = [featurize(decode(c, spec.sample_rate), kind, spec) for c in clips]
        if kind != "waveform" and any(len(a) == 0 for a in arrays):
            raise SelfsupError(f"{clips[[len(a) for a in arrays].index(0)].name}: too short for one frame")
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        keys = sorted({k for c in clips for k in c.row})
        columns = {k: [c.row.get(k, "") for c in clips] for k in keys}
        with atomic_dir(folder) as tmp:
            np.save(tmp / "values.npy", np.concatenate(arrays).astype(np.float32 if kind == "waveform" else np.float16))
            np.save(tmp / "offsets.npy", offsets)
            (tmp / "meta.json").write_text(json.dumps({"columns": columns, "names": [c.name for c in clips],
                                                       "kind": kind, "spec": dataclasses.asdict(spec)}))
    meta = json.loads((folder / "meta.json").read_text())
    return AudioSet(np.load(folder / "values.npy", mmap_mode="r"), np.load(folder / "offsets.npy"), meta["columns"],
                    meta["names"], kind, FrameSpec(**meta["spec"]))


def crop_or_pad(x: np.ndarray, length: int, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
    """A random (rng) or centered (None) window of `length` values; shorter clips are zero-padded at the end.
    Returns the window and how many of its values are real."""
    n = len(x)
    if n >= length:
        start = int(rng.integers(0, n - length + 1)) if rng is not None else (n - length) // 2
        return x[start:start + length], length
    pad = [(0, length - n)] + [(0, 0)] * (x.ndim - 1)
    return np.pad(x, pad), n


def split_manifest(manifest: Path, train_out: Path, eval_out: Path, column: str,
                   held_out: Sequence[str]) -> tuple[Path, Path]:
    """Write two CSV manifests (absolute paths) from one: rows whose `column` is in `held_out` go to eval, the
    rest to train — e.g. unseen voices (column speaker) or an unseen speed (column speed)."""
    rows = [row for _, row in _manifest_rows(Path(manifest))]
    if not rows or column not in rows[0]:
        raise SelfsupError(f"{manifest}: no column {column!r} to split on")
    held = set(held_out)
    for out, keep in ((train_out, lambda r: r[column] not in held), (eval_out, lambda r: r[column] in held)):
        chosen = [{**r, "path": str((Path(manifest).parent / r["path"]).resolve())} for r in rows if keep(r)]
        if not chosen:
            raise SelfsupError(f"{manifest}: splitting on {column}={sorted(held)} leaves {out.name} empty")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
        atomic_write_text(Path(out), buf.getvalue())
    return Path(train_out), Path(eval_out)
