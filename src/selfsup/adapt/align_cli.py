"""`selfsup align`: cross-lingual word retrieval with and without the mean-difference shift
(selfsup.adapt.tools.align). Imports nothing heavy at module level."""
from __future__ import annotations

import argparse
from typing import Any


def _align(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.align import align

    m = align(args.model, args.source, args.target, args.dictionary, args.out, layer=args.layer,
              min_count=args.min_count, max_length=args.max_length, batch_size=args.batch_size,
              translate=args.translate)
    for name in ("without_shift", "with_shift"):
        r = m[name]
        print(f"{name.replace('_', ' '):>14}: MRR {r['mrr']:.3f}, top-1 {r['top1']:.3f}, top-5 {r['top5']:.3f} "
              f"({r['pairs']} dictionary words among {m['target_words']} target words)")
    print(f"wrote {args.out}/metrics.json, pairs.csv, translations.txt, alignment.png")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("align", help="cross-lingual word retrieval with the mean-difference trick (no parallel text)",
                       description="Contextual embeddings of every word of two monolingual corpora, the "
                                   "difference of the two languages' mean embeddings, and retrieval of each "
                                   "dictionary source word's translation among all target words: MRR, top-1, "
                                   "top-5, with and without the shift; plus word-by-word translations.")
    p.add_argument("--model", required=True, help="a multilingual encoder: a selfsup run or Hugging Face folder")
    p.add_argument("--source", required=True, metavar="FILE", help="source-language text (lines, CSV, JSONL)")
    p.add_argument("--target", required=True, metavar="FILE", help="target-language text")
    p.add_argument("--dictionary", required=True, metavar="CSV", help="source,target word pairs (CSV or TSV)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    p.add_argument("--layer", type=int, default=-1, help="hidden layer (default -1, the last; 0 = embeddings)")
    p.add_argument("--min-count", type=int, default=3, help="words seen fewer times are left out (default 3)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--translate", type=int, default=5, metavar="N", help="translate the first N source lines")
    p.set_defaults(func=_align)
