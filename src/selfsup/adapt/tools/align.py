"""Cross-lingual alignment with no parallel text: the mean-difference trick.

A multilingual encoder (e.g. one BERT `pretrain mlm` on two monolingual corpora together) puts each language
in its own region of the embedding space. Libovický et al., "On the Language Neutrality of Pre-trained
Multilingual Representations" (2020), and the lecture's experiment: subtracting each language's mean
embedding (equivalently, shifting the source words by the difference of the two means) makes translations
neighbours. Here: the contextual embedding of every word of both corpora (mean of its pieces, averaged over
its occurrences), the mean-difference vector between the languages, then word-level retrieval of each
dictionary source word's translation among all target words — MRR, top-1 and top-5, with and without the
shift — and word-by-word translation of a few source sentences by the nearest target word.

Retrieval and the shift are a few lines of numpy (no library does this exact protocol); the encoder is any
selfsup run or Hugging Face folder.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from selfsup.errors import SelfsupError

WORD = re.compile(r"[^\W\d_]+")  # letters only, any script: "Häuser" is a word, "42" and "_" are not


@dataclass
class WordVectors:
    """One language's word types: their mean contextual embedding, occurrence counts, and the mean over all
    occurrences (the language's centroid)."""

    words: list[str]
    vectors: np.ndarray
    counts: np.ndarray
    centroid: np.ndarray

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def words_of(text: str) -> list[str]:
    return WORD.findall(text.lower())


def word_vectors(net, tok, texts: Sequence[str], *, layer: int = -1, max_length: int = 128,
                 batch_size: int = 32, min_count: int = 1) -> WordVectors:
    """Every word's contextual embedding (the mean of its pieces at `layer`), averaged over its occurrences;
    words seen fewer than `min_count` times are dropped (the centroid still counts every occurrence)."""
    import torch

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    total, n = None, 0
    sentences = [w for w in (words_of(t) for t in texts) if w]
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start:start + batch_size]
        enc = tok(chunk, is_split_into_words=True, truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")
        with torch.no_grad():
            states = net(**enc, output_hidden_states=True).hidden_states
        if not -len(states) <= layer < len(states):
            raise SelfsupError(f"--layer: {layer} out of range (the model has {len(states) - 1} layers)")
        h = states[layer].float().numpy()
        for j, words in enumerate(chunk):
            pieces: dict[int, list[int]] = {}
            for pos, w in enumerate(enc.word_ids(j)):
                if w is not None:
                    pieces.setdefault(w, []).append(pos)
            for w, positions in pieces.items():
                vec = h[j, positions].mean(0)
                word = words[w]
                sums[word] = sums.get(word, 0) + vec
                counts[word] = counts.get(word, 0) + 1
                total = vec.copy() if total is None else total + vec
                n += 1
    kept = sorted(w for w, c in counts.items() if c >= min_count)
    if total is None or not kept:
        raise SelfsupError(f"no word occurs {min_count} or more times in the corpus")
    vectors = np.stack([sums[w] / counts[w] for w in kept]).astype(np.float32)
    return WordVectors(kept, vectors, np.array([counts[w] for w in kept]), (total / n).astype(np.float32))


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def ranks_of_gold(queries: np.ndarray, candidates: np.ndarray, gold: Sequence[set[int]]) -> np.ndarray:
    """1-based rank, by cosine similarity among all candidates, of the best-ranked gold candidate of each query."""
    sims = normalize(queries) @ normalize(candidates).T
    order = np.argsort(-sims, axis=1, kind="stable")
    ranks = []
    for row, answers in zip(order, gold):
        positions = np.flatnonzero(np.isin(row, list(answers)))
        ranks.append(int(positions[0]) + 1)
    return np.array(ranks)


def retrieval_metrics(ranks: np.ndarray) -> dict[str, float]:
    return {"mrr": float(np.mean(1.0 / ranks)), "top1": float(np.mean(ranks <= 1)),
            "top5": float(np.mean(ranks <= 5)), "pairs": int(len(ranks))}


def read_dictionary(path: str | Path) -> list[tuple[str, str]]:
    """(source word, target word) rows of a CSV/TSV; a first row `source,target` is a header."""
    path = Path(path)
    if not path.is_file():
        raise SelfsupError(f"--dictionary {path}: no such file")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    pairs = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.reader(f, delimiter=delimiter), 1):
            if line == 1 and [c.strip().lower() for c in row[:2]] == ["source", "target"]:
                continue
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise SelfsupError(f"{path}:{line}: expected two columns, a source word and a target word")
            pairs.append((row[0].strip().lower(), row[1].strip().lower()))
    if not pairs:
        raise SelfsupError(f"{path}: no word pairs")
    return pairs


