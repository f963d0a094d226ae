"""Run scaffolding shared by every adaptation verb: the output-folder check, devices and threads, seeds ->
mean ± std, and the one writer of a seed's `metrics.json` record.

A run's folder is written into a locked sibling (`.NAME.partial`) and renamed into place only when every seed
finished, so an existing non-empty `--out` is never touched, a failed run leaves nothing behind, two runs never
mix in one folder, and a killed run can be resumed."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from selfsup.console import info
from selfsup.errors import SelfsupError


def check_out(out: Path) -> None:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelfsupError(f"{out}: already exists and is not empty; choose another --out")


def device_of(cfg):
    """The torch device `cfg.device` names (`auto`: CUDA when there is one)."""
    import torch

    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def autocast(device):
    """bf16 autocast on CUDA devices that have it; nothing elsewhere (CPUs emulate bf16 slower than fp32)."""
    import contextlib

    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_threads(cfg) -> None:
    if getattr(cfg, "threads", 0):
        import torch

        torch.set_num_threads(cfg.threads)


def global_rank() -> int:
    """This process's rank when a launcher (torchrun, SLURM) started several; 0 otherwise."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def seed_record(*, kind: str, source: Any, init: str, method: str, seed: int, eval: dict, main_metric: str,
                trainable: int, total: int, history: list, steps: int, epochs: int, lr: float,
                train_examples: int, eval_examples: int, labels: list | None, seconds: float,
                **extra: Any) -> dict[str, Any]:
    """The `metrics.json` record of one fine-tuned seed (every method writes this shape)."""
    record = {"task": kind, "model": str(source), "init": init, "method": method, "seed": seed, "eval": eval,
              "main_metric": main_metric, "trainable_parameters": trainable, "total_parameters": total,
              "history": history, "steps": steps, "epochs": epochs, "lr": lr, "train_examples": train_examples,
              "eval_examples": eval_examples, "labels": labels, "train_seconds": round(seconds, 2)}
    record.update(extra)
    return record


def plotted_rows(history: list[dict], metric: str | None) -> list[dict]:
    """The history rows a curve can show: those with an evaluation (its loss or the main metric)."""
    return [r for r in history if r.get("eval_loss") is not None or (metric and r.get(metric) is not None)]


def write_seed(folder: Path, record: dict[str, Any], curves: dict[str, list] | None = None,
               title: str = "") -> dict[str, Any]:
    """Write a seed's `metrics.json` (and its `curves.png` from `curves`: name -> history rows)."""
    from selfsup.fileio import atomic_write_json
    from selfsup.report.figures import plot_history

    atomic_write_json(Path(folder) / "metrics.json", record)
    if (Path(folder) / "model" / "task.json").is_file():
        _card(Path(folder) / "model", record)
    rows = {name: plotted_rows(hist, record["main_metric"]) for name, hist in (curves or {}).items()}
    if any(rows.values()):
        plot_history(rows, Path(folder) / "curves.png", record["main_metric"], title=title or record["task"])
    return record


def _card(model: Path, record: dict[str, Any]) -> None:
    """The fine-tuned model's card: task, labels, method, source checkpoint, data sizes, its evaluation."""
    from selfsup.report.cards import write_model_card

    evaluation = {f"eval {k}": v for k, v in record.get("eval", {}).items() if k != "examples"}
    write_model_card(model, location=final_location(model), title=f"{record['task']} ({record['method']}), fine-tuned with selfsup",
                     summary=f"`{record['model']}` adapted with selfsup's `--method {record['method']}` "
                             f"({record['init']} weights) on a {record['task']} task; `task.json` beside the weights "
                             "holds the labels and input columns that `selfsup evaluate` / `predict` read.",
                     facts={"task": record["task"], "labels": record.get("labels"), "method": record["method"],
                            "source model": record["model"], "init": record["init"], "seed": record["seed"],
                            "training examples": record["train_examples"], "evaluation examples": record["eval_examples"],
                            "trainable parameters": f"{record['trainable_parameters']:,} of {record['total_parameters']:,}",
                            "epochs": record["epochs"], "optimizer steps": record["steps"], "lr": record["lr"]},
                     metrics=evaluation, tags=(record["task"], record["method"]),
                     labels=record.get("labels") if isinstance(record.get("labels"), list) else None)


