"""Labeled data for the downstream tasks: readers, label sets, sub-word label alignment, few-label subsets,
(the real built-in tasks made from the Austen corpus live in `selfsup.data.austen`).

Formats: CSV / TSV / JSONL rows with named columns, CoNLL-style files for tagging (`word<TAB>tag` per line,
blank line between sentences; more columns allowed, the last one is the tag), SQuAD JSON for QA, and
`hf:NAME[:CONFIG][@SPLIT]` Hugging Face data sets. Every bad input is a `SelfsupError` naming file and line.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from selfsup.adapt.core.kinds import Columns
from selfsup.data.memory import is_in_memory, memory_rows, source_name
from selfsup.data.text import inner_suffix
from selfsup.errors import SelfsupError

IGNORE = -100  # label of tokens that carry no loss (special tokens, non-first sub-word pieces, padding)


@dataclasses.dataclass
class TextExample:
    """One row of a classification / regression / pair task."""
    text: str
    pair: str | None
    label: str | float | None
    where: str


@dataclasses.dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str] | None
    where: str


@dataclasses.dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (answer text, character start in context)
    where: str


# ---------------------------------------------------------------------------------------------------- rows

def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise SelfsupError(f"{path}: no such file")
    return p


def _hf_rows(spec: str) -> Iterator[tuple[str, dict]]:
    """Rows of an HF data set, ClassLabel ids turned into their names (so labels read like a CSV's)."""
    from selfsup.data.hub import hub_rows, load_hub

    ds = load_hub(spec, streaming=False)
    names: dict[str, Any] = {}
    for col, feat in ds.features.items():
        if hasattr(feat, "names"):
            names[col] = feat.names
        inner = getattr(feat, "feature", None)
        if inner is not None and hasattr(inner, "names"):
            names[col] = ("seq", inner.names)
    for where, row in hub_rows(spec, ds):
        for col, n in names.items():
            if isinstance(n, tuple):
                row[col] = [n[1][v] for v in row[col]]
            elif isinstance(row.get(col), int) and row[col] >= 0:
                row[col] = n[row[col]]
        yield where, row


def iter_rows(source: Any) -> Iterator[tuple[str, dict]]:
    """(where, row) for each row of a CSV / TSV / JSONL file, an `hf:` data set, or in-memory rows; `where` is
    `file:line` (or `<data>[i]`)."""
    if is_in_memory(source):
        yield from memory_rows(source)
        return
    source = str(source)
    if source.startswith("hf:"):
        yield from _hf_rows(source)
        return
    from selfsup.data.text import file_rows

    yield from file_rows(_check_file(source))


def _column(row: dict, column: str, where: str) -> Any:
    if column not in row:
        raise SelfsupError(f"{where}: no column {column!r} (columns: {', '.join(map(str, row))})")
    return row[column]


def text_field(row: dict, column: str, where: str) -> str:
    value = _column(row, column, where)
    if not isinstance(value, str):
        raise SelfsupError(f"{where}: column {column!r} is not text: {value!r}"[:200])
    value = " ".join(value.split())
    if not value:
        raise SelfsupError(f"{where}: empty text in column {column!r}")
    return value


def _label_str(value: Any, column: str, where: str) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise SelfsupError(f"{where}: column {column!r} is not a label: {value!r}"[:200])


def _score(value: Any, column: str, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not math.isfinite(x):
        raise SelfsupError(f"{where}: column {column!r} is not a number: {value!r}"[:200])
    return x


def read_text_examples(source: str, kind: str, columns: Columns, labeled: bool = True) -> list[TextExample]:
    """Rows of a sequence / pair task. With `labeled=False` the label column may be absent (prediction)."""
    out = []
    for where, row in iter_rows(source):
        text = text_field(row, columns.text, where)
        pair = text_field(row, columns.pair, where) if kind == "pair-classification" else None
        label: str | float | None = None
        if labeled or columns.label in row:
            value = _column(row, columns.label, where)
            label = _score(value, columns.label, where) if kind == "sequence-regression" else \
                _label_str(value, columns.label, where)
        out.append(TextExample(text, pair, label, where))
    if not out:
        raise SelfsupError(f"{source_name(source)}: empty (no rows)")
    return out


def read_conll(source: str, labeled: bool = True) -> list[TaggedSentence]:
    """CoNLL-style tagging file: `word<TAB>tag` (or space-separated columns, the last one the tag) per line,
    a blank line between sentences, `-DOCSTART-` lines skipped."""
    from selfsup.data.text import decoded_lines

    path = _check_file(source)
    out: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    first = 0
    for lineno, line in decoded_lines(path):
        line = line.rstrip("\r\n").lstrip("\ufeff")
        if not line.strip():
            if words:
                out.append(TaggedSentence(words, tags if labeled else None, f"{path}:{first}"))
            words, tags = [], []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields if f.strip()]
        if not words:
            first = lineno
        if labeled:
            if len(fields) < 2:
                raise SelfsupError(f"{path}:{lineno}: expected `word<TAB>tag`, got {line.strip()!r}"[:200])
            words.append(fields[0])
            tags.append(fields[-1])
        else:
            words.append(fields[0])
    if words:
        out.append(TaggedSentence(words, tags if labeled else None, f"{path}:{first}"))
    if not out:
        raise SelfsupError(f"{source}: empty (no sentences)")
    return out


def read_tagged(source: str, columns: Columns, labeled: bool = True) -> list[TaggedSentence]:
    """Tagging data: a CoNLL file, or JSONL / `hf:` rows with a list of words and a list of tags."""
    if not is_in_memory(source) and not str(source).startswith("hf:") and \
            inner_suffix(Path(source)) not in (".jsonl", ".json", ".csv", ".tsv"):
        return read_conll(source, labeled)
    out = []
    for where, row in iter_rows(source):
        words = _column(row, columns.text, where)
        if isinstance(words, str):
            words = words.split()
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise SelfsupError(f"{where}: column {columns.text!r} must be a list of words"[:200])
        if not words:
            raise SelfsupError(f"{where}: empty text in column {columns.text!r}")
        tags = None
        if labeled or columns.label in row:
            raw = _column(row, columns.label, where)
            if isinstance(raw, str):
                raw = raw.split()
            if not isinstance(raw, list) or len(raw) != len(words):
                raise SelfsupError(f"{where}: column {columns.label!r} must be a list with one tag per word "
                                   f"({len(words)} words)")
            tags = [_label_str(t, columns.label, where) for t in raw]
        out.append(TaggedSentence([w.strip() for w in words], tags, where))
    if not out:
        raise SelfsupError(f"{source_name(source)}: empty (no rows)")
    return out


def _check_answer(context: str, text: Any, start: Any, where: str) -> tuple[str, int]:
    if not isinstance(text, str) or not text.strip():
        raise SelfsupError(f"{where}: empty answer text")
    if isinstance(start, int) and not isinstance(start, bool) and context[start:start + len(text)] == text:
        return text, start
    if start is None:
        found = context.find(text)
        if found >= 0:
            return text, found
    shown = text if len(text) < 60 else text[:57] + "..."
    raise SelfsupError(f"{where}: answer {shown!r} is not in its context"
                       + (f" at character {start}" if start is not None else ""))


def qa_example(qid: str, question: Any, context: Any, answers: list, where: str, labeled: bool) -> QAExample:
    if not isinstance(question, str) or not question.strip():
        raise SelfsupError(f"{where}: empty question")
    if not isinstance(context, str) or not context.strip():
        raise SelfsupError(f"{where}: empty context")
    checked = [_check_answer(context, t, s, where) for t, s in answers]
    if labeled and not checked:
        raise SelfsupError(f"{where}: no answer (unanswerable questions are not supported)")
    return QAExample(str(qid), question.strip(), context, checked, where)


def read_qa(source: str, columns: Columns, labeled: bool = True) -> list[QAExample]:
    """SQuAD JSON (`{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}`) or JSONL / `hf:` rows in the
    HF squad layout (`id`, `question`, `context`, `answers: {text: [...], answer_start: [...]}`)."""
    out: list[QAExample] = []
    if not is_in_memory(source) and not str(source).startswith("hf:") and inner_suffix(Path(source)) == ".json":
        path = _check_file(source)
        data = path.read_bytes()
        try:
            raw = data.decode("utf-8-sig")  # a byte order mark is fine; invalid UTF-8 names its line
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise SelfsupError(f"{path}:{line}: invalid UTF-8") from None
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SelfsupError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise SelfsupError(f"{path}:1: expected SQuAD JSON with a top-level \"data\" list")
        pos = 0
        for art in doc["data"]:
            for para in (art.get("paragraphs") or []) if isinstance(art, dict) else []:
                context = para.get("context")
                for qa in para.get("qas") or []:
                    qid = str(qa.get("id", len(out)))
                    found = raw.find(json.dumps(qid), pos)  # ids appear in file order: name the line
                    pos = found if found >= 0 else pos
                    where = f"{path}:{raw.count(chr(10), 0, pos) + 1}"
                    answers = [(a.get("text"), a.get("answer_start")) for a in qa.get("answers") or []
                               if isinstance(a, dict)]
                    out.append(qa_example(qid, qa.get("question"), context, answers, where, labeled))
    else:
        for where, row in iter_rows(source):
            context = _column(row, columns.text, where)
            question = _column(row, columns.pair or "question", where)
            answers: list = []
            if labeled or columns.label in row:
                a = _column(row, columns.label, where)
                if isinstance(a, dict):
                    texts, starts = a.get("text") or [], a.get("answer_start") or []
                    answers = list(zip(texts, list(starts) + [None] * (len(texts) - len(starts))))
                elif isinstance(a, list):
                    answers = [(x.get("text"), x.get("answer_start")) if isinstance(x, dict) else (x, None)
                               for x in a]
                elif isinstance(a, str):
                    answers = [(a, None)]
                else:
                    raise SelfsupError(f"{where}: column {columns.label!r} is not an answer: {a!r}"[:200])
            out.append(qa_example(row.get("id", len(out)), question, context, answers, where, labeled))
    if not out:
        raise SelfsupError(f"{source_name(source)}: empty (no questions)")
    return out


def read_task(source: str, kind: str, columns: Columns, labeled: bool = True) -> list:
    if kind == "token-classification":
        return read_tagged(source, columns, labeled)
    if kind == "extractive-qa":
        return read_qa(source, columns, labeled)
    return read_text_examples(source, kind, columns, labeled)


# ------------------------------------------------------------------------------------------------ label sets

def example_labels(ex: Any) -> list[str]:
    if isinstance(ex, TaggedSentence):
        return list(ex.tags or [])
    if isinstance(ex, TextExample) and isinstance(ex.label, str):
        return [ex.label]
    return []


def label_set(examples: Sequence, source: str) -> list[str]:
    """The labels of the training file, sorted (numbers numerically) so the id order is reproducible."""
    labels = {lab for ex in examples for lab in example_labels(ex)}
    if len(labels) < 2:
        raise SelfsupError(f"{source_name(source)}: needs at least 2 distinct labels, found {sorted(labels)}")

    def key(s: str):
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s)
    return sorted(labels, key=key)


