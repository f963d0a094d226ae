"""Cross-discipline transfer (`selfsup finetune --symbol-map MAP [--set kmer=K]`): text over a small alphabet
(DNA, proteins, music, ...) rewritten into what a language model's tokenizer reads, as pure functions.

The inputs are split into symbols: their characters with whitespace dropped, or with `kmer=K` non-overlapping
groups of K characters (a shorter last group stays a symbol). A map then turns a text into

* `words`: each distinct symbol -> one whole-word token of the model's vocabulary, deterministically: the symbols
  sorted, assigned in order to the vocabulary's words in token-id order (special tokens, `##` pieces, tokens that
  are not alphabetic words of 2+ letters, and words that are not one token both at the start of a text and after
  a space are skipped; byte-level BPE's `Ġ` / SentencePiece's `▁` word marks are read as the word);
* `chars`: the symbols spaced out ("ACGT" -> "A C G T"; with kmer=2 "AC GT");
* a JSON / YAML file `{symbol: word}`: each word must be one token of the model's vocabulary.

The resolved map (`SymbolMap.to_json`) is saved with the fine-tuned model as `symbol_map.json` and reapplied to
every example at evaluate / predict time. Every bad input is a one-line `SelfsupError` naming the file and symbol.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from selfsup.errors import SelfsupError

SYMBOL_MAP_FILE = "symbol_map.json"  # beside task.json in a fine-tuned model folder
MODES = ("words", "chars")
WORD_MARKS = ("Ġ", "▁")  # byte-level BPE / SentencePiece: "this token starts a word"


def symbols_of(text: str, kmer: int = 1) -> list[str]:
    """The symbols of `text`: its non-whitespace characters, grouped `kmer` at a time (non-overlapping)."""
    s = "".join(text.split())
    return [s[i:i + kmer] for i in range(0, len(s), kmer)]


def distinct_symbols(texts: Iterable[str], kmer: int = 1) -> list[str]:
    """Every symbol occurring in `texts`, sorted (so the same data always gives the same list)."""
    seen: set[str] = set()
    for t in texts:
        seen.update(symbols_of(t, kmer))
    return sorted(seen)


def spaced(text: str, kmer: int = 1) -> str:
    """The `chars` map: symbols separated by one space."""
    return " ".join(symbols_of(text, kmer))


def one_token(tokenizer, word: str) -> tuple[int, int] | None:
    """(id at the start of a text, id after a space) when `word` is one token in both places, else None."""
    ids = tokenizer(f"{word} {word}", add_special_tokens=False)["input_ids"]
    return (ids[0], ids[1]) if len(ids) == 2 else None


def vocabulary_words(tokenizer, n: int) -> list[str]:
    """The first `n` usable whole words of the tokenizer's vocabulary in token-id order (fewer if it has
    fewer): alphabetic ASCII words of 2+ letters that are one token wherever they stand, each token used once."""
    special = set(tokenizer.all_special_tokens)
    words: list[str] = []
    seen_words: set[str] = set()
    seen_ids: set[int] = set()
    for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        if len(words) >= n:
            break
        if token in special or token.startswith("##"):
            continue
        word = token[1:] if token.startswith(WORD_MARKS) else token
        if len(word) < 2 or not (word.isascii() and word.isalpha()) or word in seen_words:
            continue
        seen_words.add(word)
        ids = one_token(tokenizer, word)
        if ids is None or seen_ids & set(ids):
            continue
        seen_ids.update(ids)
        words.append(word)
    return words


@dataclasses.dataclass
class SymbolMap:
    """A resolved map: `mode` (words / chars / file), `kmer`, and `words` ({symbol: word}) unless chars."""
    mode: str
    kmer: int = 1
    words: dict[str, str] | None = None
    source: str = ""  # where the words came from (a file, or the tokenizer's vocabulary); named in errors

    def apply(self, text: str, where: str = "") -> str:
        if self.words is None:
            return spaced(text, self.kmer)
        out = []
        for sym in symbols_of(text, self.kmer):
            word = self.words.get(sym)
            if word is None:
                raise SelfsupError(f"{self.source}: no word for symbol {sym!r}" + (f" ({where})" if where else ""))
            out.append(word)
        return " ".join(out)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "kmer": self.kmer, "words": self.words, "source": self.source}

    @classmethod
    def from_json(cls, data: Any, name: str) -> "SymbolMap":
        if not isinstance(data, dict) or data.get("mode") not in (*MODES, "file") \
                or not isinstance(data.get("kmer"), int) or data["kmer"] < 1 \
                or not (data.get("words") is None or isinstance(data["words"], dict)) \
                or (data["mode"] != "chars" and data.get("words") is None):
            raise SelfsupError(f"{name}: not a selfsup symbol map (expected mode, kmer, words)")
        return cls(data["mode"], data["kmer"], data.get("words"), name)


def read_map_file(path: str | Path) -> dict[str, str]:
    """A JSON / YAML file {symbol: word} (values must be non-empty text)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SelfsupError(f"{p}: no such symbol-map file (--symbol-map takes words, chars or a JSON/YAML file)")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SelfsupError(f"{p}: unreadable symbol map ({first})") from None
    if not isinstance(data, dict) or not data:
        raise SelfsupError(f"{p}: not a mapping {{symbol: word}} (got {type(data).__name__})")
    out: dict[str, str] = {}
    for sym, word in data.items():
        if not isinstance(sym, str) or not sym:
            raise SelfsupError(f"{p}: symbol {sym!r} is not text (quote it)")
        if not isinstance(word, str) or not word.strip():
            raise SelfsupError(f"{p}: the word for symbol {sym!r} is not text: {word!r}"[:200])
        out[sym] = word.strip()
    return out


