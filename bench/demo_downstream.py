"""The demo's downstream comparison at its pretraining budget: is the MLM-pretrained tiny BERT better than the same
model untrained on 32 labeled sentences (speech or narration?), over several draws of the labels?

    SELFSUP_CACHE=/tmp/selfsup-bench-cache python bench/demo_downstream.py [--pretrained RUN] [--seeds 3]

Pretrains `mlm_rope` exactly as `selfsup demo` reads it (the first 80% of each novel) for --steps steps with an
export every --export-every steps (or takes --pretrained RUN, a run folder), then for each export fine-tunes
three ways against the same model from a random init: full fine-tuning for 10 steps (the demo before
2026-12-07: batch 32, 10 epochs), full for 40 steps (batch 16, 20 epochs), and a linear classifier on the frozen
features (the demo now: lr 1e-2, batch 16, 30 epochs); every run keep_best=false, --seeds draws of 16 labels per
class, accuracy on 600 held-out sentences, mean ± std. Prints one table row per (budget, setting).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup import pretrain  # noqa: E402
from selfsup.adapt.core.run import finetune  # noqa: E402
from selfsup.data.austen import austen_speech_task  # noqa: E402

SETTINGS = {  # name -> (method, epochs, overrides)
    "full, 10 steps": ("full", 10, ["lr=1e-3", "batch_size=32"]),
    "full, 40 steps": ("full", 20, ["lr=1e-3", "batch_size=16"]),
    "linear on frozen features": ("linear", 30, ["lr=1e-2", "batch_size=16", "eval_every=5"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", help="a run folder of `selfsup pretrain mlm_rope` (its exports/ are used too)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--export-every", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="demo-downstream-"))
    task = austen_speech_task(work / "data", train_per_class=200, eval_per_class=300)
    run = Path(args.pretrained) if args.pretrained else work / "pretrain"
    if not args.pretrained:
        pretrain("mlm_rope", [task["unlabeled"]], run, progress=False,
                 overrides=["train.log_every=10", f"train.max_steps={args.steps}",
                            f"train.export_every={args.export_every}"])
    models = sorted((run / "exports").glob("step-*")) if (run / "exports").is_dir() else [run / "model"]
    print("| pretraining steps | setting | pretrained | untrained |\n|---|---|---|---|", flush=True)
    for model in models:
        for name, (method, epochs, overrides) in SETTINGS.items():
            cells = []
            for init in ("pretrained", "scratch"):
                out = work / "runs" / f"{model.name}-{method}-{epochs}-{init}"
                m = finetune(model, "sequence-classification", task["train"], task["eval"], out, method=method,
                             init=init, epochs=epochs, shots=16, seeds=args.seeds,
                             overrides=overrides + ["max_length=64", "keep_best=false"])
                std = m.get("eval_std", {}).get("accuracy", 0.0)
                cells.append(f"{100 * m['eval']['accuracy']:.1f} ± {100 * std:.1f}")
            print(f"| {model.name} | {name} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
