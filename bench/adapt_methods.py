"""Adapting a pretrained model with few labels and few parameters, measured on one real labeled text data set
cut from the embedded Austen corpus (evaluation text comes from the last 20% of each novel, which pretraining never
reads):

- `--task speech` (default): is this sentence a character's speech or the narrator's? (2 classes; labeled by the
  author's quotation marks, which are removed from the input; `austen_speech_task`, 300 training and 300
  evaluation sentences per class);
- `--task novel`: which of the six novels is this passage from? (`austen_novels_task`, 100 + 100 per novel).

    SELFSUP_CACHE=/tmp/selfsup-bench-cache python bench/adapt_methods.py [--task speech|novel] [--mlm RUN] \
        [--gpt RUN] [--parts methods,exit,smaller,few,incontext] [--seeds 3] [--work DIR]

Backbones (pretrained here unless given): `mlm_rope` (the demo's tiny BERT with rotary positions, 800 steps) and
`gpt` (a tiny GPT-2, 300 steps of 16 x 256-token blocks, 512 positions, for in-context learning), both on the
task's unlabeled 80%.

Parts (tables to stdout and bench/results/adapt-<task>/<part>.md):
- `methods`: full, linear, LoRA, Houlsby adapters, prefix, soft prompt, prompt + verbalizer, early exit (full
  depth), a distilled 1-layer student and a head-pruned model — trainable parameters, artifact size, accuracy
  (mean ± std over seeds), training time, inference time (the evaluation file, batch 64);
- `exit`: the early-exit speed/accuracy sweep of the `methods` part's early-exit model (entropy thresholds);
- `smaller`: accuracy vs size of the `methods` part's fully fine-tuned model (seed 0): head and layer pruning
  (`selfsup prune --sweep`, with and without 2 epochs of recovery fine-tuning) and a 1-layer student distilled
  from it (alpha 0.5, T 2) against the same student trained on the labels alone (alpha 0);
- `few`: 16 / 32 / 64 labels per class — classifier head vs prompt + verbalizer (without and with LM-BFF
  demonstrations) vs PET and iPET (their patterns' ensemble soft-labels the training texts, labels dropped);
- `incontext`: the tiny GPT classifies from K = 0, 1, 4, 8 demonstrations (3 draws), uncalibrated, with contextual
  (content-free) calibration and with batch calibration; no gradient step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfsup import pretrain  # noqa: E402
from selfsup.adapt.tools.distill import distill  # noqa: E402
from selfsup.adapt.tools.exit_sweep import exit_sweep  # noqa: E402
from selfsup.adapt.core.evaluation import evaluate_finetuned  # noqa: E402
from selfsup.adapt.core.run import finetune  # noqa: E402
from selfsup.adapt.tools.incontext import incontext  # noqa: E402
from selfsup.adapt.tools.prune import prune  # noqa: E402
from selfsup.data.austen import austen_novels_task, austen_speech_task  # noqa: E402

HEROINES = {"emma": "emma", "persuasion": "anne", "prideprejudice": "elizabeth", "sensesensibility": "elinor",
            "mansfieldpark": "fanny", "northangerabbey": "catherine"}
NARRATION_NEXT = ["the", "she", "he", "it", "her", "they"]  # what usually follows a narrator's sentence
# per task: the prompt method's template + verbalizer, PET's patterns + verbalizers, in-context template + verbalizer.
# Speech: does a quotation mark close (or open) this sentence? — the cue the MLM saw in pretraining.
PROMPTS = {
    "speech": {"template": "{text} {mask}", "verbalizer": {"speech": ['"'], "narration": NARRATION_NEXT},
               "patterns": ["{text} {mask}", "{mask} {text}"],
               "verbalizers": [{"speech": ['"'], "narration": NARRATION_NEXT}, {"speech": ['"'], "narration": ["."]}],
               "incontext": ("{text} {mask}", {"speech": ['"'], "narration": NARRATION_NEXT})},
    "novel": {"template": "{text} It is a story about {mask}.", "verbalizer": HEROINES,
              "patterns": ["{text} It is a story about {mask}.", "{mask} : {text}"],
              "verbalizers": [HEROINES, HEROINES],
              "incontext": ("{text} It is a story about {mask}", HEROINES)},
}
COMMON = ["max_length=64", "batch_size=16", "threads=2"]
ROOT_OUT = ROOT / "bench" / "results"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _runs(m: dict) -> list[dict]:
    return m.get("runs") or [m]


def _saved_bytes(model_dir: Path) -> int:
    """What a method without a small artifact saves: config.json and its weights (as `finetune` counts)."""
    return sum(f.stat().st_size for f in model_dir.iterdir() if f.name == "config.json" or f.suffix == ".safetensors")


def _inference_seconds(folder: Path, eval_file: str) -> float:
    model = folder / "model" if (folder / "model").is_dir() else folder / "seed-0" / "model"
    evaluate_finetuned(model, eval_file, batch_size=64, overrides=["threads=2"])  # warm-up
    start = time.perf_counter()
    evaluate_finetuned(model, eval_file, batch_size=64, overrides=["threads=2"])
    return time.perf_counter() - start


def part_methods(task: dict, mlm: Path, work: Path, seeds: int) -> str:
    prompt = PROMPTS[task["name"]]
    rows = []
    methods = [("full", []), ("linear", []), ("bitfit", []), ("lora", []), ("ia3", []), ("adapter", []), ("prefix", []),
               ("soft-prompt", []),
               ("prompt", [f"template={prompt['template']}", f"verbalizer={json.dumps(prompt['verbalizer'])}"]),
               ("early-exit", [])]
    for method, sets in methods:
        out = work / "methods" / method
        m = finetune(mlm, "sequence-classification", task["train"], task["eval"], out, method=method, epochs=5,
                     seeds=seeds, overrides=COMMON + ["lr=1e-3"] * (method in ("full", "early-exit", "prompt"))
                     + sets)
        runs = _runs(m)
        first = out / "seed-0" if seeds > 1 else out
        info = json.loads((first / "metrics.json").read_text())
        rows.append({"method": method, "trainable": m["trainable_parameters"],
                     "percent": info.get("trainable_percent", 100.0),
                     "artifact": info.get("artifact_bytes") or _saved_bytes(first / "model"),
                     "accuracy": _mean_std([r["eval"]["accuracy"] for r in runs]),
                     "train_s": statistics.mean(json.loads(((out / f"seed-{r['seed']}") if seeds > 1 else out)
                                                           .joinpath("metrics.json").read_text())["train_seconds"]
                                                for r in runs),
                     "infer_s": _inference_seconds(out, task["eval"])})
    teacher = work / "methods" / "full" / ("seed-0" if seeds > 1 else "")
    d = distill(teacher, None, task["train"], task["eval"], work / "methods" / "distill", epochs=5, seeds=seeds,
                overrides=COMMON + ["lr=1e-3", "student_layers=1", "temperature=2", "alpha=0.5"])
    rows.append({"method": "distilled (1 of 2 layers)", "trainable": d["trainable_parameters"], "percent": None,
                 "artifact": None, "accuracy": _mean_std([r["eval"]["accuracy"] for r in _runs(d)]),
                 "train_s": None, "infer_s": _inference_seconds(work / "methods" / "distill", task["eval"])})
    p = prune(teacher, task["eval"], work / "methods" / "pruned", heads=0.5, importance_data=task["train"],
              overrides=["threads=2"])
    pr = p["pruned"]
    rows.append({"method": f"full, {pr['setting']} (seed 0)", "trainable": pr["parameters"], "percent": None,
                 "artifact": None, "accuracy": f"{pr['accuracy']:.3f}", "train_s": None,
                 "infer_s": pr["eval_seconds"]})
    lines = ["| method | trainable parameters | % of backbone | artifact bytes | accuracy | train s | eval s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['trainable']:,} | {_fmt(r['percent'], '.2f')} | "
                     f"{_fmt(r['artifact'], ',')} | {r['accuracy']} | {_fmt(r['train_s'], '.1f')} | "
                     f"{_fmt(r['infer_s'], '.2f')} |")
    return "\n".join(lines)


def _fmt(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _finetune_once(out: Path, *args, **kwargs) -> dict:
    """`finetune` into `out`, or the finished run already there (an interrupted bench goes on where it stopped)."""
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    return finetune(*args, out=out, **kwargs)


def part_few(task: dict, mlm: Path, work: Path, seeds: int) -> str:
    prompt = PROMPTS[task["name"]]
    lines = ["| labels per class | classifier head (full) | prompt + verbalizer | prompt + demonstrations | PET | "
             "PET's pattern ensemble | iPET (1 round) |", "|---|---|---|---|---|---|---|"]
    prompt_sets = [f"template={prompt['template']}", f"verbalizer={json.dumps(prompt['verbalizer'])}"]
    pet_sets = [f"patterns={json.dumps(prompt['patterns'])}", f"verbalizers={json.dumps(prompt['verbalizers'])}"]
    unlabeled = {"unlabeled": task["unlabeled_rows"]}
    for k in (16, 32, 64):
        cells = []
        for name, method, sets, extra in (
                ("full", "full", [], {}), ("prompt", "prompt", prompt_sets, {}),
                ("prompt-demos", "prompt", prompt_sets + ["demonstrations=true", "max_length=128"], {}),
                ("pet", "pet", pet_sets, unlabeled), ("ipet", "pet", pet_sets + ["ipet_rounds=1"], unlabeled)):
            m = _finetune_once(work / "few" / f"{name}-{k}", mlm, "sequence-classification", task["train"],
                               task["eval"], method=method, epochs=10, shots=k, seeds=seeds,
                               overrides=COMMON + ["lr=1e-3"] + sets, **extra)
            cells.append(_mean_std([r["eval"]["accuracy"] for r in _runs(m)]))
            if name == "pet":
                ens = m["ensemble"]
                std = (m.get("ensemble_std") or {}).get("accuracy")
                cells.append(f"{ens['accuracy']:.3f}" + (f" ± {std:.3f}" if std is not None else ""))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def part_incontext(task: dict, gpt: Path, seeds: int) -> str:
    template, verbalizer = PROMPTS[task["name"]]["incontext"]
    lines = ["| demonstrations K | uncalibrated | content-free calibration | batch calibration | batch-calibrated "
             "macro-F1 |", "|---|---|---|---|---|"]
    for k in (0, 1, 4, 8):
        common = dict(shots=k, draws=1 if k == 0 else seeds, template=template, verbalizer=json.dumps(verbalizer),
                      overrides=["threads=2", "max_length=512"])
        cf = incontext(gpt, "sequence-classification", task["train"], task["eval"], calibrate="content-free",
                       **common)
        batch = incontext(gpt, "sequence-classification", task["train"], task["eval"], calibrate="batch", **common)
        lines.append(f"| {k} | {cf['uncalibrated']['eval_mean_std']['accuracy']} | {cf['eval_mean_std']['accuracy']} "
                     f"| {batch['eval_mean_std']['accuracy']} | {batch['eval_mean_std']['macro_f1']} |")
    return "\n".join(lines)


def part_exit(task: dict, work: Path, out_dir: Path) -> str:
    import shutil

    model = work / "methods" / "early-exit"
    model = model / "seed-0" if (model / "seed-0").is_dir() else model
    shutil.rmtree(out_dir / "early_exit", ignore_errors=True)
    top = 0.7 if task["name"] == "speech" else 1.8  # up to the entropy of a near-uniform prediction (ln C)
    res = exit_sweep(model, task["eval"], out_dir / "early_exit", rule="entropy",
                     thresholds=[round(top * i / 7, 3) for i in range(8)], repeats=20, overrides=["threads=2"])
    sweep = out_dir / "early_exit" / "sweep.md"
    return sweep.read_text() if sweep.exists() else str(res)


def part_smaller(task: dict, work: Path, seeds: int) -> str:
    teacher = work / "methods" / "full"
    teacher = teacher / "seed-0" if (teacher / "seed-0").is_dir() else teacher
    lines = []
    for epochs in (0, 2):
        out = work / "smaller" / f"prune-sweep-{epochs}"
        prune(teacher, task["eval"], out, sweep=True, importance_data=task["train"], train=task["train"],
              finetune_epochs=epochs, overrides=["threads=2", "lr=1e-4"])
        lines += [f"Pruning, {epochs} epochs of recovery fine-tuning:", "", (out / "table.md").read_text()]
    lines += ["Distillation into 1 of the 2 layers (DistilBERT-style init from the teacher), 5 epochs:", "",
              "| student | parameters | accuracy | compression |", "|---|---|---|---|"]
    for alpha in (0.5, 0.0):
        d = distill(teacher, None, task["train"], task["eval"], work / "smaller" / f"distill-{alpha}", epochs=5,
                    seeds=seeds, overrides=COMMON + ["lr=1e-3", "student_layers=1", "temperature=2",
                                                     f"alpha={alpha}"])
        name = "distilled (alpha 0.5, T 2)" if alpha else "labels only (alpha 0)"
        lines.append(f"| {name} | {d['trainable_parameters']:,} | "
                     f"{_mean_std([r['eval']['accuracy'] for r in _runs(d)])} | {d['compression']}x |")
    return "\n".join(lines)


def make_task(name: str, work: Path) -> dict:
    if name == "speech":
        task = austen_speech_task(work / "task", train_per_class=300, eval_per_class=300)
    else:
        task = austen_novels_task(work / "task", train_per_class=100, eval_per_class=100)
    rows = [json.loads(line) for line in Path(task["train"]).read_text().splitlines()]
    task["unlabeled_rows"] = str(work / "task" / "unlabeled.jsonl")
    Path(task["unlabeled_rows"]).write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    return {**task, "name": name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(PROMPTS), default="speech")
    ap.add_argument("--mlm", help="a `selfsup pretrain mlm_rope` run on the task's unlabeled text")
    ap.add_argument("--gpt", help="a `selfsup pretrain gpt` run (>= 512 positions) on the task's unlabeled text")
    ap.add_argument("--parts", default="methods,exit,smaller,few,incontext")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra fine-tuning keys for every run, e.g. --set keep_best=false")
    ap.add_argument("--work", help="keep the runs here (default: a temporary folder); later parts read the "
                    "`methods` part's runs from it")
    args = ap.parse_args()
    COMMON.extend(args.set)
    parts = args.parts.split(",")
    out_dir = ROOT_OUT / f"adapt-{args.task}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        task = make_task(args.task, work)
        mlm = Path(args.mlm) if args.mlm else work / "mlm"
        if not args.mlm:
            pretrain("mlm_rope", [task["unlabeled"]], mlm, progress=False)
        gpt = Path(args.gpt) if args.gpt else work / "gpt"
        if "incontext" in parts and not args.gpt and not (gpt / "model").is_dir():
            pretrain("gpt", [task["unlabeled"]], gpt, progress=False, max_steps=300,
                     overrides=["model.max_length=512", "data.block_size=256", "train.batch_size=16"])
        for part in parts:
            start = time.perf_counter()
            table = {"methods": lambda: part_methods(task, mlm, work, args.seeds),
                     "few": lambda: part_few(task, mlm, work, args.seeds),
                     "incontext": lambda: part_incontext(task, gpt, args.seeds),
                     "exit": lambda: part_exit(task, work, out_dir),
                     "smaller": lambda: part_smaller(task, work, args.seeds)}[part]()
            (out_dir / f"{part}.md").write_text(table + "\n")
            print(f"## {part} ({time.perf_counter() - start:.0f} s)\n\n{table}\n", flush=True)


if __name__ == "__main__":
    main()
