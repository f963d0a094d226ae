"""Verbs for downstream text tasks: `finetune`, `predict`, `benchmark`, `embed` (the text side of `evaluate`
lives here as `evaluate_text`, called by `selfsup.evaluate.cli`).

Imports nothing heavy at module level (the CLI imports this module to build its parser)."""
from __future__ import annotations

import argparse
import json
import sys

KINDS = ("sequence-classification", "sequence-regression", "pair-classification", "token-classification",
         "extractive-qa", "image-classification")


def _columns(p: argparse.ArgumentParser, label: bool = True) -> None:
    p.add_argument("--text-column", metavar="C", help="text column (token-classification: the words; "
                   "extractive-qa: the context)")
    p.add_argument("--pair-column", metavar="C", help="second text (pair-classification: hypothesis; "
                   "extractive-qa: the question)")
    if label:
        p.add_argument("--label-column", metavar="C", help="label column (tags; answers)")


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def _finetune(args: argparse.Namespace) -> int:
    from selfsup.adapt.finetune import finetune

    m = finetune(args.model, args.task, args.train, args.eval, args.out, method=args.method, init=args.init,
                 text_column=args.text_column, pair_column=args.pair_column, label_column=args.label_column,
                 epochs=args.epochs, max_steps=args.max_steps, seed=args.seed, overrides=args.set,
                 train_fraction=args.train_fraction, shots=args.shots, seeds=args.seeds,
                 progress=not args.no_progress)
    shown = m.get("eval_mean_std") or {k: v for k, v in m["eval"].items() if k != "examples"}
    print(f"eval: {_fmt(shown) if 'eval_mean_std' not in m else ', '.join(f'{k}={v}' for k, v in shown.items())}")
    print(f"trainable parameters {m['trainable_parameters']:,} of {m['total_parameters']:,}"
          + (f" ({m['trainable_percent']:.2f}% of the backbone; artifact {m['artifact_bytes']:,} bytes)"
             if m.get("artifact_bytes") else ""))
    print(f"wrote {args.out}/metrics.json" + (f", {args.out}/model (Hugging Face format)" if args.seeds == 1
                                               else f", {args.out}/seed-*/model"))
    return 0


