"""What the HTML report shows of run folders: every run's headline metrics, the pictures it wrote, its small
CSV tables, and the group of runs it is compared with (pretraining, fine-tuning on one task, anomaly detection).

Reads only files (metrics.json, config.yaml, task.json, *.png, *.csv), so it works on runs made by any
version and on folders copied from another machine. Hand-written: no maintained library turns a folder of
JSON and PNG into a static page (selfsup.report.page renders it).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from selfsup.errors import SelfsupError

# files whose presence makes a folder a run worth a section
RUN_FILES = ("metrics.json", "demo.json", "anomaly.json", "results.json", "suite.json")
# sub-folders that belong to a run but hold nothing for a reader (weights, checkpoints, raw logs)
SKIP_DIRS = {"model", "checkpoints", "logs", "exports", "clips", "__pycache__"}
MAX_CSV_ROWS = 60
MAX_TABLE_SCALARS = 40


@dataclass
class RunSection:
    """What the page shows of one folder."""

    path: Path
    name: str
    kind: str
    subtitle: str
    scalars: dict[str, Any] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]], int]] = field(default_factory=list)
    group: str | None = None  # runs with the same group are compared in one table
    label: str = ""  # what tells this run from the others of its group, in a few words


def find_runs(roots: Iterable[str | Path]) -> list[RunSection]:
    """Every folder under `roots` (themselves included) that holds a run file or a picture, in path order."""
    sections = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise SelfsupError(f"report: {root}: no such folder")
        found = [read_run(folder, root) for folder in _folders(root)]
        found = [s for s in found if s is not None]
        if not found:
            raise SelfsupError(f"report: {root} holds no run (no {', '.join(RUN_FILES)} and no .png)")
        sections += found
    return sections


def _folders(root: Path) -> list[Path]:
    out, stack = [], [root]
    while stack:
        folder = stack.pop()
        out.append(folder)
        stack += sorted((p for p in folder.iterdir() if p.is_dir() and p.name not in SKIP_DIRS
                         and not p.name.startswith(".")), reverse=True)
    return out


def read_run(folder: Path, root: Path) -> RunSection | None:
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    images = sorted(p for name, p in files.items() if name.endswith(".png"))
    run_files = [files[n] for n in RUN_FILES if n in files]
    if not run_files and not images:
        return None
    name = root.name if folder == root else f"{root.name}/{folder.relative_to(root).as_posix()}"
    data: dict[str, Any] = {}
    for f in run_files:
        data.update(_read_json(f))
    config = _read_yaml(files["config.yaml"]) if "config.yaml" in files else {}
    kind, subtitle, group, label = describe(data, config, files)
    section = RunSection(folder, name, kind, subtitle, scalars=headline_scalars(data), images=images, group=group,
                         label=label)
    for csv_file in sorted(p for n, p in files.items() if n.endswith(".csv")):
        section.tables.append(_read_csv(csv_file))
    return section


def describe(data: dict, config: dict, files: dict) -> tuple[str, str, str | None, str]:
    """(kind, one-line subtitle, comparison group, short label) from what the run wrote."""
    if "task" in data and "method" in data:  # selfsup finetune (one seed, or the summary of several)
        seeds = f" · {len(data['runs'])} seeds (mean)" if isinstance(data.get("runs"), list) else ""
        label = f"{data['method']} · {data.get('init', '')}{seeds}"
        return ("fine-tuning", f"{data['task']} · method {data['method']} · {data.get('init', '')} init · "
                f"{data.get('train_examples', '?')} training examples{seeds}", f"fine-tuning: {data['task']}", label)
    if "anomaly.json" in files:
        method = data.get("method", "?")
        return "anomaly detection", f"detector {method}", "anomaly detection", method
    if "objective" in data or "objective" in config:
        objective = data.get("objective") or config.get("objective", {}).get("name", "?")
        if isinstance(objective, dict):
            objective = objective.get("name", "?")
        steps = data.get("steps", config.get("train", {}).get("max_steps", "?"))
        return "pretraining", f"recipe {objective} · {steps} steps", "pretraining", f"{objective} · {steps} steps"
    if "demo.json" in files:
        return "demo", "selfsup demo: pretraining, fine-tuning, images, speech and anomaly detection", None, ""
    if any(k.startswith("eval") for k in data):
        return "evaluation", "metrics of a probe or an evaluation", "evaluation", ""
    return "results", "", None, ""


def headline_scalars(data: dict) -> dict[str, Any]:
    """Flattened scalar metrics, eval ones first; configs, histories and long lists are left out."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in ("config", "history", "runs", "args", "splits", "eval_std"):
                    walk(f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}", v)
        elif isinstance(value, (int, float, str)):
            flat[prefix] = value

    walk("", data)
    order = sorted(flat, key=lambda k: (not k.startswith("eval"), k))
    return {k: flat[k] for k in order[:MAX_TABLE_SCALARS]}


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SelfsupError(f"report: {path}: not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise SelfsupError(f"report: {path}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SelfsupError(f"report: {path}: not readable YAML ({str(e).splitlines()[0]})") from None
    return value if isinstance(value, dict) else {}


def _read_csv(path: Path) -> tuple[str, list[str], list[list[str]], int]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SelfsupError(f"report: {path}: not a readable CSV ({e})") from None
    for lineno, row in enumerate(rows, 1):  # csv.reader keeps NUL bytes: binary data, not a table to show
        if any("\x00" in cell for cell in row):
            raise SelfsupError(f"report: {path}:{lineno}: binary data (NUL byte); expected a UTF-8 CSV")
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    return path.name, header, body[:MAX_CSV_ROWS], len(body)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)
