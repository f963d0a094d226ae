"""Peak memory of `selfsup pretrain mlm` (tokenizer training and tokenization included) as the corpus grows.

Each corpus is the embedded Jane Austen text, repeated with a different letter substitution per copy (copy k
maps the alphabet through a permutation drawn from seed k), so the vocabulary grows with the corpus as a new
text's would — the worst case for a tokenizer trainer, which keeps a count per distinct word. `--layout lines`
also drops the blank lines (one sentence per line, no paragraphs), the shape that made memory grow with the
file before paragraphs were bounded. Every run gets a fresh cache folder, so tokenizer training and
tokenization are measured, and runs 5 optimizer steps. Peak RSS is the child's own (`os.wait4`), one process
per size; the ratio column is each size's peak over the previous size's.

Usage:  python bench/memory_growth.py [--sizes-mb 2,20,200] [--layout paragraphs|lines]
Writes bench/results/memory_growth_<layout>.json.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import random
import string
import sys
import tempfile
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "src" / "selfsup" / "assets"


def austen_text() -> str:
    return "".join(lzma.open(p).read().decode() for p in sorted(ASSETS.glob("austen-*.txt.xz")))


def write_corpus(path: Path, n_chars: int, layout: str) -> None:
    text, low = austen_text(), string.ascii_lowercase
    with open(path, "w", encoding="utf-8") as f:
        written, k = 0, 0
        while written < n_chars:
            perm = list(low)
            random.Random(k).shuffle(perm)
            piece = text if k == 0 else text.translate(str.maketrans(low + low.upper(),
                                                                     "".join(perm) + "".join(perm).upper()))
            if layout == "lines":
                piece = "\n".join(line for line in piece.splitlines() if line.strip()) + "\n"
            piece = piece[:n_chars - written]
            f.write(piece)
            written += len(piece)
            k += 1


def run_child(corpus: Path, work: Path) -> tuple[float, float]:
    """Peak RSS (GB, the child's own) and wall seconds of one pretrain run."""
    env = {**os.environ, "SELFSUP_CACHE": str(work / "cache")}
    start = time.time()
    pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "selfsup", "pretrain", "mlm", "--data",
                                          str(corpus), "--out", str(work / "run"), "--max-steps", "5",
                                          "--no-progress"], env,
                         file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                                       (os.POSIX_SPAWN_OPEN, 2, str(work / "stderr"),
                                        os.O_WRONLY | os.O_CREAT, 0o644)])
    _, status, usage = os.wait4(pid, 0)
    if status:
        raise SystemExit(f"pretrain failed on {corpus}: {(work / 'stderr').read_text()[-500:]}")
    return usage.ru_maxrss / 2 ** 20, time.time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", default="2,20,200")
    ap.add_argument("--layout", choices=["paragraphs", "lines"], default="paragraphs")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mb in [float(x) for x in args.sizes_mb.split(",")]:
            work = Path(tmp) / f"{mb:g}"
            work.mkdir()
            corpus = work / "corpus.txt"
            write_corpus(corpus, int(mb * 1e6), args.layout)
            gb, secs = run_child(corpus, work)
            ratio = gb / rows[-1]["peak_rss_gb"] if rows else None
            rows.append({"corpus_mb": mb, "peak_rss_gb": round(gb, 3), "ratio_to_previous": ratio and round(ratio, 3),
                         "wall_s": round(secs, 1)})
            print(f"{mb:>8g} MB  peak RSS {gb:.3f} GB  " + (f"x{ratio:.2f} of the previous  " if ratio else "")
                  + f"{secs:.0f} s", flush=True)
            corpus.unlink()
    out = Path(__file__).parent / "results" / f"memory_growth_{args.layout}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"layout": args.layout, "load_average": os.getloadavg(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
