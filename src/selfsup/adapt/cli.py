"""Verbs of the adaptation side: `finetune`, `predict`, `benchmark`, `embed`, `incontext`, `early-exit`,
`distill`, `prune`. `--method` choices and help come from the method registry.

Imports nothing heavy at module level (the CLI imports this module to build its parser)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selfsup.adapt.core.kinds import TASK_KINDS
from selfsup.fileio import model_folder_format


def default_lr_text(method) -> str:
    """The default lr as --print-config states it (full fine-tuning scales it with the model's width on text)."""
    from selfsup.adapt.methods.base import AdaptMethod

    if type(method).text_lr is AdaptMethod.text_lr:
        return f"{method.default_lr:g}"
    tables = f", {method.table_lr:g} on tables" if method.table_lr else ""
    return (f"{method.default_lr:g} x 768 / the model's hidden size on text, within [2e-5, 1e-3]; "
            f"{method.image_lr:g} on images and audio{tables}")


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
    if not args.print_config:
        from selfsup.fileio import check_local_paths

        check_local_paths([args.train, args.eval, args.unlabeled])  # before torch: a typo costs no wait
    from selfsup.adapt.core.run import finetune

    if args.print_config:
        print(_finetune_config(args), end="")
        return 0
    m = finetune(args.model, args.task, args.train, args.eval, args.out, method=args.method, init=args.init,
                 text_column=args.text_column, pair_column=args.pair_column, label_column=args.label_column,
                 epochs=args.epochs, max_steps=args.max_steps, seed=args.seed, overrides=args.set,
                 train_fraction=args.train_fraction, shots=args.shots, seeds=args.seeds,
                 progress=not args.no_progress, unlabeled=args.unlabeled, resume=args.resume,
                 symbol_map=args.symbol_map)
    if m.get("ensemble"):  # --method pet: the pattern ensemble that made the soft labels
        ensemble = {k: v for k, v in m["ensemble"].items() if k != "examples"}
        print(f"PET ensemble of {len(m['pvps'])} patterns: {_fmt(ensemble)}")
    shown = m.get("eval_mean_std") or {k: v for k, v in m["eval"].items() if k != "examples"}
    print(f"eval: {_fmt(shown) if 'eval_mean_std' not in m else ', '.join(f'{k}={v}' for k, v in shown.items())}")
    print(f"trainable parameters {m['trainable_parameters']:,} of {m['total_parameters']:,}"
          + (f" ({m['trainable_percent']:.2f}% of the backbone; artifact {m['artifact_bytes']:,} bytes)"
             if m.get("artifact_bytes") else ""))
    fmt = model_folder_format(Path(args.out) / "model")
    print(f"wrote {args.out}/metrics.json" + (f", {args.out}/model ({fmt})" if args.seeds == 1
                                               else f", {args.out}/seed-*/model"))
    return 0


def _finetune_config(args: argparse.Namespace) -> str:
    """`finetune --print-config`: every `--set` key the run would use, resolved, with its meaning and default."""
    from selfsup.adapt.core.run import resolve_options
    from selfsup.adapt.registry import get_method
    from selfsup.recipes.reference import commented_fields

    cfg, opts, modality = resolve_options(args.task, args.method, init=args.init, seeds=args.seeds,
                                          epochs=args.epochs, max_steps=args.max_steps,
                                          train_fraction=args.train_fraction, shots=args.shots, overrides=args.set)
    lines = [f"# selfsup finetune --method {args.method} --task {args.task}: each key is a --set key=value",
             "# --set keys of every method (lr null: the method's default, "
             f"{default_lr_text(get_method(args.method))})",
             *commented_fields(cfg), f"# --set keys of --method {args.method}",
             *(commented_fields(opts) or ["# (none)"])]
    if modality is not None:
        lines += [f"# --set keys of {args.task}", *commented_fields(modality)]
    return "\n".join(lines) + "\n"


def _predict(args: argparse.Namespace) -> int:
    from selfsup.adapt.core.evaluation import predict
    from selfsup.errors import SelfsupError

    out = sys.stdout
    if args.out:
        import os
        import tempfile
        from pathlib import Path

        path = Path(args.out)
        if path.is_dir():
            raise SelfsupError(f"{path}: is a folder; --out takes a .jsonl file")
        if path.exists():
            raise SelfsupError(f"{path}: already exists; choose another --out")
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
        from selfsup.console import info

        info(f"wrote {n} predictions to {path}")
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
    from selfsup.adapt.tools.suite import run_suite

    result = run_suite(args.suite, args.out, progress=not args.no_progress)
    print(result["markdown"])
    print(f"wrote {result['out']}/results.md, results.json, curves.png")
    return 0


def _incontext(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.incontext import incontext

    m = incontext(args.model, args.task, args.train, args.eval, shots=args.shots, draws=args.draws,
                  calibrate=args.calibrate, template=args.template, verbalizer=args.verbalizer,
                  text_column=args.text_column, pair_column=args.pair_column, label_column=args.label_column,
                  out=args.out, seed=args.seed, overrides=args.set)
    print(m["summary"] + (f"; wrote {args.out}/metrics.json" if args.out else ""))
    return 0


def _add_incontext_verb(sub) -> None:
    ic = sub.add_parser("incontext", help="in-context learning: a causal LM classifies from K demonstrations, "
                        "no training", description="Score each label word's likelihood after a prompt with K "
                        "demonstrations drawn from --train (0: zero-shot), for each example of --eval; repeat "
                        "with --draws demonstration sets and report mean ± std. No gradient step.")
    ic.add_argument("--model", required=True, metavar="CAUSAL_LM", help="a GPT-2 / Llama checkpoint or run folder")
    ic.add_argument("--task", required=True, choices=("sequence-classification", "pair-classification"),
                    metavar="KIND", help="sequence-classification | pair-classification")
    ic.add_argument("--train", required=True, metavar="FILE", help="where demonstrations are drawn from")
    ic.add_argument("--eval", required=True, metavar="FILE")
    ic.add_argument("--shots", type=int, default=0, metavar="K", help="demonstrations per prompt (random, "
                    "not stratified; default 0: zero-shot)")
    ic.add_argument("--draws", type=int, default=1, metavar="N", help="demonstration sets (seeds S..S+N-1)")
    ic.add_argument("--calibrate", nargs="?", const="content-free", choices=("content-free", "batch"),
                    metavar="content-free|batch", help="calibrate the label probabilities: content-free (the "
                    "default; Zhao et al. 2021: divide by the prior of content-free inputs, --set content_free="
                    "'[N/A, \"\", \"[MASK]\"]') or batch (Zhou et al. 2024: by their mean over the evaluation "
                    "examples)")
    ic.add_argument("--template", metavar="T", help="e.g. '{text} It was {mask}' ({mask} last; {pair} for "
                    "pair-classification)")
    ic.add_argument("--verbalizer", metavar="V", help="label -> word(s): inline YAML '{pos: great, neg: "
                    "[bad, awful]}' or a .json/.yaml file (default: the label names)")
    _columns(ic)
    ic.add_argument("--out", metavar="DIR", help="new folder for metrics.json")
    ic.add_argument("--seed", type=int, default=0, metavar="S")
    ic.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="keys: eval_batch_size, max_length, content_free, threads, device")
    ic.set_defaults(func=_incontext)


def _embed(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.embed import embed

    info = embed(args.model, args.input, args.out, level=args.level, pooling=args.pooling, layer=args.layer,
                 text_column=args.text_column, batch_size=args.batch_size, max_length=args.max_length,
                 word=args.word)
    print(f"wrote {info['count']} {args.level} embeddings of size {info['dim']} to {args.out}/"
          + (f"; similarity plot {info['plot']}" if info.get("plot") else ""))
    return 0


def _method_help(method) -> str:
    import dataclasses

    keys = [f.name for f in dataclasses.fields(method.Options)]
    return f"{method.name}: {method.help}" + (f" (--set {', '.join(keys)})" if keys else "")


def add_parser(sub) -> None:
    from selfsup.adapt.registry import get_method, method_names

    ft = sub.add_parser("finetune", help="fine-tune a checkpoint on a labeled text, image or audio task",
                        description="Train a task head on MODEL (a selfsup run folder or a local HF checkpoint "
                                    "folder) and evaluate it every epoch.")
    ft.add_argument("--model", required=True, metavar="MODEL")
    ft.add_argument("--task", required=True, choices=TASK_KINDS, metavar="KIND", help=" | ".join(TASK_KINDS))
    ft.add_argument("--train", required=True, metavar="FILE", help="CSV/TSV/JSONL, CoNLL (tagging), SQuAD JSON "
                    "(QA) or hf:NAME[:CONFIG][@SPLIT]")
    ft.add_argument("--eval", required=True, metavar="FILE")
    ft.add_argument("--out", required=True, metavar="DIR", help="new folder: model/, metrics.json, curves.png")
    ft.add_argument("--method", choices=method_names(), default="full", metavar="METHOD",
                    help="; ".join(_method_help(get_method(name)) for name in method_names()))
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
    ft.add_argument("--unlabeled", metavar="FILE", help="--method pet: unlabeled examples (same format and "
                    "columns as --train; labels ignored) soft-labeled by the pattern ensemble")
    ft.add_argument("--symbol-map", metavar="MAP", help="cross-discipline transfer: rewrite each symbol (character; "
                    "--set kmer=K groups K) of the texts as `words` (a whole-word token of the model's vocabulary "
                    "each), `chars` (spaced out) or per a JSON/YAML file {symbol: word}; saved with the model")
    ft.add_argument("--resume", action="store_true", help="continue a killed run of this same command from its "
                    "last epoch (its state is kept beside --out until the run completes)")
    ft.add_argument("--no-progress", action="store_true", help="no per-epoch lines")
    ft.add_argument("--print-config", action="store_true", help="print the resolved --set keys (shared, the "
                    "method's, the modality's) with each one's meaning and stop: no model or data read")
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
    _add_incontext_verb(sub)
    _add_smaller_model_verbs(sub)  # distill, prune

    ee = sub.add_parser("early-exit", help="sweep early-exit thresholds: accuracy vs wall-time speedup",
                        description="For a model fine-tuned with --method early-exit, measure accuracy, average "
                                    "exit layer and wall-time speedup over the full model for each threshold; "
                                    "writes sweep.json, sweep.md and speed_accuracy.png into a new --out.")
    ee.add_argument("--model", required=True, metavar="DIR", help="a `selfsup finetune --method early-exit` run")
    ee.add_argument("--eval", required=True, metavar="FILE", help="labeled file")
    ee.add_argument("--out", required=True, metavar="DIR")
    ee.add_argument("--rule", choices=("entropy", "patience"), default="entropy",
                    help="entropy (DeeBERT): exit when the prediction entropy < threshold; patience (PABEE): exit "
                         "after N layers with an unchanged prediction")
    ee.add_argument("--thresholds", metavar="LIST", help="comma-separated entropy thresholds (default "
                    "0,0.05,0.1,0.2,...,0.6) or patience values (default 1..layers)")
    ee.add_argument("--batch-size", type=int, default=32, metavar="N")
    ee.add_argument("--repeats", type=int, default=3, metavar="N", help="timed passes per setting (best is kept)")
    _columns(ee)
    ee.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. --set threads=1")
    ee.set_defaults(func=_early_exit)


def _early_exit(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.exit_sweep import exit_sweep, sweep_markdown

    result = exit_sweep(args.model, args.eval, args.out, rule=args.rule, thresholds=args.thresholds,
                        batch_size=args.batch_size, repeats=args.repeats, text_column=args.text_column,
                        pair_column=args.pair_column, label_column=args.label_column, overrides=args.set)
    print(sweep_markdown(result), end="")
    print(f"wrote {args.out}/sweep.json, sweep.md, speed_accuracy.png")
    return 0


def _distill(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.distill import distill

    m = distill(args.teacher, args.student, args.train, args.eval, args.out, unlabeled=args.unlabeled,
                init=args.init, epochs=args.epochs, max_steps=args.max_steps, seed=args.seed, seeds=args.seeds,
                overrides=args.set, text_column=args.text_column, pair_column=args.pair_column,
                label_column=args.label_column, progress=not args.no_progress)
    shown = m.get("eval_mean_std") or {k: v for k, v in m["eval"].items() if k != "examples"}
    print(f"teacher: {_fmt({k: v for k, v in m['teacher']['eval'].items() if k != 'examples'})}")
    print(f"student: {_fmt(shown) if 'eval_mean_std' not in m else ', '.join(f'{k}={v}' for k, v in shown.items())}")
    print(f"parameters {m['teacher']['parameters']:,} -> {m['total_parameters']:,} "
          f"(compression {m['compression']:.2f}x)")
    print(f"wrote {args.out}/metrics.json, table.md, " + ("model/ (Hugging Face format)" if args.seeds == 1
                                                          else "seed-*/model"))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.prune import markdown_table, prune

    m = prune(args.model, args.eval, args.out, layers=args.layers, heads=args.heads, sweep=args.sweep,
              importance_data=args.importance_data, layer_order=args.layer_order, train=args.train,
              finetune_epochs=args.finetune_epochs, text_column=args.text_column, pair_column=args.pair_column,
              label_column=args.label_column, seed=args.seed, overrides=args.set)
    print(markdown_table(m.get("rows") or [m["original"], m["pruned"]], m["main_metric"]), end="")
    print(f"wrote {args.out}/table.md, table.json, size_accuracy.png, metrics.json"
          + ("" if args.sweep else ", model/ (Hugging Face format)"))
    return 0


def _add_smaller_model_verbs(sub) -> None:
    ds = sub.add_parser("distill", help="knowledge distillation: a fine-tuned teacher -> a smaller student",
                        description="Train STUDENT on the teacher's softened predictions (Hinton et al. 2015): "
                                    "alpha * T^2 * KL + (1 - alpha) * cross-entropy; --unlabeled rows get the KL "
                                    "term only. Without --student (or with the teacher itself) and --set "
                                    "student_layers=N, the student is the teacher with N evenly spaced layers.")
    ds.add_argument("--teacher", required=True, metavar="DIR", help="a `selfsup finetune` folder "
                    "(sequence- or pair-classification)")
    ds.add_argument("--student", metavar="MODEL", help="checkpoint sharing the teacher's vocabulary "
                    "(default: the teacher's architecture)")
    ds.add_argument("--train", required=True, metavar="FILE")
    ds.add_argument("--eval", required=True, metavar="FILE")
    ds.add_argument("--out", required=True, metavar="DIR", help="new folder: model/, metrics.json, table.md, "
                    "curves.png")
    ds.add_argument("--unlabeled", metavar="FILE", help="extra rows (labels ignored) labeled by the teacher")
    ds.add_argument("--init", choices=("pretrained", "scratch"), default="pretrained",
                    help="scratch: the student architecture, randomly initialized")
    _columns(ds)
    g = ds.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, metavar="E")
    g.add_argument("--max-steps", type=int, metavar="N")
    ds.add_argument("--seed", type=int, default=0, metavar="S")
    ds.add_argument("--seeds", type=int, default=1, metavar="N", help="repeat with N seeds; report mean ± std")
    ds.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="temperature=2, alpha=0.5, student_layers=N, and finetune's keys (lr, batch_size, ...)")
    ds.add_argument("--no-progress", action="store_true", help="no per-epoch lines")
    ds.set_defaults(func=_distill)

    pn = sub.add_parser("prune", help="structured pruning: drop attention heads or layers, accuracy vs size",
                        description="Remove the least important attention heads (Michel et al. 2019) or layers "
                                    "of a fine-tuned BERT-family classifier; --sweep tries several sizes and "
                                    "writes table.md/json and size_accuracy.png.")
    pn.add_argument("--model", required=True, metavar="DIR", help="a `selfsup finetune` folder")
    pn.add_argument("--eval", required=True, metavar="FILE", help="labeled file")
    pn.add_argument("--out", required=True, metavar="DIR")
    what = pn.add_mutually_exclusive_group(required=True)
    what.add_argument("--layers", type=int, metavar="N", help="keep N layers")
    what.add_argument("--heads", type=float, metavar="F", help="remove the fraction F (0 <= F < 1) of the heads")
    what.add_argument("--sweep", action="store_true", help="remove 25/50/75%% of the heads, keep L-1..1 layers")
    pn.add_argument("--importance-data", metavar="FILE", help="labeled file for the importance scores "
                    "(default: --eval; a training file avoids tuning on the evaluation data)")
    pn.add_argument("--layer-order", choices=("importance", "top"), default="importance",
                    help="which layers go: the least important (loss increase when skipped) or the top ones")
    pn.add_argument("--train", metavar="FILE", help="labeled file for --finetune-epochs")
    pn.add_argument("--finetune-epochs", type=int, default=0, metavar="E", help="fine-tune each pruned model "
                    "for E epochs on --train to recover accuracy")
    _columns(pn)
    pn.add_argument("--seed", type=int, default=0, metavar="S")
    pn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="finetune's keys: lr, batch_size, eval_batch_size, threads, device, ...")
    pn.set_defaults(func=_prune)