def check_labels(examples: Sequence, labels: Sequence[str]) -> None:
    """An eval label never seen in training is an error naming the file and line."""
    known = set(labels)
    for ex in examples:
        for lab in example_labels(ex):
            if lab not in known:
                raise SelfsupError(f"{ex.where}: label {lab!r} never seen in the training data "
                                   f"(known: {', '.join(labels)})"[:300])


# ---------------------------------------------------------------------------------------- sub-word alignment

def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The words joined by single spaces, and each word's [start, end) character span in that text."""
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return " ".join(words), spans


def token_word_ids(offsets: Sequence[tuple[int, int]], sequence_ids: Sequence[int | None],
                   spans: Sequence[tuple[int, int]]) -> list[int | None]:
    """The word each token belongs to (None for special tokens), from character offsets: works for every
    fast tokenizer (WordPiece, BPE, byte-level BPE whose offsets may include the leading space)."""
    n_chars = spans[-1][1] if spans else 0
    char_word = [-1] * n_chars
    for w, (a, b) in enumerate(spans):
        for c in range(a, b):
            char_word[c] = w
    out: list[int | None] = []
    for (a, b), seq in zip(offsets, sequence_ids):
        word = None
        if seq is not None:
            for c in range(max(0, a), min(b, n_chars)):
                if char_word[c] >= 0:
                    word = char_word[c]
                    break
        out.append(word)
    return out


