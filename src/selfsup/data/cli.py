"""`selfsup data SET ...`: make a data set. One sub-verb per kind of set:

* `speech-words`: labeled English speech synthesized offline with eSpeak NG (selfsup.data.speech_synth).
* `artificial`: pretraining corpora with one kind of structure each (selfsup.data.artificial).

Imports nothing heavy until a sub-verb runs, so `selfsup --help` stays instant.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("data", help="make a data set (e.g. synthetic labeled speech)",
                       description="Make a data set; `selfsup data SET --help` describes each kind.")
    p.set_defaults(func=lambda args: _usage(p))
    sets = p.add_subparsers(dest="data_set", metavar="SET")
    _add_speech_words(sets)
    _add_artificial(sets)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _add_speech_words(sets: Any) -> None:
    from selfsup.data.speech_synth import ACCENTS, SPEEDS, VARIANTS  # light: numpy etc. load when speaking

    p = sets.add_parser("speech-words", help="spoken words (and sentences) from the offline eSpeak NG synthesizer",
                        description="Every word in every voice (accent+variant) at every speed, 16 kHz FLAC, "
                                    "into the new folder DIR (clips/ and manifest.csv: path,word,speaker,accent,"
                                    "variant,speed,seconds). With --sentences N also DIR/sentences/: random "
                                    "strings of the words with an exact word alignment.")
    p.add_argument("--words", required=True, metavar="W1,W2,...", help="comma-separated words, e.g. yes,no,up")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    p.add_argument("--accents", metavar="A1,A2,...", help=f"espeak English accents (default: {','.join(ACCENTS)})")
    p.add_argument("--variants", metavar="V1,V2,...", help=f"espeak voice variants (default: {','.join(VARIANTS)})")
    p.add_argument("--speeds", metavar="NAME=WPM,...", help="speed names and words per minute (default: "
                   f"{','.join(f'{name}={wpm}' for name, wpm in SPEEDS.items())})")
    p.add_argument("--sentences", type=int, default=0, metavar="N", help="also N sentences (default 0)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="sentence randomness (default 0)")
    p.set_defaults(func=_speech_words)


def _speech_words(args: argparse.Namespace) -> int:
    from selfsup.data import speech_synth

    out = Path(args.out)
    manifest = speech_synth.make_word_set(
        out, _names(args.words),
        speech_synth.ACCENTS if args.accents is None else _names(args.accents),
        speech_synth.VARIANTS if args.variants is None else _names(args.variants),
        speech_synth.SPEEDS if args.speeds is None else parse_speeds(args.speeds),
        sentences=args.sentences, seed=args.seed, progress=_show_progress)
    for path in [manifest] + ([out / "sentences" / "manifest.csv"] if args.sentences else []):
        clips, seconds = _summary(path)
        print(f"wrote {path} ({clips} clips, {seconds:.1f} seconds)")
    return 0


def _add_artificial(sets: Any) -> None:
    p = sets.add_parser("artificial", help="a pretraining corpus with one kind of structure (random, paired, "
                        "nested, shuffled real text)",
                        description="Write a corpus of exactly --tokens tokens, one sequence of --length tokens "
                                    "per line: random (uniform tokens), paired (each token and its partner in "
                                    "one sequence, crossing), nested (bracket-like, properly nested), shuffled "
                                    "(--source's words, n-grams of --window words shuffled within each "
                                    "sequence; --window 1 is a bag of words). Then pretrain on it as usual.")
    p.add_argument("--kind", required=True, choices=["random", "paired", "nested", "shuffled"])
    p.add_argument("--out", required=True, metavar="FILE", help="the corpus to write (a new file)")
    p.add_argument("--vocab", type=int, default=500, metavar="N", help="vocabulary size (default 500; even for "
                   "paired and nested)")
    p.add_argument("--tokens", type=int, default=200_000, metavar="N", help="tokens in all (default 200000)")
    p.add_argument("--length", type=int, default=64, metavar="L", help="tokens per sequence (default 64)")
    p.add_argument("--source", action="append", metavar="CORPUS", help="the real text for --kind shuffled "
                   "(files, folders or hf:, like pretrain --data; repeatable)")
    p.add_argument("--window", type=int, default=1, metavar="W", help="words kept in order (default 1)")
    p.add_argument("--words-from", action="append", metavar="CORPUS", help="write token k as the k-th most "
                   "frequent word of CORPUS (so a tokenizer of that language covers it); default w0, w1, ...")
    p.add_argument("--max-depth", type=int, default=None, metavar="D", help="nesting depth limit (nested)")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.set_defaults(func=_artificial)


def _artificial(args: argparse.Namespace) -> int:
    from selfsup.data.artificial import corpus_words, frequent_words, write_artificial

    if args.source and args.kind != "shuffled":
        raise SelfsupError(f"--source is only for --kind shuffled (got --kind {args.kind})")
    if args.words_from and args.kind == "shuffled":
        raise SelfsupError("--words-from is not for --kind shuffled (its tokens are --source's own words)")
    if Path(args.out).exists():  # before reading any corpus
        raise SelfsupError(f"{args.out}: already exists; choose another --out")
    words = corpus_words(args.source) if args.source else None
    names = frequent_words(corpus_words(args.words_from), args.vocab) if args.words_from else None
    info = write_artificial(args.out, args.kind, args.tokens, vocab=args.vocab, length=args.length,
                            seed=args.seed, source_words=words, window=args.window, max_depth=args.max_depth,
                            names=names)
    print(f"wrote {info['out']}: {info['kind']}, {info['tokens']} tokens in {info['lines']} lines, "
          f"{info['distinct_tokens']} distinct tokens")
    return 0


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_speeds(text: str) -> dict[str, int]:
    """"slow=130,fast=200" -> {"slow": 130, "fast": 200}."""
    speeds = {}
    for item in _names(text):
        name, _, wpm = item.partition("=")
        name = name.strip()
        if not name or not wpm.strip().isdigit() or name in speeds:
            raise SelfsupError(f"--speeds: expected distinct NAME=WORDS_PER_MINUTE items like slow=130, got {item!r}")
        speeds[name] = int(wpm)
    return speeds


def _show_progress(label: str, done: int, total: int) -> None:
    """A counter rewritten in place on a terminal; in a log, only the final count; nothing under --quiet."""
    from selfsup.console import is_quiet

    if is_quiet():
        return
    if sys.stderr.isatty():
        print(f"\r{label}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    elif done == total:
        print(f"{label}: {done}/{total}", file=sys.stderr)


def _summary(manifest: Path) -> tuple[int, float]:
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return len(rows), sum(float(row["seconds"]) for row in rows)