def evaluate_text(args: argparse.Namespace) -> int:
    """`selfsup evaluate --model FINETUNED --eval FILE`: a fine-tuned text model's task metrics."""
    from selfsup.adapt.finetune import evaluate_finetuned
    from selfsup.errors import SelfsupError

    if len(args.eval) != 1:
        raise SelfsupError("--eval: give one labeled file to evaluate a fine-tuned model on")
    m = evaluate_finetuned(args.model, args.eval[0], args.out, text_column=args.text_column,
                           pair_column=args.pair_column, label_column=args.label_column,
                           batch_size=args.batch_size, overrides=args.set)
    print(f"eval: {_fmt(m['eval'])}")
    if args.out:
        out = str(args.out)
        print(f"wrote {out if out.endswith('.json') else out + '/metrics.json'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from selfsup.adapt.finetune import predict
    from selfsup.errors import SelfsupError

    out = sys.stdout
    if args.out:
        import os
        import tempfile
        from pathlib import Path

        path = Path(args.out)
        if path.is_dir():
            raise SelfsupError(f"{path}: is a folder; --out takes a .jsonl file")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                n = _write_predictions(predict(args.model, args.input, text_column=args.text_column,
                                               pair_column=args.pair_column, batch_size=args.batch_size,
                                               overrides=args.set), f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        print(f"wrote {n} predictions to {path}", file=sys.stderr)
        return 0
    _write_predictions(predict(args.model, args.input, text_column=args.text_column, pair_column=args.pair_column,
                               batch_size=args.batch_size, overrides=args.set), out)
    return 0


def _write_predictions(preds, f) -> int:
    n = 0
    for p in preds:
        f.write(json.dumps(p, ensure_ascii=False) + "\n")
        n += 1
    f.flush()
    return n


def _benchmark(args: argparse.Namespace) -> int:
    from selfsup.adapt.suite import run_suite

    result = run_suite(args.suite, args.out, progress=not args.no_progress)
    print(result["markdown"])
    print(f"wrote {result['out']}/results.md, results.json, curves.png")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from selfsup.adapt.embed import embed

    info = embed(args.model, args.input, args.out, level=args.level, pooling=args.pooling, layer=args.layer,
                 text_column=args.text_column, batch_size=args.batch_size, max_length=args.max_length,
                 word=args.word)
    print(f"wrote {info['count']} {args.level} embeddings of size {info['dim']} to {args.out}/"
          + (f"; similarity plot {info['plot']}" if info.get("plot") else ""))
    return 0


def add_parser(sub) -> None:
    ft = sub.add_parser("finetune", help="fine-tune a checkpoint on a labeled text task",
                        description="Train a task head on MODEL (a selfsup run folder or a local HF checkpoint "
                                    "folder) and evaluate it every epoch.")
    ft.add_argument("--model", required=True, metavar="MODEL")
    ft.add_argument("--task", required=True, choices=KINDS, metavar="KIND", help=" | ".join(KINDS))
    ft.add_argument("--train", required=True, metavar="FILE", help="CSV/TSV/JSONL, CoNLL (tagging), SQuAD JSON "
                    "(QA) or hf:NAME[:CONFIG][@SPLIT]")
    ft.add_argument("--eval", required=True, metavar="FILE")
    ft.add_argument("--out", required=True, metavar="DIR", help="new folder: model/, metrics.json, curves.png")
    ft.add_argument("--method", choices=("full", "linear", "lora", "adapter", "prefix", "soft-prompt"),
                    default="full", help="full: train everything; linear: freeze the backbone, train the head; "
                    "lora | adapter (Houlsby) | prefix | soft-prompt: parameter-efficient, saves only the small "
                    "task artifact (--set lora_r=, lora_alpha=, lora_dropout=, adapter_size=, num_virtual_tokens=)")
    ft.add_argument("--init", choices=("pretrained", "scratch"), default="pretrained",
                    help="scratch: the same architecture, randomly initialized")
    _columns(ft)
    g = ft.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, metavar="E")
    g.add_argument("--max-steps", type=int, metavar="N")
    ft.add_argument("--seed", type=int, default=0, metavar="S")
    ft.add_argument("--seeds", type=int, default=1, metavar="N", help="repeat with N seeds; report mean ± std")
    fl = ft.add_mutually_exclusive_group()
    fl.add_argument("--train-fraction", type=float, metavar="F", help="train on a seeded fraction of the data")
    fl.add_argument("--shots", type=int, metavar="K", help="train on K examples per class (stratified, seeded)")
    ft.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="e.g. --set lr=3e-4 --set batch_size=16 (keys: lr, batch_size, max_length, "
                         "warmup_ratio, weight_decay, schedule, dropout, threads, device, doc_stride, ...)")
    ft.add_argument("--no-progress", action="store_true", help="no per-epoch lines")
    ft.set_defaults(func=_finetune)

    pr = sub.add_parser("predict", help="predictions of a fine-tuned text model (JSONL with probabilities)",
                        description="Predict for INPUT (a file, or - for stdin: JSON lines or plain text lines).")
    pr.add_argument("--model", required=True, metavar="DIR")
    pr.add_argument("input", metavar="INPUT")
    pr.add_argument("--out", metavar="FILE", help="JSONL file (default: stdout)")
    _columns(pr, label=False)
    pr.add_argument("--batch-size", type=int, default=64, metavar="N")
    pr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pr.set_defaults(func=_predict)

    bm = sub.add_parser("benchmark", help="run a suite: tasks x models x inits -> GLUE-style table and plot",
                        description="Run SUITE.yaml and write results.md / results.json (with the average) "
                                    "and curves.png (loss and metric per epoch, pretrained vs scratch).")
    bm.add_argument("suite", metavar="SUITE.yaml")
    bm.add_argument("--out", metavar="DIR", help="output folder (default: the suite's `out`)")
    bm.add_argument("--no-progress", action="store_true")
    bm.set_defaults(func=_benchmark)

    em = sub.add_parser("embed", help="contextual sentence or token embeddings (.npy + index)",
                        description="Embed the texts of INPUT (.txt one per line, CSV/TSV/JSONL with "
                                    "--text-column) with MODEL; with --word, also plot the cosine-similarity "
                                    "matrix of that word's embeddings across the sentences.")
    em.add_argument("--model", required=True, metavar="MODEL")
    em.add_argument("input", metavar="INPUT")
    em.add_argument("--out", required=True, metavar="DIR")
    em.add_argument("--level", choices=("sentence", "token"), default="sentence")
    em.add_argument("--pooling", choices=("mean", "cls", "last"), default="mean",
                    help="sentence embedding: mean of tokens, first token, or last token (decoders)")
    em.add_argument("--layer", type=int, default=-1, metavar="L", help="hidden layer (-1: last)")
    em.add_argument("--text-column", metavar="C")
    em.add_argument("--batch-size", type=int, default=32, metavar="N")
    em.add_argument("--max-length", type=int, default=128, metavar="N")
    em.add_argument("--word", metavar="WORD", help="plot this word's similarity across sentences")
    em.set_defaults(func=_embed)
