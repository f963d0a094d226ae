"""Cross-discipline transfer (the seed's DNA -> words -> BERT; after Kao & Lee 2021, "Is BERT a cross-disciplinary
knowledge learner?"): protein sequences rewritten as English words by `--symbol-map words` (amino acid, or
amino-acid 3-mer, -> a fixed one-token English word), then an English-pretrained tiny BERT fine-tuned on
protein-family classification, against the same architecture from scratch.

Data: the Pfam seed alignments HMMER ships as examples (Debian `hmmer-examples`, no download at run time):
fn3, RRM_1, Pkinase, SMC_N domains and the globins; gaps removed, one 60-residue window (at a seeded random
offset) of each domain sequence per example, so that length gives the family away no more; each family split
60/40 into train / eval (seeded), then `--shots` training sequences per family.

    apt-get install hmmer-examples
    SELFSUP_CACHE=/tmp/selfsup-cache python bench/symbol_transfer.py --model RUN   # RUN: an English MLM run

Without --model it pretrains one first (mlm_rope on the six Austen novels, 800 steps). Writes
bench/results/symbol_transfer/results.json and prints the table of docs/methods.md.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup import finetune, pretrain  # noqa: E402

EXAMPLES = Path("/usr/share/doc/hmmer/examples")
FAMILIES = {"fn3": "tutorial/fn3.sto", "RRM_1": "testsuite/RRM_1.sto.gz", "Pkinase": "tutorial/Pkinase.sto",
            "SMC_N": "testsuite/SMC_N.sto.gz", "globin": "tutorial/globins45.fa"}
WINDOW = 60


def read_sequences(path: Path) -> list[str]:
    """Stockholm (name + aligned row; rows of one name joined) or FASTA; gaps removed, upper case."""
    text = (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)).read()
    seqs: dict[str, str] = {}
    if path.name.endswith((".fa", ".fa.gz")):
        name = None
        for line in text.splitlines():
            if line.startswith(">"):
                name = line[1:].split()[0]
                seqs[name] = ""
            elif name:
                seqs[name] += line.strip()
    else:
        for line in text.splitlines():
            if line.strip() and not line.startswith(("#", "//")):
                name, row = line.split()
                seqs[name] = seqs.get(name, "") + row
    return [s for s in ("".join(c for c in v if c.isalpha()).upper() for v in seqs.values()) if len(s) >= WINDOW]


def write_task(out: Path, seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    train, ev = [], []
    for family, rel in FAMILIES.items():
        seqs = read_sequences(EXAMPLES / rel)
        rng.shuffle(seqs)
        cut = int(len(seqs) * 0.6)
        crops = [s[o:o + WINDOW] for s in seqs for o in [rng.randrange(len(s) - WINDOW + 1)]]
        train += [{"text": s, "label": family} for s in crops[:cut]]
        ev += [{"text": s, "label": family} for s in crops[cut:]]
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("eval", ev)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl"), "n_train": len(train),
            "n_eval": len(ev)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="an English-pretrained text run or HF folder (default: pretrain one)")
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "symbol_transfer"))
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    task = write_task(out / "task")
    model = args.model
    if model is None:
        from selfsup.data.austen import austen_speech_task

        unlabeled = austen_speech_task(out / "austen", train_per_class=10, eval_per_class=10)["unlabeled"]
        pretrain("mlm_rope", [unlabeled], out / "english", progress=False,
                 overrides=["train.eval_every=100000", "train.checkpoint_every=100000"])
        model = str(out / "english")
    results = {}
    for kmer in (1, 3):
        for init in ("pretrained", "scratch"):
            m = finetune(model, "sequence-classification", task["train"], task["eval"],
                         out / f"k{kmer}-{init}", init=init, epochs=args.epochs, shots=args.shots, seeds=args.seeds,
                         symbol_map="words", overrides=[f"kmer={kmer}", "lr=1e-3", "max_length=128",
                                                        "batch_size=16"])
            accs = [r["eval"]["accuracy"] for r in m["runs"]] if "runs" in m else [m["eval"]["accuracy"]]
            results[f"{kmer}-mer, {init}"] = accs
            print(kmer, init, accs, flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "task": task, "accuracy": results},
                                                 indent=2) + "\n")
    import numpy as np

    print(f"\n| symbols | English-pretrained | scratch |  ({args.shots} sequences per family, {args.seeds} seeds, "
          f"{task['n_eval']} eval sequences)")
    print("|---|---|---|")
    for kmer in (1, 3):
        cells = [results[f"{kmer}-mer, {i}"] for i in ("pretrained", "scratch")]
        print(f"| {kmer}-mer | " + " | ".join(f"{100 * np.mean(c):.1f} ± {100 * np.std(c):.1f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