def first_piece_labels(word_ids: Sequence[int | None], word_labels: Sequence[int] | None) -> list[int]:
    """Label on the first sub-word piece of each word, IGNORE on the other pieces and special tokens."""
    out, prev = [], None
    for w in word_ids:
        if w is None or w == prev:
            out.append(IGNORE)
        else:
            out.append(word_labels[w] if word_labels is not None else 0)
        if w is not None:
            prev = w
    return out


def first_piece_index(word_ids: Sequence[int | None], n_words: int) -> list[int | None]:
    """For each word, the position of its first piece (None where truncation dropped the word)."""
    out: list[int | None] = [None] * n_words
    for i, w in enumerate(word_ids):
        if w is not None and out[w] is None:
            out[w] = i
    return out


# --------------------------------------------------------------------------------------------- few labels

def subsample(examples: list, *, fraction: float | None = None, shots: int | None = None, seed: int = 0,
              source: str = "train") -> list:
    """A seeded subset: `fraction` of the examples, or `shots` per class (stratified; classification only).
    The same seed always picks the same examples, in their original order."""
    import random

    rng = random.Random(seed)
    if shots is not None:
        by_class: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            if not isinstance(ex, TextExample) or not isinstance(ex.label, str):
                raise SelfsupError("--shots: needs a classification task (labels per example); use --train-fraction")
            by_class.setdefault(ex.label, []).append(i)
        small = {k: len(v) for k, v in by_class.items() if len(v) < shots}
        if small:
            raise SelfsupError(f"{source_name(source)}: --shots {shots} but some classes have fewer examples: {small}"[:300])
        keep = sorted(i for k in sorted(by_class) for i in rng.sample(by_class[k], shots))
        return [examples[i] for i in keep]
    if fraction is not None and fraction < 1.0:
        n = max(1, round(len(examples) * fraction))
        keep = sorted(rng.sample(range(len(examples)), n))
        return [examples[i] for i in keep]
    return examples


def class_counts(examples: Sequence) -> dict[str, int]:
    return dict(Counter(lab for ex in examples for lab in example_labels(ex)))
