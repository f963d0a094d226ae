"""Pretraining on artificial data (Chiang & Lee 2020; Papadimitriou & Jurafsky 2020): what transfers to a real
English task from corpora with one kind of structure each, against real English and against no pretraining.

    SELFSUP_CACHE=/tmp/selfsup-cache python bench/artificial_pretraining.py --seeds 3

Every corpus has the same number of words (--tokens), one 64-word sequence per line, made by `selfsup data
artificial`: English (the first --tokens words of the task's unlabeled text, in order), the same words
shuffled within each sequence in 4-grams and one by one (a bag of words), paired tokens (crossing
dependencies), nested tokens (bracket-like), uniformly random tokens; the artificial tokens are the --vocab
most frequent English words, so one tokenizer (trained on the English corpus) serves every run. Each is
pretrained with the demo's recipe (mlm_rope, same steps) and fully fine-tuned on speech-or-narration with 32
labels per class (--seeds seeds, the labeled subset re-drawn per seed); "none" fine-tunes the same
architecture from a random init.

Writes bench/results/artificial/results.json and accuracy.png, and prints the table of docs/methods.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup import finetune, pretrain  # noqa: E402
from selfsup.data.austen import austen_speech_task  # noqa: E402

KINDS = {  # name -> `selfsup data artificial` arguments
    "English": ["--kind", "shuffled", "--window", "64"],
    "English, 4-grams shuffled": ["--kind", "shuffled", "--window", "4"],
    "English, bag of words": ["--kind", "shuffled", "--window", "1"],
    "paired": ["--kind", "paired"],
    "nested": ["--kind", "nested"],
    "random": ["--kind", "random"],
}
FINETUNE = ["lr=1e-3", "max_length=64", "batch_size=32"]


def slug(name: str) -> str:
    return name.lower().replace(", ", "-").replace(" ", "-")


def make_corpus(name: str, out: Path, source: str, tokens: int, vocab: int) -> Path:
    args = KINDS[name]
    extra = ["--source", source] if "shuffled" in args else ["--vocab", str(vocab), "--words-from", source]
    path = out / f"{slug(name)}.txt"
    subprocess.run([sys.executable, "-m", "selfsup", "data", "artificial", *args, *extra, "--tokens", str(tokens),
                    "--length", "64", "--out", str(path)], check=True, stdout=subprocess.DEVNULL)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=400_000)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shots", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--kinds", default=";".join(KINDS), help="names of KINDS, separated by ;")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "artificial"))
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    task = austen_speech_task(out / "task", train_per_class=200, eval_per_class=300)
    corpora = {name: make_corpus(name, out / "corpora", task["unlabeled"], args.tokens, args.vocab)
               for name in ["English"] + [k for k in args.kinds.split(";") if k != "English"]}
    common = ["train.log_every=20", "train.eval_every=100000", "train.checkpoint_every=100000"]
    runs = {name: out / "pretrain" / slug(name) for name in corpora}  # English first: its tokenizer serves all
    results: dict[str, dict] = {}
    for name, corpus in corpora.items():
        tokenizer = [] if name == "English" else ["data.tokenizer.kind=pretrained",
                                                  f"data.tokenizer.pretrained={runs['English'] / 'model'}"]
        started = time.perf_counter()
        m = pretrain("mlm_rope", [str(corpus)], runs[name], max_steps=args.steps, progress=False,
                     overrides=common + tokenizer)
        results[name] = {"pretrain_loss_first": m["train_loss_first"], "pretrain_loss": m["train_loss"],
                         "pretrain_seconds": round(time.perf_counter() - started, 1)}
    for name, run in [*runs.items(), ("none", runs["English"])]:
        m = finetune(run, "sequence-classification", task["train"], task["eval"], out / "finetune" / slug(name),
                     init="scratch" if name == "none" else "pretrained", epochs=args.epochs, shots=args.shots,
                     seeds=args.seeds, overrides=FINETUNE)
        accs = [r["eval"]["accuracy"] for r in m["runs"]] if "runs" in m else [m["eval"]["accuracy"]]
        results.setdefault(name, {}).update({"accuracy": sum(accs) / len(accs), "accuracy_per_seed": accs})
        print(name, json.dumps(results[name]), flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    plot(results, out / "accuracy.png", args)
    print_table(results, args)


def plot(results: dict, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    means = [np.mean(results[n]["accuracy_per_seed"]) for n in names]
    stds = [np.std(results[n]["accuracy_per_seed"]) for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=120)
    ax.barh(names[::-1], means[::-1], xerr=stds[::-1], color="#4c72b0", capsize=3)
    ax.set_xlim(0.45, 1.0)
    ax.set_xlabel(f"accuracy, speech or narration ({args.shots} labels per class, mean ± std of {args.seeds} seeds)")
    ax.set_title(f"MLM-pretrained on {args.tokens:,} tokens of each corpus ({args.steps} steps), then fine-tuned",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def print_table(results: dict, args) -> None:
    import numpy as np

    print(f"\n| pretraining corpus ({args.tokens:,} tokens) | MLM loss first → last | accuracy (mean ± std, "
          f"{args.seeds} seeds) |")
    print("|---|---|---|")
    for name, r in results.items():
        loss = f"{r['pretrain_loss_first']:.2f} → {r['pretrain_loss']:.2f}" if "pretrain_loss" in r else "–"
        acc = r["accuracy_per_seed"]
        print(f"| {name} | {loss} | {100 * np.mean(acc):.1f} ± {100 * np.std(acc):.1f} |")


if __name__ == "__main__":
    main()
