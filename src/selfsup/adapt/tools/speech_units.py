"""Discrete speech units into a text model (textless spoken language understanding as in DUAL, Lin et al. 2022,
"DUAL: Discrete Spoken Unit Adaptive Learning for Textless Spoken Question Answering"; units as in GSLM,
Lakhotia et al. 2021): a frozen speech upstream's layer is clustered with k-means (scikit-learn), every clip
becomes a sequence of unit ids (consecutive repeats merged), and unit k is written as the k-th word of a text
model's vocabulary, so an ordinary `selfsup finetune` of a text-pretrained BERT reads speech as "text".

Output: `OUT/train.csv` and `OUT/eval.csv` (column `text` = the unit words, plus every column of the input
manifest), `OUT/units.json` (upstream, layer, clusters, the unit -> word map) and `OUT/centroids.npy`.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from selfsup.errors import SelfsupError


def unit_words(tokenizer, n: int) -> list[str]:
    """n distinct whole words of the tokenizer's vocabulary that it encodes as exactly one token, in id order
    (frequent words first for trained WordPiece/BPE vocabularies); deterministic for a given tokenizer."""
    special = set(tokenizer.all_special_tokens)
    words = []
    for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        if token in special or not token.isalpha() or not token.islower() or len(token) < 2:
            continue
        if len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1:
            words.append(token)
        if len(words) == n:
            return words
    raise SelfsupError(f"--text-model: its vocabulary has only {len(words)} single-token words; need {n} "
                       "(lower --clusters)")


def merge_repeats(units: np.ndarray) -> np.ndarray:
    """[3, 3, 7, 7, 7, 3] -> [3, 7, 3] (GSLM's de-duplication of 20 ms units)."""
    units = np.asarray(units)
    return units[np.concatenate([[True], units[1:] != units[:-1]])] if len(units) else units


def _layer_frames(model: str | Path, sources: Sequence[str], layer: int | None):
    from selfsup.backbones.speech import encode_clips, load_speech_encoder
    from selfsup.data.audio import AudioDataConfig, AudioFrontEnd, load_audio

    encoder, front = load_speech_encoder(model)
    layer = encoder.num_layers - 1 if layer is None else layer
    if not 0 <= layer < encoder.num_layers:
        raise SelfsupError(f"--layer: {layer} is not a layer of {model} (0..{encoder.num_layers - 1})")
    fe = AudioFrontEnd.from_dict(front)
    spec = fe.spec
    cfg = AudioDataConfig(sample_rate=spec.sample_rate, n_mels=spec.n_mels, win_ms=spec.win_ms, hop_ms=spec.hop_ms,
                          label_column=None)
    data = load_audio(list(sources), cfg, fe.kind)
    clips = [fe.apply(data.raw(i)) for i in range(len(data))]
    return encode_clips(encoder, clips, layer=layer), data, layer


def _write_csv(path: Path, texts: list[str], columns: dict[str, list[str]]) -> None:
    from selfsup.fileio import atomic_write_text

    keys = [k for k in columns if k != "text"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["text", *keys])
    for i, text in enumerate(texts):
        writer.writerow([text, *(columns[k][i] for k in keys)])
    atomic_write_text(path, buf.getvalue())


def speech_units(model: str | Path, train: Sequence[str], eval_data: Sequence[str], out: str | Path,
                 text_model: str | Path | None = None, layer: int | None = None, clusters: int = 50,
                 seed: int = 0, max_fit_frames: int = 50_000) -> dict[str, Any]:
    """Fit k-means on the train clips' layer frames, write both sets as unit texts; returns units.json's dict."""
    from sklearn.cluster import MiniBatchKMeans

    from selfsup.fileio import atomic_dir

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelfsupError(f"{out}: already exists and is not empty; choose another --out")
    if clusters < 2:
        raise SelfsupError(f"--clusters: need at least 2, got {clusters}")
    words = None
    if text_model is not None:
        from selfsup.adapt.core.models import load_tokenizer, resolve_checkpoint

        words = unit_words(load_tokenizer(resolve_checkpoint(str(text_model))), clusters)
    train_frames, train_set, layer = _layer_frames(model, train, layer)
    eval_frames, eval_set, _ = _layer_frames(model, eval_data, layer)
    fit = np.concatenate(train_frames)
    if len(fit) > max_fit_frames:
        fit = fit[np.random.default_rng(seed).choice(len(fit), max_fit_frames, replace=False)]
    if len(fit) < clusters:
        raise SelfsupError(f"--clusters: {clusters} clusters but the train data has only {len(fit)} frames")
    kmeans = MiniBatchKMeans(clusters, random_state=seed, n_init=3, batch_size=4096).fit(fit)
    names = words or [f"u{k}" for k in range(clusters)]

    def texts(frames: list[np.ndarray]) -> list[str]:
        return [" ".join(names[int(u)] for u in merge_repeats(kmeans.predict(f))) if len(f) else "" for f in frames]

    info = {"upstream": str(model), "layer": int(layer), "clusters": int(clusters), "seed": seed,
            "text_model": str(text_model) if text_model else None, "unit_words": names,
            "train_clips": len(train_frames), "eval_clips": len(eval_frames),
            "mean_units_per_clip": float(np.mean([len(t.split()) for t in texts(train_frames)]))}
    with atomic_dir(out) as tmp:
        _write_csv(tmp / "train.csv", texts(train_frames), train_set.columns)
        _write_csv(tmp / "eval.csv", texts(eval_frames), eval_set.columns)
        np.save(tmp / "centroids.npy", kmeans.cluster_centers_.astype(np.float32))
        (tmp / "units.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
