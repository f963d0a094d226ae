"""Every text pretraining recipe at its default (tiny) size on the embedded Jane Austen corpus: held-out
numbers after the recipe's steps, against the same model untrained (1 step at lr ~ 0), measured in one run.

    SELFSUP_CACHE=/tmp/selfsup-bench-cache python bench/text_methods.py [--steps N] [--recipes mlm gpt ...]

Prints a markdown table (the one in docs/methods.md) and writes bench/results/text_methods.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup import pretrain  # noqa: E402
from selfsup.demo import embedded_corpus  # noqa: E402

RECIPES = ["mlm", "mlm_wwm", "mlm_span", "mlm_rope", "bert_nsp", "albert_sop", "gpt", "bart", "mass"]
# the accuracy each objective reports on held-out data
ACCURACY_KEYS = ["heldout_mlm_accuracy", "heldout_next_token_accuracy", "heldout_token_accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="*", default=RECIPES)
    ap.add_argument("--steps", type=int, default=None, help="default: each recipe's own max_steps")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, repeatable")
    ap.add_argument("--out", default="text_methods.json", help="file name under bench/results/")
    args = ap.parse_args()
    sources = embedded_corpus()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes:
            common = ["train.eval_every=100000", "train.checkpoint_every=100000", f"train.threads={args.threads}",
                      *args.set]
            untrained = pretrain(name, sources, Path(tmp) / f"{name}-0", max_steps=1, progress=False,
                                 overrides=common + ["train.lr=1e-12"])
            started = time.perf_counter()
            trained = pretrain(name, sources, Path(tmp) / name, max_steps=args.steps, progress=False,
                               overrides=common)
            acc_key = next((k for k in ACCURACY_KEYS if k in trained), None)
            pair_key = next((k for k in trained if k in ("heldout_nsp_accuracy", "heldout_sop_accuracy")), None)
            rows.append({
                "recipe": name, "steps": trained["steps"], "seconds": round(time.perf_counter() - started, 1),
                "heldout_loss_untrained": untrained["heldout_loss"], "heldout_loss": trained["heldout_loss"],
                "heldout_perplexity": trained.get("heldout_perplexity"),
                "accuracy_key": acc_key, "heldout_accuracy": trained.get(acc_key) if acc_key else None,
                "pair_accuracy_key": pair_key, "heldout_pair_accuracy": trained.get(pair_key) if pair_key else None,
                "throughput_per_s": trained.get("throughput_per_s"), "parameters": trained["parameters"]})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| recipe | steps | held-out loss untrained → trained | perplexity | token accuracy | "
          "NSP/SOP accuracy | tokens/s | time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        pair = f"{r['heldout_pair_accuracy']:.1%}" if r["heldout_pair_accuracy"] is not None else "–"
        acc = f"{r['heldout_accuracy']:.1%}" if r["heldout_accuracy"] is not None else "–"
        print(f"| `{r['recipe']}` | {r['steps']} | {r['heldout_loss_untrained']:.2f} → {r['heldout_loss']:.2f} | "
              f"{r['heldout_perplexity']:.0f} | {acc} | {pair} | {r['throughput_per_s']:.0f} | {r['seconds']:.0f} s |")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
