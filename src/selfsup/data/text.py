"""Read text from plain files, folders, JSONL/CSV/TSV columns and Hugging Face data sets.

Every source becomes a stream of `Paragraph(doc, sentences)`: a document is one plain-text file or one
JSONL/CSV row; plain text is split into paragraphs on blank lines (wrapped lines are joined), and a paragraph
grows no longer than `MAX_PARAGRAPH_CHARS` (a file with no blank lines — one sentence or one tweet per line —
is read in pieces of whole lines, so memory does not grow with the file). Bad input is a `SelfsupError`
naming the file and line.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from selfsup.errors import SelfsupError

TEXT_SUFFIXES = {".txt", ".text", ".md", ".jsonl", ".json", ".csv", ".tsv", ".xz", ".gz"}
# A rule-based sentence splitter (no data download, unlike nltk's punkt): ends at . ! ? (plus closing quotes
# or brackets) followed by space and an upper-case letter, a digit or an opening quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
# the longest run of lines read before a paragraph is handed on (the document stays the same)
MAX_PARAGRAPH_CHARS = 65536
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Col|Capt|Gen|Rev|No|vs|etc|e\.g|i\.e)\.$")


@dataclass(frozen=True)
class Paragraph:
    doc: int
    sentences: list[str]


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences; abbreviations such as `Mr.` do not end one."""
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        candidate = text[start:m.start() + len(m.group(0).rstrip())].strip()
        if _ABBREV.search(candidate):
            continue
        pieces.append(candidate)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return [p for p in pieces if p]


def _open_bytes(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".xz":
        import lzma
        return lzma.open(path, "rb")  # type: ignore[return-value]
    if path.suffix == ".gz":
        import gzip
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; a NUL byte or invalid UTF-8 is an error naming the line. A UTF-8 byte
    order mark at the start (as spreadsheet programs write) is dropped."""
    with _open_bytes(path) as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if b"\x00" in raw:
                raise SelfsupError(f"{path}:{lineno}: binary data (NUL byte); expected UTF-8 text")
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SelfsupError(f"{path}:{lineno}: invalid UTF-8 at byte {e.start} of the line") from None


def inner_suffix(path: Path) -> str:
    return Path(path.stem).suffix if path.suffix in (".xz", ".gz") else path.suffix


def _plain_paragraphs(path: Path, doc: int) -> Iterator[Paragraph]:
    buf: list[str] = []
    size = 0
    for _, line in decoded_lines(path):
        line = line.strip().lstrip("\ufeff")
        if line:
            buf.append(line)
            size += len(line) + 1
        if buf and (not line or size >= MAX_PARAGRAPH_CHARS):
            yield Paragraph(doc, split_sentences(" ".join(buf)))
            buf, size = [], 0
    if buf:
        yield Paragraph(doc, split_sentences(" ".join(buf)))


def _row_text(row: dict, column: str, where: str) -> str:
    if column not in row:
        raise SelfsupError(f"{where}: no column {column!r} (columns: {', '.join(map(str, row))})")
    value = row[column]
    if not isinstance(value, str):
        raise SelfsupError(f"{where}: column {column!r} is not text: {value!r}"[:200])
    return value


def file_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(`file:line`, row) for each row of a CSV / TSV / JSONL file (also `.gz` / `.xz`)."""
    suffix = inner_suffix(path)
    if suffix in (".csv", ".tsv"):
        numbered = decoded_lines(path)
        current = {"line": 0}

        def lines() -> Iterator[str]:
            for lineno, text in numbered:
                current["line"] = lineno
                yield text

        reader = csv.DictReader(lines(), delimiter="\t" if suffix == ".tsv" else ",")
        if reader.fieldnames is None:
            return
        for row in reader:
            yield f"{path}:{current['line']}", {k: v for k, v in row.items() if k is not None}
        return
    if suffix in (".jsonl", ".json"):
        for lineno, line in decoded_lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SelfsupError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise SelfsupError(f"{path}:{lineno}: expected a JSON object per line")
            yield f"{path}:{lineno}", row
        return
    raise SelfsupError(f"{path}: unknown format {suffix or '(no suffix)'}; use .csv, .tsv, .jsonl or hf:NAME")


def row_paragraphs(rows: Iterator[tuple[str, dict]], column: str, first_doc: int) -> Iterator[Paragraph]:
    """One document per row with non-empty text in `column`."""
    doc = first_doc
    for where, row in rows:
        text = " ".join(_row_text(row, column, where).split())
        if text:
            yield Paragraph(doc, split_sentences(text))
            doc += 1


def expand_sources(sources: list[str]) -> list[str]:
    """Check that every source exists; a folder becomes its text files, sorted."""
    if not sources:
        raise SelfsupError("--data: no data given")
    out: list[str] = []
    for s in sources:
        if s.startswith("hf:"):
            out.append(s)
            continue
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                raise SelfsupError(f"{p}: folder has no text files ({', '.join(sorted(TEXT_SUFFIXES))})")
            out.extend(str(f) for f in files)
        elif p.is_file():
            out.append(str(p))
        else:
            raise SelfsupError(f"{s}: no such file or folder")
    return out


def read_paragraphs(sources: list[str], column: str = "text") -> Iterator[Paragraph]:
    """Stream paragraphs from all sources; documents are numbered across sources. Empty sources are errors."""
    doc = 0
    for s in expand_sources(sources):
        n_before = doc
        count = 0
        if s.startswith("hf:"):
            from selfsup.data.hub import hub_rows

            stream = row_paragraphs(hub_rows(s), column, doc)
        elif inner_suffix(Path(s)) in (".jsonl", ".json", ".csv", ".tsv"):
            stream = row_paragraphs(file_rows(Path(s)), column, doc)
        else:
            stream = _plain_paragraphs(Path(s), doc)
        last = doc - 1
        for para in stream:
            count += 1
            last = para.doc
            yield para
        if count == 0:
            raise SelfsupError(f"{s}: empty (no text found)")
        doc = max(last, n_before) + 1
