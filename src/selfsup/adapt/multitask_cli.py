"""`selfsup multitask`: multitask prompted fine-tuning, then zero-shot on held-out tasks
(selfsup.adapt.tools.multitask). Imports nothing heavy at module level."""
from __future__ import annotations

import argparse
from typing import Any


def _multitask(args: argparse.Namespace) -> int:
    from selfsup.adapt.tools.multitask import multitask

    m = multitask(args.mixture, args.model, args.out, seed=args.seed, overrides=args.set,
                  progress=not args.no_progress)
    for t in m["zero_shot"]:
        print(f"{t['name']}: zero-shot accuracy {t['before']['accuracy']:.3f} -> {t['after']['accuracy']:.3f}, "
              f"macro-F1 {t['before']['macro_f1']:.3f} -> {t['after']['macro_f1']:.3f} (mean of "
              f"{len(t['prompts'])} prompt{'s' if len(t['prompts']) > 1 else ''}; majority class "
              f"{t['majority']:.3f}; {t['examples']} examples)")
    print(f"trained on {m['train_examples']} prompted examples of {len(m['train_tasks'])} tasks in {m['steps']} "
          f"steps; wrote {args.out}/model, metrics.json, zero_shot.png")
    return 0


EXAMPLE = """example mixture (paths relative to the file):

  train:                                   # the mixture: trained on
    - name: speech
      train: speech/train.jsonl            # CSV/TSV/JSONL as for finetune (text_column / label_column keys)
      eval: speech/eval.jsonl              # optional: held-in accuracy per epoch
      max_examples: 800                    # optional cap per task
      prompts:                             # one drawn at random per example
        - {template: "{text} Was it said aloud? {mask}.", verbalizer: {speech: yes, narration: no}}
        - {template: "Spoken? {mask}. {text}", verbalizer: {speech: yes, narration: no}}
  zero_shot:                               # held out: evaluated only, never trained on
    - name: question
      eval: question/eval.jsonl
      template: "{text} Is that a question? {mask}."
      verbalizer: {question: yes, statement: no}
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("multitask", help="multitask prompted fine-tuning, then zero-shot on held-out tasks (T0)",
                       description="Fine-tune one masked or causal LM to fill the blank of each training task's "
                                   "prompts with its label words (a mixture file lists tasks, templates and "
                                   "verbalizers), then classify each held-out task zero-shot from its own "
                                   "prompts; reports accuracy before and after the multitask step.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mixture", metavar="MIXTURE.yaml", help="train: [tasks], zero_shot: [tasks]; each task: name, "
                   "train / eval files, template + verbalizer or prompts: [{template, verbalizer}, ...]")
    p.add_argument("--model", required=True, help="a masked LM (BERT, RoBERTa, ...) or causal LM (GPT-2, Llama): "
                   "a selfsup run or Hugging Face folder")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no per-epoch lines on stderr")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fine-tuning keys as for finetune: epochs, max_steps, lr, batch_size, max_length, ...")
    p.set_defaults(func=_multitask)
