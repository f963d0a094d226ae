"""The tokenized corpus: built once, cached on disk, memory-mapped, so corpus size does not cost RAM.

Layout of a cache folder (`$SELFSUP_CACHE` or ~/.cache/selfsup, keyed by a hash of the sources and the
tokenizer): `tokens.bin` (uint16/uint32 ids; each document's sentences back to back, then one separator
token), `word_start.bin` (uint8, 1 where a token starts a word — from the tokenizer's pre-tokenization
offsets, never from `##` conventions), `sentences.bin` (int64 [start, end) per sentence), `sentence_doc.bin`
(int64 document id per sentence). Every file is written as the tokens are produced, so building the cache
holds one batch of sentences in memory, whatever the corpus size.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from selfsup.config import bounded
from selfsup.data.text import expand_sources, read_paragraphs
from selfsup.data.tokenizer import TokenizerConfig, load_pretrained_tokenizer, special_ids, train_tokenizer
from selfsup.errors import SelfsupError
from selfsup.fileio import atomic_dir

FORMAT_VERSION = 2


@dataclasses.dataclass
class TextDataConfig:
    """How text files become examples (the recipe's `data:` section for text objectives)."""

    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    text_column: str = "text"
    block_size: int = bounded(128, ge=8, doc="tokens per example, special tokens included")
    holdout_fraction: float = bounded(0.05, ge=0, lt=0.5, doc="examples kept out for held-out loss")
    streaming: bool = dataclasses.field(default=False, metadata={"doc": (
        "read, tokenize and pack the text on the fly, no token cache (corpora larger than memory or disk): each "
        "file, or each shard of an hf: data set, is a shard; held out: the first eval_batches x batch_size blocks; "
        "mlm without sentence_task and clm only")})
    shuffle_buffer: int = bounded(1024, ge=0, doc="streaming: blocks each reader draws its batches from at "
                                  "random (0: blocks in shard order)")


def cache_root() -> Path:
    return Path(os.environ.get("SELFSUP_CACHE") or Path.home() / ".cache" / "selfsup")


def fingerprint(sources: list[str], extra: Any) -> str:
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for s in sources:
        h.update(s.encode())
        if not s.startswith("hf:"):
            st = Path(s).stat()
            h.update(f"{Path(s).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def paragraph_texts(sources: list[str], column: str) -> Iterator[str]:
    for para in read_paragraphs(sources, column):
        yield " ".join(para.sentences)


def tokenizer_sample(sources: list[str], column: str, budget: int) -> Iterator[str]:
    """Paragraph texts of about `budget` characters spread over the corpus: each paragraph kept with probability
    budget / (bytes of the local files), drawn from a fixed seed; stops at the budget (an `hf:` source, whose
    size is unknown, gives its first paragraphs)."""
    size = sum(Path(s).stat().st_size for s in sources if not s.startswith("hf:"))
    keep = 1.0 if any(s.startswith("hf:") for s in sources) or size <= budget else budget / size
    rng = np.random.default_rng(0)
    used = 0
    for text in paragraph_texts(sources, column):
        if keep < 1.0 and rng.random() >= keep:
            continue
        yield text
        used += len(text)
        if used >= budget:
            return


def get_tokenizer(cfg: TokenizerConfig, sources: list[str], column: str, add_cls_sep: bool = True,
                  sample: Callable[[int], Iterable[str]] | None = None):
    """The recipe's tokenizer: loaded (kind: pretrained) or trained on the sources and cached. `sample(budget)`
    gives the training text instead of `tokenizer_sample` (streaming reads a bounded sample of its shards)."""
    if cfg.kind == "pretrained":
        return load_pretrained_tokenizer(str(cfg.pretrained), cfg.trust_remote_code)
    from transformers import AutoTokenizer

    sources = expand_sources(sources)
    key = fingerprint(sources, {"tok": dataclasses.asdict(cfg), "cls_sep": add_cls_sep, "column": column,
                                 "v": FORMAT_VERSION, **({"sample": "shards"} if sample else {})})
    folder = cache_root() / "tokenizers" / key
    if not (folder / "tokenizer.json").exists():
        texts = sample(cfg.train_chars) if sample else tokenizer_sample(sources, column, cfg.train_chars)
        tok = train_tokenizer(cfg, texts, add_cls_sep)
        with atomic_dir(folder) as tmp:
            tok.save_pretrained(str(tmp))
    return AutoTokenizer.from_pretrained(str(folder))


@dataclasses.dataclass
class TokenCorpus:
    """A memory-mapped token stream with sentence and document structure."""

    folder: Path
    tokens: np.ndarray
    word_start: np.ndarray
    sentences: np.ndarray  # (n_sentences, 2) [start, end) into tokens
    sentence_doc: np.ndarray  # (n_sentences,) document id
    separator_id: int

    @classmethod
    def open(cls, folder: Path) -> "TokenCorpus":
        meta = json.loads((folder / "meta.json").read_text())
        dtype = np.dtype(meta["dtype"])
        n = meta["n_tokens"]
        return cls(folder,
                   np.memmap(folder / "tokens.bin", dtype=dtype, mode="r", shape=(n,)),
                   np.memmap(folder / "word_start.bin", dtype=np.uint8, mode="r", shape=(n,)),
                   np.memmap(folder / "sentences.bin", dtype=np.int64, mode="r", shape=(meta["n_sentences"], 2)),
                   np.memmap(folder / "sentence_doc.bin", dtype=np.int64, mode="r", shape=(meta["n_sentences"],)),
                   int(meta["separator_id"]))

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_documents(self) -> int:
        return int(self.sentence_doc[-1]) + 1 if len(self.sentence_doc) else 0

    def doc_sentence_ranges(self) -> np.ndarray:
        """(n_docs, 2) [first, last+1) sentence index per document."""
        doc = np.asarray(self.sentence_doc)
        starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
        return np.stack([starts, np.r_[starts[1:], len(doc)]], axis=1)


def word_starts(encoding) -> np.ndarray:
    """uint8 flags, 1 where a token starts a word (from the tokenizer's word ids, not `##` conventions)."""
    words = np.asarray([-1 if w is None else w for w in encoding.word_ids], dtype=np.int64)
    return np.r_[True, words[1:] != words[:-1]].astype(np.uint8)


def build_corpus(sources: list[str], column: str, tokenizer, batch_sentences: int = 4096) -> TokenCorpus:
    """Tokenize the sources once (streaming, constant memory) and cache the result; reuse it next time."""
    sources = expand_sources(sources)
    backend = tokenizer.backend_tokenizer
    key = fingerprint(sources, {"column": column, "v": FORMAT_VERSION,
                                 "tokenizer": hashlib.sha256(backend.to_str().encode()).hexdigest()})
    folder = cache_root() / "corpora" / key
    if (folder / "meta.json").exists():
        return TokenCorpus.open(folder)
    separator = special_ids(tokenizer)["sep"]
    if separator is None:
        raise SelfsupError("tokenizer: needs a [SEP] or end-of-sequence token to separate documents")
    dtype = np.uint16 if len(tokenizer) < 2 ** 16 else np.uint32
    with atomic_dir(folder) as tmp:
        n_tokens = n_sentences = 0
        with open(tmp / "tokens.bin", "wb") as f_tok, open(tmp / "word_start.bin", "wb") as f_ws, \
                open(tmp / "sentences.bin", "wb") as f_sent, open(tmp / "sentence_doc.bin", "wb") as f_doc:
            pending: list[tuple[int, str]] = []
            last_doc = None

            def flush() -> None:
                nonlocal n_tokens, n_sentences
                encs = backend.encode_batch([s for _, s in pending], add_special_tokens=False)
                spans, docs = [], []
                for (doc, _), enc in zip(pending, encs):
                    ids = np.asarray(enc.ids, dtype=dtype)
                    if not len(ids):
                        continue
                    starts = word_starts(enc)
                    ids.tofile(f_tok)
                    starts.tofile(f_ws)
                    spans.append((n_tokens, n_tokens + len(ids)))
                    docs.append(doc)
                    n_tokens += len(ids)
                np.asarray(spans, dtype=np.int64).reshape(-1, 2).tofile(f_sent)
                np.asarray(docs, dtype=np.int64).tofile(f_doc)
                n_sentences += len(docs)
                pending.clear()

            def end_document() -> None:
                nonlocal n_tokens
                np.asarray([separator], dtype=dtype).tofile(f_tok)
                np.asarray([1], dtype=np.uint8).tofile(f_ws)
                n_tokens += 1

            for para in read_paragraphs(sources, column):
                if last_doc is not None and para.doc != last_doc:
                    flush()
                    end_document()
                last_doc = para.doc
                pending.extend((para.doc, s) for s in para.sentences)
                if len(pending) >= batch_sentences:
                    flush()
            flush()
            if last_doc is not None:
                end_document()
        if not n_sentences:
            raise SelfsupError(f"{', '.join(sources)[:200]}: no tokens after tokenization")
        (tmp / "meta.json").write_text(json.dumps({"dtype": np.dtype(dtype).name, "n_tokens": n_tokens,
                                                   "n_sentences": n_sentences, "separator_id": separator,
                                                   "sources": sources}))
    return TokenCorpus.open(folder)