SUMMARY_KEYS = ("task", "model", "init", "method", "main_metric", "trainable_parameters", "total_parameters",
                "labels", "train_examples", "eval_examples")


def partial_folder(out: Path) -> Path:
    """Where a run of `out` is written until it is complete (and kept when it is killed, for --resume)."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def final_location(path: Path) -> Path:
    """Where `path`, inside a `partial_folder(out)`, will be once the run is renamed to `out`."""
    return Path(*[p[1:-len(".partial")] if p.startswith(".") and p.endswith(".partial") else p for p in Path(path).parts])


def over_seeds(out: Path, seed: int, seeds: int, train_seed: Callable[[int, Path], dict[str, Any]],
               config: dict[str, Any], shared: Sequence[str] = (),
               summarize: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None, *,
               resume: bool = False, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `train_seed(s, folder)` for s = seed, seed+1, ... (one `seed-S/` sub-folder each when there are
    several) and write `metrics.json`: the single run's metrics, or the mean and standard deviation of every
    eval metric with the per-seed runs. `shared` names extra keys that are the same for every seed and are
    copied from the first run; `summarize(runs)` adds a method's own aggregates.

    The run is written into `partial_folder(out)` (locked: one run owns it) and renamed to `out` when every seed
    is done; `request.json` (the command and config) stays in it. `out` must be absent or empty (checked here,
    under the lock), except that `resume` on a finished run of the same request returns its metrics. A killed run leaves the partial folder: `resume` continues it — finished seeds are read back, the
    fits of the interrupted seed restart from their last epoch's checkpoint — and refuses a different `request`
    or `config`. A failed run (an error, not a kill) leaves nothing. In a multi-process launch only global rank 0
    writes; the other ranks work in a throw-away folder and read the shared checkpoints."""
    import shutil

    from selfsup.fileio import atomic_write_json, try_lock

    out = Path(out)
    partial = partial_folder(out)
    wanted = {"request": request or {}, "config": config, "seed": seed, "seeds": seeds}
    if global_rank() != 0:
        with tempfile.TemporaryDirectory(prefix="selfsup-rank-") as tmp:
            return _seeds(Path(tmp), seed, seeds, train_seed, config, shared, summarize, resume, partial)
    lock = try_lock(out.parent / f".{out.name}.lock")
    if lock is None:
        raise SelfsupError(f"{out}: another selfsup run is writing it (lock {out.parent / f'.{out.name}.lock'})")
    try:
        if resume and not (partial / "request.json").is_file() and (out / "metrics.json").is_file() \
                and (out / "request.json").is_file():  # killed after it finished: the run is there
            _check_same(out, json.loads((out / "request.json").read_text()), wanted, "finished")
            info(f"{out} is already complete (the same command finished it); nothing to resume")
            return json.loads((out / "metrics.json").read_text())
        check_out(out)
        if resume:
            if not (partial / "request.json").is_file():
                raise SelfsupError(f"--resume: {out} has no interrupted run to continue (no {partial.name}/ beside "
                                   "it); start it without --resume")
            _check_same(out, json.loads((partial / "request.json").read_text()), wanted)
        elif partial.exists():
            info(f"discarding an interrupted run in {partial} (pass --resume to continue it)")
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        atomic_write_json(partial / "request.json", wanted)
        try:
            result = _seeds(partial, seed, seeds, train_seed, config, shared, summarize, resume, partial)
        except (KeyboardInterrupt, SystemExit):
            raise  # an interrupted run stays resumable (Lightning turns Ctrl-C into SystemExit)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if out.is_dir():
            out.rmdir()  # empty (checked by the caller): the finished run is renamed into its place
        os.replace(partial, out)
        return result
    finally:
        lock.close()
        (out.parent / f".{out.name}.lock").unlink(missing_ok=True)


def _check_same(out: Path, saved: dict[str, Any], wanted: dict[str, Any], what: str = "interrupted") -> None:
    for key in wanted:
        if saved.get(key) != wanted[key]:
            raise SelfsupError(f"--resume: the {what} run of {out} used other {key} ({_difference(saved.get(key), wanted[key])}); "
                               "resume with the same command, or start a new --out")


