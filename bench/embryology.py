"""BERT embryology (Chiang, Huang & Lee 2020): when does each ability appear during pretraining? A tiny
RoFormer is MLM-pretrained on the six Austen novels with `train.export_every`, and every export is probed with
`selfsup benchmark` (`model: RUN/exports/*`, frozen encoder + linear head) on two real sentence tasks —
speech or narration (syntax and register), which of six novels (topic, names) — and a POS-style tagging task
(does a comma follow this word: phrase and clause boundaries, the commas removed), beside the run's own cloze
ability (held-out masked-token accuracy, logged every --every steps).

    SELFSUP_CACHE=/tmp/selfsup-cache python bench/embryology.py --steps 1200 --every 150

Writes bench/results/embryology/{pretrain/, suite.yaml, bench/ (results.json, steps.png), embryology.png,
results.json} and prints the table of docs/methods.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup import pretrain  # noqa: E402
from selfsup.adapt.tools.suite import run_suite  # noqa: E402
from selfsup.data.austen import austen_comma_task, austen_novels_task, austen_speech_task  # noqa: E402
from selfsup.engine.logs import read_logged  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--every", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "embryology"))
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    speech = austen_speech_task(out / "speech", train_per_class=200, eval_per_class=300)
    novels = austen_novels_task(out / "novels", train_per_class=60, eval_per_class=50)
    comma = austen_comma_task(out / "comma", train_sentences=400, eval_sentences=300)
    run = out / "pretrain"
    pretrain("mlm_rope", sorted(str(p) for p in (out / "speech" / "unlabeled").glob("*.txt")), run,
             max_steps=args.steps, progress=False,
             overrides=[f"train.export_every={args.every}", f"train.eval_every={args.every}",
                        "train.checkpoint_every=100000", "train.log_every=25"])
    suite = out / "suite.yaml"
    suite.write_text(f"""title: embryology
defaults: {{epochs: {args.epochs}, method: linear, set: [lr=3e-3, max_length=64, batch_size=32]}}
tasks:
  - {{name: speech-or-narration, task: sequence-classification, train: {speech['train']}, eval: {speech['eval']}}}
  - {{name: which-novel, task: sequence-classification, train: {novels['train']}, eval: {novels['eval']}}}
  - {{name: comma-tagging, task: token-classification, train: {comma['train']}, eval: {comma['eval']}}}
models:
  - {{name: roformer, model: {run}/exports/*, inits: [pretrained]}}
""")
    res = run_suite(suite, out / "bench")
    curves = {"cloze (held-out masked-token accuracy)": {}}
    for row in read_logged(run):
        if "heldout_mlm_accuracy" in row:
            step = int(row["step"])  # Lightning logs a validation during step N's batch as N - 1
            step += (step + 1) % args.every == 0
            curves["cloze (held-out masked-token accuracy)"][step] = float(row["heldout_mlm_accuracy"])
    for r in res["rows"]:
        curves.setdefault(f"{r['task']} (linear probe accuracy)", {})[int(r["model"].rsplit("-", 1)[1])] = r["score"]
    (out / "results.json").write_text(json.dumps({"args": vars(args), "curves": {k: sorted(v.items())
                                                  for k, v in curves.items()}}, indent=2) + "\n")
    plot(curves, out / "embryology.png", args)
    steps = sorted(curves["cloze (held-out masked-token accuracy)"])
    names = list(curves)
    print("\n| step | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for s in sorted(set(steps) | {k for c in curves.values() for k in c}):
        print(f"| {s} | " + " | ".join(f"{curves[n][s]:.3f}" if s in curves[n] else "–" for n in names) + " |")


def plot(curves: dict, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for i, (name, points) in enumerate(curves.items()):
        xs = sorted(points)
        lo, hi = min(points.values()), max(points.values())
        ax.plot(xs, [(points[x] - lo) / ((hi - lo) or 1) for x in xs], "-o", ms=3, color=f"C{i}",
                label=f"{name}: {lo:.2f} → {hi:.2f}")
    ax.set_xlabel("pretraining step")
    ax.set_ylabel("ability, scaled to its own min..max")
    ax.set_title(f"BERT embryology: mlm_rope on Austen, probed every {args.every} steps", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
