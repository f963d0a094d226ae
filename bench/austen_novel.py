"""Does selfsup pretraining help a downstream task? "Which Austen novel is this passage from" (6 classes,
real text), the same tiny architecture fine-tuned from the MLM-pretrained checkpoint and from scratch.

    SELFSUP_CACHE=/tmp/selfsup-bench-cache python bench/austen_novel.py [--pretrained RUN] [--steps N]

Builds the task with `selfsup.adapt.tasks.austen_novels_task` (evaluation passages come from the last 20% of
each novel; pretraining reads only the first 80%), pretrains `mlm_rope` on the unlabeled part (unless
--pretrained gives a run made that way), runs the suite (pretrained vs scratch, same fine-tuning settings) and
prints the GLUE-style table; the curves go to bench/results/austen_novel/curves.png.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup import pretrain  # noqa: E402
from selfsup.adapt.suite import run_suite  # noqa: E402
from selfsup.adapt.tasks import austen_novels_task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", help="an existing `selfsup pretrain mlm_rope` run on the task's unlabeled text")
    ap.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the recipe's)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", default="3e-4")
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    out = ROOT / "bench" / "results" / "austen_novel"
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "task"
        austen_novels_task(task)
        run = Path(args.pretrained) if args.pretrained else Path(tmp) / "pretrained"
        if not args.pretrained:
            pretrain("mlm_rope", [str(task / "unlabeled")], run, max_steps=args.steps, progress=False,
                     overrides=["data.block_size=64"])
        suite = {"title": "Which Austen novel? tiny BERT (rotary positions): selfsup MLM-pretrained vs scratch",
                 "defaults": {"epochs": args.epochs, "seed": 0, "seeds": args.seeds,
                              "set": [f"lr={args.lr}", "max_length=64", "batch_size=32"]},
                 "tasks": [{"name": "austen-novel", "task": "sequence-classification",
                            "train": str(task / "train.jsonl"), "eval": str(task / "eval.jsonl")}],
                 "models": [{"name": "tiny-bert-rope-mlm", "model": str(run), "inits": ["pretrained", "scratch"]}]}
        (Path(tmp) / "suite.yaml").write_text(yaml.safe_dump(suite))
        shutil.rmtree(out, ignore_errors=True)
        run_suite(Path(tmp) / "suite.yaml", out=out)
    print((out / "results.md").read_text())
    print(f"curves: {out / 'curves.png'}")


if __name__ == "__main__":
    main()
