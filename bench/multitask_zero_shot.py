"""Multitask prompted training for zero-shot (Sanh et al. 2022, T0) at the scale of a CPU: does training one
masked LM to answer yes/no prompts on some tasks let it answer a task it never saw?

Three real yes/no tasks from the six Austen novels, each labeled by the author's own marks (quotes and final
punctuation removed from the input): is this sentence spoken (speech or narration), is it a question, is it an
exclamation. Leave one out: `selfsup multitask` trains on the other two (two prompts each, drawn per example)
and classifies the held-out one zero-shot from two prompts of its own; "before" is the same checkpoint without
the multitask step. A tiny RoFormer is MLM-pretrained on the novels' training paragraphs first (or --model).

    SELFSUP_CACHE=/tmp/selfsup-cache python bench/multitask_zero_shot.py --steps 1000 --seeds 3 --max-examples 800
    python bench/multitask_zero_shot.py --model bench/results/multitask/pretrain --labels shuffled \
        --out bench/results/multitask-control                          # the control: labels permuted

Writes bench/results/multitask/{pretrain/, tasks/, <held-out>/seed-S/ (selfsup multitask folders),
zero_shot.png, results.json} and prints the table of docs/methods.md.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup import pretrain  # noqa: E402
from selfsup.adapt.tools.multitask import multitask  # noqa: E402
from selfsup.data.austen import austen_mark_task, austen_speech_task  # noqa: E402
from selfsup.report.figures import plot_grouped_bars  # noqa: E402

PROMPTS = {  # two natural prompts per task; the answer words are the same for every task
    "spoken": ("{text} Was that said aloud? {mask}.", "Is this someone speaking? {mask}. {text}"),
    "question": ("{text} Is that a question? {mask}.", "Was this asked? {mask}. {text}"),
    "exclamation": ("{text} Is that an exclamation? {mask}.", "Was this exclaimed? {mask}. {text}"),
}
YES = {"spoken": "speech", "question": "question", "exclamation": "exclamation"}
NO = {"spoken": "narration", "question": "statement", "exclamation": "statement"}


def task_yaml(name: str, files: dict, held_out: bool, cap: int) -> str:
    verbalizer = f"{{{YES[name]}: yes, {NO[name]}: no}}"
    prompts = "\n".join(f"      - {{template: {json.dumps(t)}, verbalizer: {verbalizer}}}" for t in PROMPTS[name])
    where = (f"    eval: {files['eval']}" if held_out else
             f"    train: {files['train']}\n    eval: {files['eval']}\n    max_examples: {cap}")
    return f"  - name: {name}\n{where}\n    prompts:\n{prompts}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="MLM pretraining steps")
    ap.add_argument("--model", help="an MLM checkpoint to use instead of pretraining one")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-examples", type=int, default=800, help="per training task (T0's mixing cap)")
    ap.add_argument("--labels", choices=("real", "shuffled"), default="real",
                    help="shuffled: a control — the training tasks' labels permuted at random (same prompts, same "
                         "answer words), to tell what the multitask step teaches beyond the prompt format")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "multitask"))
    args = ap.parse_args()
    out = Path(args.out).resolve()  # the mixture files name task files relative to themselves
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    files = {"spoken": austen_speech_task(out / "tasks" / "spoken", train_per_class=800, eval_per_class=250),
             "question": austen_mark_task(out / "tasks" / "question", "?"),
             "exclamation": austen_mark_task(out / "tasks" / "exclamation", "!")}
    if args.labels == "shuffled":
        for name, f in files.items():
            rows = [json.loads(line) for line in open(f["train"])]
            labels = [r["label"] for r in rows]
            random.Random(0).shuffle(labels)
            path = out / "tasks" / f"{name}-shuffled-train.jsonl"
            path.write_text("".join(json.dumps({**r, "label": lab}) + "\n" for r, lab in zip(rows, labels)))
            f["train"] = str(path)
    model = args.model
    if model is None:  # the three tasks cut each novel at the same paragraph: one unlabeled training text
        model = str(out / "pretrain")
        pretrain("mlm_rope", sorted(str(p) for p in (out / "tasks" / "spoken" / "unlabeled").glob("*.txt")),
                 model, max_steps=args.steps, progress=False, overrides=["train.checkpoint_every=100000"])
    rows = {}
    for held in PROMPTS:
        mixture = out / f"{held}.yaml"
        mixture.write_text("train:\n" + "".join(task_yaml(n, files[n], False, args.max_examples) for n in PROMPTS if n != held)
                           + "zero_shot:\n" + task_yaml(held, files[held], True, args.max_examples))
        runs = [multitask(mixture, model, out / held / f"seed-{s}", seed=s,
                          overrides=[f"epochs={args.epochs}", "max_length=64", "batch_size=32"])
                for s in range(args.seeds)]
        zs = [r["zero_shot"][0] for r in runs]
        after = [z["after"]["accuracy"] for z in zs]
        rows[held] = {"before": zs[0]["before"]["accuracy"], "before_f1": zs[0]["before"]["macro_f1"],
                      "after_mean": statistics.mean(after), "after_std": statistics.stdev(after) if len(after) > 1 else 0.0,
                      "after_f1": statistics.mean(z["after"]["macro_f1"] for z in zs), "after": after,
                      "held_in": statistics.mean(r["held_in"].get("held_in_accuracy", float("nan")) for r in runs),
                      "majority": zs[0]["majority"], "examples": zs[0]["examples"],
                      "trained_on": [t["name"] for t in runs[0]["train_tasks"]]}
        print(f"{held}: {rows[held]}", file=sys.stderr)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "model": model, "rows": rows}, indent=2) + "\n")
    plot_grouped_bars({k: {"before (no multitask step)": v["before"], "after multitask": v["after_mean"]}
                       for k, v in rows.items()}, out / "zero_shot.png", ylabel="zero-shot accuracy",
                      title="held-out task (mean of 2 prompts)", reference={k: v["majority"] for k, v in rows.items()})
    print("\n| held-out task | trained on | zero-shot acc. before | after multitask | macro-F1 before → after "
          "| held-in acc. | majority |")
    print("|---|---|---|---|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {', '.join(v['trained_on'])} | {v['before']:.3f} | {v['after_mean']:.3f} ± {v['after_std']:.3f} "
              f"| {v['before_f1']:.3f} → {v['after_f1']:.3f} | {v['held_in']:.3f} | {v['majority']:.3f} |")


if __name__ == "__main__":
    main()