def evaluate_alignment(source: WordVectors, target: WordVectors, pairs: Sequence[tuple[str, str]],
                       dictionary: str = "--dictionary") -> tuple[dict[str, Any], list[dict]]:
    """Retrieval of each dictionary source word's translations among every target word, with and without the
    mean shift; (metrics, one row per source word)."""
    s_index, t_index = source.index(), target.index()
    gold: dict[str, set[int]] = {}
    for s, t in pairs:
        if s in s_index and t in t_index:
            gold.setdefault(s, set()).add(t_index[t])
    if not gold:
        raise SelfsupError(f"{dictionary}: no pair has both words in the corpora (source words seen: "
                           f"{sum(s in s_index for s, _ in pairs)} of {len(pairs)}, target words seen: "
                           f"{sum(t in t_index for _, t in pairs)})")
    queries = list(gold)
    q = source.vectors[[s_index[w] for w in queries]]
    shift = target.centroid - source.centroid
    rows = [{"source": w, "gold": sorted(target.words[i] for i in gold[w])} for w in queries]
    metrics: dict[str, Any] = {}
    for name, vecs in (("without_shift", q), ("with_shift", q + shift)):
        ranks = ranks_of_gold(vecs, target.vectors, [gold[w] for w in queries])
        metrics[name] = retrieval_metrics(ranks)
        nearest = np.argsort(-(normalize(vecs) @ normalize(target.vectors).T), axis=1)[:, :5]
        for row, rank, top in zip(rows, ranks, nearest):
            row[f"rank_{name}"] = int(rank)
            row[f"top5_{name}"] = [target.words[i] for i in top]
    metrics["shift_norm"] = float(np.linalg.norm(shift))
    metrics["centroid_cosine"] = float(normalize(source.centroid) @ normalize(target.centroid))
    return metrics, rows


def translate_words(sentence: str, source: WordVectors, target: WordVectors, shift: bool = True) -> str:
    """Word-by-word translation: each known source word replaced by its nearest target word (shifted by the
    mean difference when `shift`); unknown words are kept in brackets."""
    s_index = source.index()
    candidates = normalize(target.vectors)
    delta = target.centroid - source.centroid if shift else 0
    out = []
    for w in words_of(sentence):
        if w in s_index:
            out.append(target.words[int(np.argmax(candidates @ normalize(source.vectors[s_index[w]] + delta)))])
        else:
            out.append(f"[{w}]")
    return " ".join(out)


def pca_2d(*groups: np.ndarray) -> tuple[list[np.ndarray], tuple[float, float]]:
    """The groups projected on the first two principal axes of all of them together, and the share of the
    variance each of the two axes explains."""
    stacked = np.concatenate(groups)
    mean = stacked.mean(0)
    _, s, vt = np.linalg.svd(stacked - mean, full_matrices=False)
    share = (s ** 2) / max(float((s ** 2).sum()), 1e-12)
    return [(g - mean) @ vt[:2].T for g in groups], (float(share[0]), float(share[1]) if len(share) > 1 else 0.0)


def align(model: str | Path, source: str, target: str, dictionary: str, out: str | Path, *, layer: int = -1,
          min_count: int = 3, max_length: int = 128, batch_size: int = 32, translate: int = 5) -> dict[str, Any]:
    """Write out/metrics.json (retrieval with and without the mean shift), out/pairs.csv (each dictionary word's
    ranks and nearest target words), out/translations.txt and out/alignment.png; return the metrics."""
    from selfsup.adapt.core.encoders import load_text_encoder
    from selfsup.adapt.core.features import model_positions
    from selfsup.adapt.tools.embed import read_texts
    from selfsup.fileio import atomic_dir, atomic_write_json
    from selfsup.report.figures import plot_groups_2d

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelfsupError(f"{out}: already exists and is not empty; choose another --out")
    pairs = read_dictionary(dictionary)
    source_texts, target_texts = read_texts(source), read_texts(target)
    net, tok = load_text_encoder(model)
    if not getattr(tok, "is_fast", False):
        raise SelfsupError(f"{model}: needs a fast (Rust) tokenizer to map pieces to words")
    max_length = min(max_length, model_positions(net.config, tok))  # a small model takes fewer tokens
    kw = dict(layer=layer, max_length=max_length, batch_size=batch_size, min_count=min_count)
    src, tgt = word_vectors(net, tok, source_texts, **kw), word_vectors(net, tok, target_texts, **kw)
    metrics, rows = evaluate_alignment(src, tgt, pairs, dictionary)
    metrics.update({"model": str(model), "source": source, "target": target, "dictionary": dictionary,
                    "layer": layer, "min_count": min_count, "source_words": len(src.words),
                    "target_words": len(tgt.words), "dictionary_pairs": len(pairs)})
    lines = []
    for sentence in source_texts[:translate]:
        lines += [f"source:            {sentence}", f"without the shift: {translate_words(sentence, src, tgt, False)}",
                  f"with the shift:    {translate_words(sentence, src, tgt, True)}", ""]
    top = min(300, len(src.words), len(tgt.words))
    s_top = src.vectors[np.argsort(-src.counts)[:top]]
    t_top = tgt.vectors[np.argsort(-tgt.counts)[:top]]
    before, before_var = pca_2d(s_top, t_top)
    after, after_var = pca_2d(s_top + (tgt.centroid - src.centroid), t_top)
    if out.is_dir():
        out.rmdir()
    with atomic_dir(out) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        with open(tmp / "pairs.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["source", "gold", "rank_without_shift", "rank_with_shift", "top5_without_shift",
                        "top5_with_shift"])
            for r in rows:
                w.writerow([r["source"], " ".join(r["gold"]), r["rank_without_shift"], r["rank_with_shift"],
                            " ".join(r["top5_without_shift"]), " ".join(r["top5_with_shift"])])
        (tmp / "translations.txt").write_text("\n".join(lines), encoding="utf-8")
        plot_groups_2d({"without the shift": {"source": before[0], "target": before[1]},
                        "with the mean shift": {"source": after[0], "target": after[1]}}, tmp / "alignment.png",
                       explained={"without the shift": before_var, "with the mean shift": after_var},
                       title=f"the {top} most frequent words of each language (PCA of their embeddings)")
    return metrics
