"""Artificial pretraining corpora: what does a language model learn from structure alone?

Chiang & Lee, "Pre-Training a Language Model Without Human Language" (2020) and Papadimitriou & Jurafsky,
"Learning Music Helps You Read: Using Transfer to Study Linguistic Structure in Language Models" (2020)
pretrain on token sequences with one kind of structure and fine-tune on real language. The kinds here:

* `random`: tokens drawn uniformly from the vocabulary; no structure at all.
* `paired`: the vocabulary is V/2 pairs (token k and its partner k + V/2); every sequence holds whole pairs,
  each token before its partner, at random places (flat, crossing dependencies).
* `nested`: the same pairs as opening and closing brackets, properly nested (a Dyck language): a
  dependency structure like a syntax tree's.
* `shuffled`: a real corpus whose sequences are cut into word n-grams of W words and shuffled within the
  sequence: W = 1 is a bag of words per sequence, a large W keeps the real order.

Every kind writes exactly the same number of tokens, one sequence per line, so the corpora differ only in
structure. Token ids are written as `w0`, `w1`, ... or, given a real corpus's words (`frequent_words`), as
real words, so that one tokenizer serves the artificial pretraining and the real task after it (as in Chiang
& Lee, where the artificial tokens are ids of the English vocabulary). Pure functions of a seeded `numpy` generator; hand-written, as no library makes these corpora.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from selfsup.errors import SelfsupError

KINDS = ("random", "paired", "nested", "shuffled")


def token_name(i: int) -> str:
    """Token ids as words a WordPiece tokenizer keeps whole."""
    return f"w{i}"


def frequent_words(words: Iterable[str], n: int) -> list[str]:
    """The `n` most frequent purely alphabetic words (lower-cased), most frequent first."""
    counts = Counter(w.lower() for w in words if w.isalpha())
    if len(counts) < n:
        raise SelfsupError(f"--words-from has only {len(counts)} distinct words; --vocab must be at most that")
    return [w for w, _ in counts.most_common(n)]


def line_lengths(n_tokens: int, length: int, even: bool) -> list[int]:
    """Sequence lengths summing to exactly `n_tokens`: full lines of `length`, then the remainder."""
    if even and (n_tokens % 2 or length % 2):
        raise SelfsupError(f"--tokens ({n_tokens}) and --length ({length}) must be even: pairs fill the lines")
    full, rest = divmod(n_tokens, length)
    return [length] * full + ([rest] if rest else [])


def random_sequence(rng: np.random.Generator, vocab: int, length: int) -> list[int]:
    return rng.integers(0, vocab, size=length).tolist()


def paired_sequence(rng: np.random.Generator, vocab: int, length: int) -> list[int]:
    """length/2 uniformly drawn pairs (k, k + vocab/2) at random places, each opener before its partner."""
    half = vocab // 2
    seq = [0] * length
    places = rng.permutation(length).reshape(-1, 2)
    for (a, b), k in zip(places, rng.integers(0, half, size=length // 2)):
        first, second = (a, b) if a < b else (b, a)
        seq[first], seq[second] = int(k), int(k) + half
    return seq


def nested_sequence(rng: np.random.Generator, vocab: int, length: int, max_depth: int | None = None) -> list[int]:
    """A random well-nested bracket sequence: token k opens, k + vocab/2 closes the innermost open k."""
    half = vocab // 2
    seq, stack = [], []
    for position in range(length):
        remaining = length - position
        can_open = len(stack) + 1 <= remaining - 1 and (max_depth is None or len(stack) < max_depth)
        if stack and (not can_open or rng.random() < 0.5):
            seq.append(stack.pop() + half)
        else:
            k = int(rng.integers(0, half))
            stack.append(k)
            seq.append(k)
    return seq


def shuffled_sequence(rng: np.random.Generator, words: list[str], window: int) -> list[str]:
    """`words` cut into consecutive n-grams of `window` words, the n-grams put in a random order."""
    grams = [words[i:i + window] for i in range(0, len(words), window)]
    return [w for g in rng.permutation(len(grams)) for w in grams[g]]


def artificial_lines(kind: str, n_tokens: int, *, vocab: int = 500, length: int = 64, seed: int = 0,
                     source_words: Iterable[str] | None = None, window: int = 1,
                     max_depth: int | None = None, names: Sequence[str] | None = None) -> list[str]:
    """The corpus as lines of space-separated tokens, exactly `n_tokens` tokens in all; token k is written as
    `names[k]` when given (a list of `vocab` distinct words), else as `w<k>`."""
    if kind not in KINDS:
        raise SelfsupError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    if n_tokens < 1 or length < 1:
        raise SelfsupError(f"--tokens and --length must be at least 1 (got {n_tokens}, {length})")
    rng = np.random.default_rng(seed)
    if kind == "shuffled":
        if window < 1:
            raise SelfsupError(f"--window must be at least 1 (got {window})")
        words = _first_words(source_words, n_tokens)
        lines, start = [], 0
        for n in line_lengths(n_tokens, length, even=False):
            lines.append(" ".join(shuffled_sequence(rng, words[start:start + n], window)))
            start += n
        return lines
    if kind != "random" and (vocab < 2 or vocab % 2):
        raise SelfsupError(f"--vocab ({vocab}) must be even and at least 2 for {kind}: it is made of pairs")
    if vocab < 1:
        raise SelfsupError(f"--vocab must be at least 1 (got {vocab})")
    if names is not None and len(set(names)) != vocab:
        raise SelfsupError(f"need {vocab} distinct words to name the tokens, got {len(set(names))}")
    name = token_name if names is None else names.__getitem__
    make = {"random": lambda n: random_sequence(rng, vocab, n), "paired": lambda n: paired_sequence(rng, vocab, n),
            "nested": lambda n: nested_sequence(rng, vocab, n, max_depth)}[kind]
    return [" ".join(map(name, make(n))) for n in line_lengths(n_tokens, length, even=kind != "random")]


def _first_words(source_words: Iterable[str] | None, n_tokens: int) -> list[str]:
    if source_words is None:
        raise SelfsupError("--kind shuffled needs --source CORPUS (the real text to shuffle)")
    words: list[str] = []
    for w in source_words:
        words.append(w)
        if len(words) == n_tokens:
            return words
    raise SelfsupError(f"--source has only {len(words)} words; --tokens must be at most that")


def corpus_words(sources: list[str], column: str = "text") -> Iterable[str]:
    """Whitespace words of a real corpus, in order (any source `selfsup pretrain --data` reads)."""
    from selfsup.data.text import read_paragraphs

    for paragraph in read_paragraphs(sources, column):
        for sentence in paragraph.sentences:
            yield from sentence.split()


def write_artificial(out: str | Path, kind: str, n_tokens: int, **kwargs) -> dict:
    """Write the corpus to the new file `out` (atomically) and return what it holds."""
    from selfsup.fileio import atomic_write_text

    out = Path(out)
    if out.exists():
        raise SelfsupError(f"{out}: already exists; choose another --out")
    lines = artificial_lines(kind, n_tokens, **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines) + "\n")
    distinct = len({t for line in lines for t in line.split()})
    return {"out": str(out), "kind": kind, "tokens": n_tokens, "lines": len(lines), "distinct_tokens": distinct}
