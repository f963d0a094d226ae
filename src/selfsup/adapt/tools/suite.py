"""`selfsup benchmark SUITE.yaml`: several tasks x several models x inits -> a GLUE-style table.

    out: runs/bench                    # optional (or --out)
    defaults: {epochs: 3, seeds: 1, set: [lr=3e-4]}
    tasks:
      - {name: austen, task: sequence-classification, train: data/train.jsonl, eval: data/eval.jsonl}
      - {name: tags, task: token-classification, train: t.conll, eval: e.conll, epochs: 5}
    models:
      - {name: tiny-bert, model: runs/mlm, inits: [pretrained, scratch]}
      - {name: embryo, model: runs/mlm/exports/*, inits: [pretrained]}   # train.export_every's folders

Paths are relative to the suite file. Each run is a `selfsup finetune` folder under `out/runs/<task>/<model>-
<init>`; a finished run (its metrics.json exists) is reused, so an interrupted benchmark continues. Writes
`results.json`, `results.md` (one row per model x init, one column per task's main metric, and the average)
and `curves.png` (loss and main metric per epoch per task, pretrained vs scratch). A model path with a
wildcard is one model per matching folder, named `NAME@FOLDER`; when the folders are a run's `exports/step-N`,
`steps.png` plots each task's metric against the pretraining step (BERT embryology).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from selfsup.config import bounded, from_dict
from selfsup.errors import SelfsupError


@dataclasses.dataclass
class RunOptions:
    epochs: int | None = bounded(None, ge=1)
    max_steps: int | None = bounded(None, ge=1)
    seed: int = 0
    seeds: int = bounded(1, ge=1)
    method: str | None = None
    train_fraction: float | None = bounded(None, gt=0, le=1)
    shots: int | None = bounded(None, ge=1)
    set: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TaskSpec:
    name: str = ""
    task: str = "sequence-classification"
    train: str = ""
    eval: str = ""
    text_column: str | None = None
    pair_column: str | None = None
    label_column: str | None = None
    epochs: int | None = bounded(None, ge=1)
    max_steps: int | None = bounded(None, ge=1)
    method: str | None = None
    train_fraction: float | None = bounded(None, gt=0, le=1)
    shots: int | None = bounded(None, ge=1)
    set: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        from selfsup.adapt.core.kinds import TASK_KINDS

        if not self.name or not self.train or not self.eval:
            raise SelfsupError("name, train and eval: required for every task")
        if self.task not in TASK_KINDS:
            raise SelfsupError(f"task: unknown kind {self.task!r} (known: {', '.join(TASK_KINDS)})")


@dataclasses.dataclass
class ModelSpec:
    name: str = ""
    model: str = ""
    inits: list[str] = dataclasses.field(default_factory=lambda: ["pretrained", "scratch"])
    method: str | None = None
    set: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        if not self.name or not self.model:
            raise SelfsupError("name and model: required for every model")
        bad = [i for i in self.inits if i not in ("pretrained", "scratch")]
        if bad or not self.inits:
            raise SelfsupError(f"inits: each must be pretrained or scratch, got {self.inits}")


@dataclasses.dataclass
class Suite:
    tasks: list[TaskSpec] = dataclasses.field(default_factory=list)
    models: list[ModelSpec] = dataclasses.field(default_factory=list)
    defaults: RunOptions = dataclasses.field(default_factory=RunOptions)
    out: str | None = None
    title: str = "benchmark"

    def validate(self) -> None:
        if not self.tasks or not self.models:
            raise SelfsupError("tasks and models: a suite needs at least one of each")
        for what, items in (("tasks", self.tasks), ("models", self.models)):
            names = [x.name for x in items]
            if len(set(names)) != len(names):
                raise SelfsupError(f"{what}: names must be unique, got {names}")


def load_suite(path: str | Path) -> tuple[Suite, Path]:
    p = Path(path)
    if not p.is_file():
        raise SelfsupError(f"{path}: no such suite file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SelfsupError(f"{p}:{mark.line + 1 if mark else 1}: invalid YAML") from None
    try:
        suite = from_dict(Suite, data)
    except SelfsupError as e:
        raise SelfsupError(f"{p}: {e}") from None
    base = p.resolve().parent
    suite.models = [m for spec in suite.models for m in _expand(spec, base, p)]
    try:
        suite.validate()
    except SelfsupError as e:
        raise SelfsupError(f"{p}: {e}") from None
    return suite, base


def _expand(spec: ModelSpec, base: Path, suite_file: Path) -> list[ModelSpec]:
    """A model path with a wildcard -> one spec per matching folder, in natural (step) order."""
    if not any(ch in spec.model for ch in "*?["):
        return [spec]
    folders = [Path(f) for f in glob.glob(_resolve(base, spec.model)) if Path(f).is_dir()]
    if not folders:
        raise SelfsupError(f"{suite_file}: models: {spec.name}: no folder matches {spec.model}")
    key = lambda f: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f.name)]  # noqa: E731
    return [dataclasses.replace(spec, name=f"{spec.name}@{f.name}", model=str(f)) for f in sorted(folders, key=key)]


STEP = re.compile(r"^(?P<name>.+)@step-(?P<step>\d+)$")


def _resolve(base: Path, value: str) -> str:
    if value.startswith("hf:") or Path(value).is_absolute():
        return value
    return str(base / value)


def run_suite(path: str | Path, out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    from selfsup.adapt.core.kinds import main_metric
    from selfsup.adapt.core.run import finetune
    from selfsup.report.figures import plot_suite
    from selfsup.fileio import atomic_write_json, atomic_write_text

    suite, base = load_suite(path)
    out_dir = Path(out) if out else (Path(_resolve(base, suite.out)) if suite.out else None)
    if out_dir is None:
        raise SelfsupError(f"{path}: no output folder (set `out:` in the suite or pass --out)")
    d = suite.defaults
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list]] = {}
    for task in suite.tasks:
        for spec in suite.models:
            for init in spec.inits:
                run = out_dir / "runs" / task.name / f"{spec.name}-{init}"
                if (run / "metrics.json").is_file():
                    m = json.loads((run / "metrics.json").read_text())
                else:
                    if run.exists():
                        import shutil

                        shutil.rmtree(run)  # an unfinished run of ours: start it again
                    if progress:  # progress goes to stderr: stdout carries the results table only
                        import sys

                        print(f"== {task.name}: {spec.name} ({init})", file=sys.stderr, flush=True)
                    m = finetune(_resolve(base, spec.model),
                                 task.task, _resolve(base, task.train), _resolve(base, task.eval), run,
                                 method=task.method or spec.method or d.method or "full", init=init,
                                 text_column=task.text_column, pair_column=task.pair_column,
                                 label_column=task.label_column,
                                 epochs=task.epochs or (None if task.max_steps else d.epochs),
                                 max_steps=task.max_steps or (None if task.epochs else d.max_steps),
                                 seed=d.seed, overrides=[*d.set, *spec.set, *task.set],
                                 train_fraction=task.train_fraction or d.train_fraction,
                                 shots=task.shots or d.shots, seeds=d.seeds, progress=progress)
                metric = main_metric(task.task)
                rows.append({"task": task.name, "kind": task.task, "model": spec.name, "init": init,
                             "method": m["method"], "metric": metric, "score": m["eval"][metric],
                             "std": (m.get("eval_std") or {}).get(metric), "eval": m["eval"],
                             "run": str(run)})
                curves.setdefault(task.name, {})[f"{spec.name} {init}"] = mean_history(m)
    table = _table(suite, rows)
    result = {"title": suite.title, "rows": rows, "table": table, "markdown": _markdown(suite, table),
              "out": str(out_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.md", result["markdown"] + "\n")
    atomic_write_json(out_dir / "results.json", result)
    title = suite.title + (f" (curves: mean of {d.seeds} seeds)" if d.seeds > 1 else "")
    plot_suite(curves, {t.name: main_metric(t.task) for t in suite.tasks}, out_dir / "curves.png", title)
    steps: dict[str, dict[str, list]] = {}
    for r in rows:
        if (m := STEP.match(r["model"])) and isinstance(r["score"], (int, float)):
            panel = steps.setdefault(f"{r['task']}: eval {r['metric']}", {})
            panel.setdefault(f"{m['name']} {r['init']}", []).append((int(m["step"]), r["score"]))
    if steps:
        from selfsup.report.figures import plot_metric_vs_steps

        plot_metric_vs_steps(steps, out_dir / "steps.png", title=f"{suite.title}: ability vs pretraining step")
    return result


def mean_history(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's per-epoch history; with several seeds, the mean over the seeds epoch by epoch (the epochs the
    seeds share)."""
    runs = [r.get("history") or [] for r in metrics.get("runs") or []]
    if not runs:
        return metrics.get("history") or []
    mean = []
    for rows in zip(*runs):
        keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and all(k in r for r in rows)]
        mean.append({k: rows[0][k] if all(r[k] == rows[0][k] for r in rows) else sum(r[k] for r in rows) / len(rows)
                     for k in keys})
    return mean


