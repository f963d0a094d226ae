"""Documents with (optional) reference summaries, as word sequences, for the text-as-code summarizer
(objectives/text_as_code.py): the `data:` section, the reader, a word vocabulary and the real sentences its
discriminator sees.

Words are lowercase runs of [a-z0-9] (as rouge-score tokenizes, so ROUGE and the model see the same words). The
vocabulary is plain frequency order over the training documents and summaries (a word-level list needs no
tokenizer training; `selfsup.data.tokenizer` trains sub-word vocabularies, whose pieces would not be words).
`selfsup:package-summaries` names the shipped set (assets/package-summaries.jsonl.xz: package metadata,
document = the long description's first paragraph, summary = the author's one-line summary).
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np

from selfsup.config import bounded
from selfsup.errors import SelfsupError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = {"selfsup:package-summaries": ASSETS / "package-summaries.jsonl.xz"}
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
PAD, UNK, BOS, EOS = range(4)
WORD = re.compile(r"[a-z0-9]+")


@dataclasses.dataclass
class SummaryDataConfig:
    document_key: str = dataclasses.field(default="document", metadata={"doc": "the document's JSONL/CSV key"})
    summary_key: str | None = dataclasses.field(default="summary", metadata={
        "doc": "the reference summary's key (null: none; then real_sentences must be austen)"})
    real_sentences: Literal["summaries", "austen"] = dataclasses.field(default="summaries", metadata={
        "doc": "what the discriminator sees as real: the training documents' summaries (never a held-out one; "
               "drawn at random, unpaired) or sentences of the shipped Austen novels"})
    max_document_words: int = bounded(64, gt=1, doc="words of a document read and reconstructed (longer: cut)")
    vocab_size: int = bounded(4000, ge=16, doc="words kept (most frequent first), specials included")
    min_frequency: int = bounded(1, ge=1, doc="a word seen fewer times is [UNK]")
    holdout_fraction: float = bounded(0.1, ge=0, lt=1, doc="documents held out (evaluation)")

    def validate(self) -> None:
        if self.summary_key is None and self.real_sentences == "summaries":
            raise SelfsupError("real_sentences: 'summaries' needs a summary_key (or use austen)")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclasses.dataclass
class DocPair:
    where: str
    document: list[str]
    summary: list[str] | None


def read_pairs(sources: list[str], document_key: str = "document",
               summary_key: str | None = "summary") -> list[DocPair]:
    """Every row of the JSONL/CSV/TSV sources (or `selfsup:package-summaries`) as a DocPair; a missing key,
    a document without a word or an empty file is an error naming the file (and line)."""
    from selfsup.data.text import expand_sources, file_rows

    if not sources:
        raise SelfsupError("--data: no documents given")
    out: list[DocPair] = []
    files = [str(SHIPPED[s]) if s in SHIPPED else s for s in sources]
    for path in expand_sources(files):
        n = len(out)
        for where, row in file_rows(Path(path)):
            for key in (document_key, summary_key):
                if key is not None and not isinstance(row.get(key), str):
                    problem = "no key" if key not in row else "not text at key"
                    raise SelfsupError(f"{where}: {problem} {key!r} (keys: {', '.join(map(str, row))})")
            doc = words(row[document_key])
            if not doc:
                raise SelfsupError(f"{where}: the document at {document_key!r} has no word")
            out.append(DocPair(where, doc, words(row[summary_key]) if summary_key else None))
        if len(out) == n:
            raise SelfsupError(f"{path}: empty (no documents)")
    return out


class WordVocab:
    """Word <-> id: the four specials, then words by falling frequency (ties alphabetical)."""

    def __init__(self, itos: list[str]):
        if itos[:len(SPECIALS)] != SPECIALS:
            raise SelfsupError(f"vocabulary: must start with {SPECIALS}")
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: list[list[str]], size: int, min_frequency: int = 1) -> "WordVocab":
        counts = Counter(w for t in texts for w in t)
        ranked = sorted((w for w, c in counts.items() if c >= min_frequency), key=lambda w: (-counts[w], w))
        return cls(SPECIALS + ranked[:max(0, size - len(SPECIALS))])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, ws: list[str]) -> np.ndarray:
        return np.asarray([self.stoi.get(w, UNK) for w in ws], dtype=np.int64)

    def decode(self, ids) -> str:
        return " ".join(self.itos[int(i)] for i in ids if int(i) not in (PAD, BOS, EOS))


def austen_sentences(n_words: int) -> list[list[str]]:
    """Every sentence of the shipped Austen novels with at least n_words words, cut to its first n_words."""
    from selfsup.data.text import read_paragraphs

    paths = sorted(str(p) for p in ASSETS.glob("austen-*.txt.xz"))
    return [ws[:n_words] for para in read_paragraphs(paths) for s in para.sentences
            if len(ws := words(s)) >= n_words]


def real_sentences(kind: str, train: list[DocPair], n_words: int) -> list[list[str]]:
    """The discriminator's real sentences, each cut to n_words: the training documents' summaries that have
    n_words words ("summaries"; a held-out summary is never among them), or Austen's sentences ("austen")."""
    if kind == "austen":
        return austen_sentences(n_words)
    real = [p.summary[:n_words] for p in train if p.summary is not None and len(p.summary) >= n_words]
    if not real:
        raise SelfsupError(f"objective.code_words: no training summary has {n_words} words (lower it, or set "
                           "data.real_sentences: austen)")
    return real
