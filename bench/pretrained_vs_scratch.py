"""Does selfsup pretraining help downstream? Two real labeled tasks cut from the embedded Austen corpus, the same
tiny architecture fine-tuned from the MLM-pretrained checkpoint and from a random init, at several label budgets.

    SELFSUP_CACHE=/tmp/selfsup-bench-cache python bench/pretrained_vs_scratch.py [--pretrained RUN] [--seeds 3]

Tasks (`selfsup.data.austen`; evaluation text comes from the last 20% of each novel, pretraining reads only the
first 80%):
- `speech`: is this sentence spoken by a character or the narrator's? (labels: the author's quotation marks,
  removed from the input) — at 16 (10 and 20 epochs), 32 and 64 labeled sentences per class, and all 1,000 per
  class (fully fine-tuned, and frozen with a linear head);
- `novel`: which of the six novels is this passage from? (all 400 passages per class).

Pretrains `mlm_rope` on the unlabeled part (exactly as `selfsup demo` does: same recipe, same 800 steps, same text)
unless --pretrained gives a run made that way (e.g. the demo's `runs/demo/pretrain`), runs the suite (pretrained vs scratch, same fine-tuning settings, --seeds seeds) and prints the GLUE-style
table; results.md / results.json / curves.png go to bench/results/pretrained_vs_scratch/.
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
from selfsup.adapt.tools.suite import run_suite  # noqa: E402
from selfsup.data.austen import austen_novels_task, austen_speech_task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", help="an existing `selfsup pretrain mlm_rope` run on the tasks' unlabeled text")
    ap.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the recipe's)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--tasks", default="speech-16,speech-16-long,speech-32,speech-64,speech-all,"
                    "speech-all-frozen,novel-all")
    args = ap.parse_args()
    out = ROOT / "bench" / "results" / "pretrained_vs_scratch"
    with tempfile.TemporaryDirectory() as tmp:
        speech = austen_speech_task(Path(tmp) / "speech")
        novel = austen_novels_task(Path(tmp) / "novel")
        run = Path(args.pretrained) if args.pretrained else Path(tmp) / "pretrained"
        if not args.pretrained:
            pretrain("mlm_rope", [speech["unlabeled"]], run, max_steps=args.steps, progress=False)
        specs = {
            "speech-16": {"task": speech, "shots": 16, "epochs": 10},
            "speech-16-long": {"task": speech, "shots": 16, "epochs": 20},
            "speech-32": {"task": speech, "shots": 32, "epochs": 15},
            "speech-64": {"task": speech, "shots": 64, "epochs": 10},
            "speech-all-frozen": {"task": speech, "epochs": 3, "method": "linear"},
            "speech-all": {"task": speech, "epochs": 3},
            "novel-all": {"task": novel, "epochs": 5},
        }
        tasks = []
        for name in args.tasks.split(","):
            spec = specs[name]
            t = {"name": name, "task": "sequence-classification", "train": spec["task"]["train"],
                 "eval": spec["task"]["eval"], "epochs": spec["epochs"]}
            for key in ("shots", "method"):
                if key in spec:
                    t[key] = spec[key]
            tasks.append(t)
        suite = {"title": "tiny BERT (rotary positions): selfsup MLM-pretrained vs scratch on two Austen tasks",
                 "defaults": {"seed": 0, "seeds": args.seeds,
                              "set": [f"lr={args.lr}", "max_length=64", "batch_size=32"]},
                 "tasks": tasks,
                 "models": [{"name": "tiny-bert-rope-mlm", "model": str(run), "inits": ["pretrained", "scratch"]}]}
        (Path(tmp) / "suite.yaml").write_text(yaml.safe_dump(suite))
        shutil.rmtree(out, ignore_errors=True)
        run_suite(Path(tmp) / "suite.yaml", out=out)
    print((out / "results.md").read_text())
    print(f"curves: {out / 'curves.png'}")


if __name__ == "__main__":
    main()
