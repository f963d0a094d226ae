"""Cloze accuracy of an MLM run on its own held-out blocks (the demo's measure): one whole word masked per
copy of a held-out passage, top-1 / top-5 of the model against always guessing the most frequent word.

    SELFSUP_CACHE=/tmp/selfsup-bench-cache python bench/cloze.py RUN [--data PATH ...]

RUN is a `selfsup pretrain` folder of an MLM recipe; --data defaults to the embedded Austen corpus.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup.demo import cloze_examples, embedded_corpus  # noqa: E402
from selfsup.recipes import load_recipe  # noqa: E402
from selfsup.registry import get_objective  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", action="append", help="the run's training data (default: the embedded corpus)")
    args = ap.parse_args()
    run = Path(args.run)
    recipe = load_recipe(str(run / "config.yaml"))
    prepared = get_objective(recipe.name).prepare(recipe, args.data or embedded_corpus())  # same split
    rows, scores = cloze_examples(run / "model", prepared.heldout)
    print(json.dumps(scores))
    for row in rows[:5]:
        print(f"{row['context']} | {row['answer']} | {[w for w, _ in row['top5']]}")


if __name__ == "__main__":
    main()
