"""`selfsup embed`: contextual sentence or token embeddings of any checkpoint -> `embeddings.npy` + `index.jsonl`,
and the cosine-similarity matrix of one word's embeddings across sentences (`word_similarity`, plotted).

Embeddings are written into a memory-mapped .npy sized from a first tokenization pass, so memory does not
grow with the input. Encoder-decoders (BART) use their encoder.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from selfsup.errors import SelfsupError


def read_texts(source: str, text_column: str | None = None) -> list[str]:
    """Plain text (one text per line) or CSV / TSV / JSONL rows (column `text` unless told)."""
    from selfsup.adapt.core.tasks import iter_rows
    from selfsup.data.text import inner_suffix

    if source.startswith("hf:") or inner_suffix(Path(source)) in (".csv", ".tsv", ".jsonl", ".json"):
        col = text_column or "text"
        out = []
        for where, row in iter_rows(source):
            if col not in row:
                raise SelfsupError(f"{where}: no column {col!r} (columns: {', '.join(map(str, row))})")
            text = " ".join(str(row[col] or "").split())
            if not text:
                raise SelfsupError(f"{where}: empty text in column {col!r}")
            out.append(text)
    else:
        from selfsup.data.text import decoded_lines

        p = Path(source)
        if not p.is_file():
            raise SelfsupError(f"{source}: no such file")
        out = [" ".join(line.split()) for _, line in decoded_lines(p) if line.strip()]
    if not out:
        raise SelfsupError(f"{source}: empty (no text)")
    return out


def _hidden(net, batch: dict, layer: int):
    import torch

    with torch.no_grad():
        out = net(**batch, output_hidden_states=True)
    states = out.hidden_states
    if not -len(states) <= layer < len(states):
        raise SelfsupError(f"--layer: {layer} out of range (the model has {len(states) - 1} layers; 0 = embeddings)")
    return states[layer].float()


def _encode(tok, texts: Sequence[str], max_length: int) -> dict:
    return tok(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt",
               return_offsets_mapping=True, return_special_tokens_mask=True)


def embed(model: str | Path, source: str, out: str | Path, *, level: str = "sentence", pooling: str = "mean",
          layer: int = -1, text_column: str | None = None, batch_size: int = 32, max_length: int = 128,
          word: str | None = None) -> dict[str, Any]:
    from selfsup.fileio import atomic_dir

    texts = read_texts(source, text_column)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelfsupError(f"{out}: already exists and is not empty; choose another --out")
    if level not in ("sentence", "token"):
        raise SelfsupError(f"--level: expected sentence or token, got {level!r}")
    for flag, value in (("--batch-size", batch_size), ("--max-length", max_length)):
        if value < 1:
            raise SelfsupError(f"{flag}: must be >= 1, got {value}")
    from selfsup.adapt.core.encoders import load_text_encoder
    from selfsup.adapt.core.features import model_positions

    net, tok = load_text_encoder(model)
    max_length = min(max_length, model_positions(net.config, tok))  # a small model takes fewer tokens
    dim = net.config.hidden_size if hasattr(net.config, "hidden_size") else net.config.d_model
    if out.is_dir():
        out.rmdir()
    info: dict[str, Any] = {"model": str(model), "level": level, "pooling": pooling, "layer": layer, "dim": dim}
    with atomic_dir(out) as tmp:
        if level == "sentence":
            count = len(texts)
        else:  # first pass: how many tokens, to size the memory-mapped array
            count = 0
            for i in range(0, len(texts), 256):
                enc = tok(texts[i:i + 256], truncation=True, max_length=max_length, return_special_tokens_mask=True)
                count += sum(len(m) - sum(m) for m in enc["special_tokens_mask"])
        arr = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(count, dim))
        row = 0
        with open(tmp / "index.jsonl", "w", encoding="utf-8") as index:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                enc = _encode(tok, chunk, max_length)
                offsets = enc.pop("offset_mapping")
                special = enc.pop("special_tokens_mask")
                h = _hidden(net, dict(enc), layer)
                keep = (enc["attention_mask"].bool() & ~special.bool())
                if level == "sentence":
                    if pooling == "mean":
                        m = keep.unsqueeze(-1).float()
                        vec = (h * m).sum(1) / m.sum(1).clamp(min=1)
                    elif pooling == "cls":
                        vec = h[:, 0]
                    else:  # last non-padding token (decoders)
                        last = enc["attention_mask"].sum(1) - 1
                        vec = h[range(len(chunk)), last]
                    arr[row:row + len(chunk)] = vec.numpy()
                    for j, text in enumerate(chunk):
                        index.write(json.dumps({"row": row + j, "sentence": start + j, "text": text}) + "\n")
                    row += len(chunk)
                else:
                    for j, text in enumerate(chunk):
                        positions = keep[j].nonzero().flatten().tolist()
                        arr[row:row + len(positions)] = h[j, positions].numpy()
                        ids = enc["input_ids"][j]
                        for k, p in enumerate(positions):
                            a, b = (int(x) for x in offsets[j, p])
                            index.write(json.dumps({"row": row + k, "sentence": start + j,
                                                    "token": tok.convert_ids_to_tokens(int(ids[p])),
                                                    "start": a, "end": b, "text": text[a:b]}) + "\n")
                        row += len(positions)
        arr.flush()
        del arr
        info["count"] = row
        if word:
            matrix, used = word_similarity(net, tok, texts, word, layer=layer, max_length=max_length)
            from selfsup.report.figures import plot_similarity

            name = re.sub(r"[^\w-]+", "_", word)
            plot_similarity(matrix, used, tmp / f"similarity-{name}.png",
                            title=f"cosine similarity of '{word}' across sentences")
            (tmp / f"similarity-{name}.json").write_text(json.dumps({"word": word, "sentences": used,
                                                                     "matrix": matrix.tolist()}, indent=1))
            info["plot"] = str(out / f"similarity-{name}.png")
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def word_similarity(net, tok, sentences: Sequence[str], word: str, layer: int = -1, max_length: int = 128,
                    limit: int = 20) -> tuple[np.ndarray, list[str]]:
    """Cosine similarities between the contextual embeddings of `word` (mean of its pieces, first occurrence,
    case-insensitive whole word) in each sentence that contains it (at most `limit` sentences)."""
    pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
    used, spans = [], []
    for s in sentences:
        m = pattern.search(s)
        if m:
            used.append(s)
            spans.append((m.start(), m.end()))
        if len(used) >= limit:
            break
    if len(used) < 2:
        raise SelfsupError(f"--word: {word!r} occurs in {len(used)} sentence(s); need at least 2")
    vecs = []
    for i in range(0, len(used), 16):
        enc = _encode(tok, used[i:i + 16], max_length)
        offsets = enc.pop("offset_mapping")
        special = enc.pop("special_tokens_mask")
        h = _hidden(net, dict(enc), layer)
        for j, (a, b) in enumerate(spans[i:i + 16]):
            pos = [p for p in range(h.shape[1]) if not special[j, p] and enc["attention_mask"][j, p]
                   and int(offsets[j, p, 0]) < b and int(offsets[j, p, 1]) > a]
            if not pos:
                raise SelfsupError(f"--word: {word!r} was truncated away in: {used[i + j][:80]!r}")
            vecs.append(h[j, pos].mean(0).numpy())
    v = np.stack(vecs)
    v = v / np.linalg.norm(v, axis=1, keepdims=True).clip(min=1e-12)
    return v @ v.T, used