def _difference(saved: Any, wanted: Any) -> str:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        return ", ".join(f"{k}: {saved.get(k)!r} then, {wanted.get(k)!r} now" for k in keys[:3])
    return f"{saved!r} then, {wanted!r} now"


def _seeds(tmp: Path, seed: int, seeds: int, train_seed: Callable[[int, Path], dict[str, Any]],
           config: dict[str, Any], shared: Sequence[str],
           summarize: Callable[[list[dict[str, Any]]], dict[str, Any]] | None, resume: bool,
           partial: Path) -> dict[str, Any]:
    import shutil

    import numpy as np

    from selfsup.adapt.core.fit import CHECKPOINTS, Checkpoints
    from selfsup.fileio import atomic_write_json

    runs = []
    for s in range(seed, seed + seeds):
        folder = tmp if seeds == 1 else tmp / f"seed-{s}"
        shared_folder = partial if seeds == 1 else partial / f"seed-{s}"  # where rank 0 keeps the checkpoints
        folder.mkdir(parents=True, exist_ok=True)
        if resume and (folder / "metrics.json").is_file() and not (folder / "checkpoints").exists():
            runs.append(json.loads((folder / "metrics.json").read_text()))  # a seed the killed run finished
            continue
        token = CHECKPOINTS.set(Checkpoints(shared_folder, resume))
        try:
            runs.append(train_seed(s, folder))
        finally:
            CHECKPOINTS.reset(token)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # the seed is done: its checkpoints go
    if seeds == 1:
        result = dict(runs[0])
    else:
        keys = [k for k, v in runs[0]["eval"].items() if isinstance(v, (int, float)) and k != "examples"]
        mean = {k: float(np.mean([r["eval"][k] for r in runs])) for k in keys}
        std = {k: float(np.std([r["eval"][k] for r in runs], ddof=1)) for k in keys}
        result = {key: runs[0][key] for key in (*SUMMARY_KEYS, *shared) if key in runs[0]}
        result.update({"seeds": [r["seed"] for r in runs], "eval": mean, "eval_std": std,
                       "eval_mean_std": {k: f"{mean[k]:.4f} ± {std[k]:.4f}" for k in keys},
                       "runs": [{"seed": r["seed"], "folder": f"seed-{r['seed']}", "eval": r["eval"],
                                 "history": r["history"]} for r in runs]})
        if summarize is not None:  # a method's own per-seed results, aggregated (e.g. PET's ensemble)
            result.update(summarize(runs))
        plot_seeds(runs, tmp / "curves.png")
    result["config"] = config
    atomic_write_json(tmp / "metrics.json", result)
    return result


def plot_seeds(runs: list[dict[str, Any]], path: Path) -> None:
    """Every seed's curves on one picture (the run folder's `curves.png`), where the runs have histories."""
    from selfsup.report.figures import plot_history

    metric = runs[0].get("main_metric")
    curves = {f"seed {r['seed']}": [row for row in plotted_rows(r.get("history") or [], metric)
                                    if "epoch" in row and "train_loss" in row] for r in runs}
    if metric and sum(bool(rows) for rows in curves.values()) > 1:
        plot_history(curves, path, metric, title=f"{runs[0].get('task', '')}, {len(curves)} seeds".strip(", "))


def metrics_path(out: str | Path) -> Path:
    """`selfsup evaluate --out`: a .json path, or a folder that gets metrics.json."""
    path = Path(out)
    return path if path.suffix == ".json" else path / "metrics.json"


def check_metrics_out(out: str | Path | None) -> None:
    """Refuse, before any work, an `--out` whose metrics file exists (a user's file is never overwritten)."""
    if out is not None and metrics_path(out).exists():
        raise SelfsupError(f"{metrics_path(out)}: already exists; choose another --out")


def write_metrics(out: str | Path | None, metrics: dict[str, Any]) -> None:
    """Write `metrics` to `metrics_path(out)` atomically; None: nothing."""
    from selfsup.fileio import atomic_write_json

    if out is not None:
        atomic_write_json(metrics_path(out), metrics)