def build_symbol_map(spec: str, texts: Sequence[tuple[str, str]], tokenizer, kmer: int = 1,
                     model_name: str = "the model") -> SymbolMap:
    """The map `spec` (words / chars / a file path) resolved on `texts` ((where, text) pairs of the training and
    evaluation inputs) and the model's tokenizer; every symbol of `texts` must have a word."""
    if spec == "chars":
        return SymbolMap("chars", kmer)
    if spec == "words":
        symbols = distinct_symbols((t for _, t in texts), kmer)
        words = vocabulary_words(tokenizer, len(symbols))
        if len(words) < len(symbols):
            raise SelfsupError(f"--symbol-map words: the data has {len(symbols)} distinct symbols (kmer={kmer}) but "
                               f"the tokenizer of {model_name} has only {len(words)} usable whole words; use a "
                               "smaller kmer or a map file")
        return SymbolMap("words", kmer, dict(zip(symbols, words)), f"{model_name} (--symbol-map words)")
    words = read_map_file(spec)
    for sym, word in words.items():
        if one_token(tokenizer, word) is None:
            pieces = tokenizer.tokenize(word)
            raise SelfsupError(f"{spec}: word {word!r} (for symbol {sym!r}) is not one token of {model_name}'s "
                               f"vocabulary (it splits into {pieces[:6]})"[:300])
    smap = SymbolMap("file", kmer, words, str(spec))
    for where, text in texts:  # a symbol without a word names its first occurrence
        smap.apply(text, where)
    return smap


def map_examples(examples: Sequence, smap: SymbolMap | None) -> list:
    """Examples (dataclasses with `text`, optional `pair`, `where`) with their text fields mapped."""
    if smap is None:
        return list(examples)
    out = []
    for e in examples:
        changes = {"text": smap.apply(e.text, e.where)}
        if getattr(e, "pair", None) is not None:
            changes["pair"] = smap.apply(e.pair, e.where)
        out.append(dataclasses.replace(e, **changes))
    return out


def example_texts(examples: Sequence) -> list[tuple[str, str]]:
    """(where, text) of every text field of `examples`."""
    rows = [(e.where, e.text) for e in examples]
    rows += [(e.where, e.pair) for e in examples if getattr(e, "pair", None) is not None]
    return rows


def save_symbol_map(folder: Path, smap: SymbolMap) -> None:
    from selfsup.fileio import atomic_write_json

    atomic_write_json(Path(folder) / SYMBOL_MAP_FILE, smap.to_json())


def load_symbol_map(folder: Path) -> SymbolMap | None:
    """The map saved in a fine-tuned folder, or None when it has none."""
    path = Path(folder) / SYMBOL_MAP_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SelfsupError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    return SymbolMap.from_json(data, str(path))