def _table(suite: Suite, rows: list[dict]) -> list[dict[str, Any]]:
    """One entry per model x init: the score per task and the average over tasks (GLUE style)."""
    table = []
    for spec in suite.models:
        for init in spec.inits:
            mine = {r["task"]: r for r in rows if r["model"] == spec.name and r["init"] == init}
            scores = {t.name: mine[t.name]["score"] for t in suite.tasks if t.name in mine}
            finite = [v for v in scores.values() if isinstance(v, (int, float)) and math.isfinite(v)]
            table.append({"model": spec.name, "init": init, "scores": scores,
                          "std": {t: mine[t]["std"] for t in scores if mine[t]["std"] is not None},
                          "average": sum(finite) / len(finite) if finite else None})
    return table


def _markdown(suite: Suite, table: list[dict]) -> str:
    from selfsup.adapt.core.kinds import main_metric

    head = ["model", "init"] + [f"{t.name} ({main_metric(t.task)})" for t in suite.tasks] + ["average"]
    lines = [f"# {suite.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [row["model"], row["init"]]
        for t in suite.tasks:
            v = row["scores"].get(t.name)
            s = "—" if v is None else f"{100 * v:.1f}"
            if t.name in row["std"]:
                s += f" ± {100 * row['std'][t.name]:.1f}"
            cells.append(s)
        cells.append("—" if row["average"] is None else f"{100 * row['average']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Scores × 100 on each task's evaluation file; average = mean over tasks."]
    return "\n".join(lines)
