"""`selfsup early-exit`: sweep an early-exit model's exit threshold (entropy, DeeBERT) or patience (PABEE) on a
labeled file: accuracy, average exit layer and wall-time speedup over the full model, measured in the same run
on the same batches; a table and a speed/accuracy plot."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from selfsup.adapt.shared.exit_model import RULES, check_value
from selfsup.errors import SelfsupError

DEFAULT_THRESHOLDS = {"entropy": [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}  # patience: 1 .. layers


def parse_thresholds(text: str | Sequence | None, rule: str) -> list[float] | None:
    """`--thresholds 0,0.1,0.2` -> numbers (patience: whole numbers >= 1); None -> the defaults."""
    if rule not in RULES:
        raise SelfsupError(f"--rule: expected one of {', '.join(RULES)}, got {rule!r}")
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    if not items or any(t == "" for t in items):
        raise SelfsupError(f"--thresholds: expected comma-separated numbers, got {text!r}")
    values = []
    for t in items:
        try:
            x = float(t) if isinstance(t, str) else t
        except ValueError:
            raise SelfsupError(f"--thresholds: {t!r} is not a number") from None
        values.append(check_value(rule, x, "--thresholds"))
    return values


def _timed(fn: Callable[[], Any], device, repeats: int) -> tuple[float, list[float], Any]:
    """(best wall time of `repeats` runs, every run's time, the last run's result)."""
    import torch

    times, result = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times), times, result


def exit_sweep(model_dir: str | Path, eval_file: str, out: str | Path, *, rule: str = "entropy",
               thresholds: Sequence[float] | str | None = None, batch_size: int = 32, repeats: int = 3,
               text_column: str | None = None, pair_column: str | None = None, label_column: str | None = None,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Accuracy, average exit layer and wall-time speedup over the full model (same batches, cut from the
    examples sorted by length; same run, best of `repeats`) for each threshold (entropy) or patience value;
    writes `sweep.json`, `sweep.md` and `speed_accuracy.png` into the new folder `out`. On a busy CPU run it
    with `--set threads=1` (docs/benchmarks.md, "Early exit on a 6-layer MiniLM")."""
    import numpy as np
    import torch

    from selfsup import metrics as M
    from selfsup.adapt.core.evaluation import load_for_inference
    from selfsup.adapt.core.features import collate, encode, keep_token_types
    from selfsup.adapt.core.runs import check_out, device_of
    from selfsup.adapt.core.tasks import check_labels, read_task
    from selfsup.adapt.shared.exit_heads import is_early_exit, layer_accuracies, set_exit_rule
    from selfsup.adapt.shared.exit_model import early_exit_predict
    from selfsup.fileio import atomic_dir, atomic_write_json, atomic_write_text
    from selfsup.report.figures import plot_sweep

    values = parse_thresholds(thresholds, rule)
    if batch_size < 1:
        raise SelfsupError(f"--batch-size: must be >= 1, got {batch_size}")
    if repeats < 1:
        raise SelfsupError(f"--repeats: must be >= 1, got {repeats}")
    out = Path(out)
    check_out(out)
    model, tok, info, cfg, columns = load_for_inference(model_dir, text_column, pair_column, label_column,
                                                        batch_size, overrides)
    if not is_early_exit(model):
        raise SelfsupError(f"{model_dir}: not an early-exit model (method {info.get('method', 'full')}); "
                           f"fine-tune one with `selfsup finetune --method early-exit`")
    set_exit_rule(model)  # the sweep sets the rule itself
    if values is None:
        values = DEFAULT_THRESHOLDS["entropy"] if rule == "entropy" else list(range(1, model.num_layers + 1))
    examples = read_task(eval_file, info["kind"], columns, labeled=True)
    check_labels(examples, info["labels"])
    device = device_of(cfg)
    model.to(device).eval()
    feats = encode(info["kind"], tok, examples, info["labels"], info["max_length"],
                      keep_token_types(model.config), cfg)
    # batches of similar lengths: less padding, and the rows left after an exit share their columns
    feats = sorted(feats, key=lambda f: len(f["input_ids"]))
    batches = [collate(feats[i:i + batch_size], tok.pad_token_id, device)
               for i in range(0, len(feats), batch_size)]
    gold = np.concatenate([b["labels"].cpu().numpy() for b in batches])
    inputs = [{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in b} for b in batches]
    num_labels = len(info["labels"])

    def score(logits) -> dict[str, float]:
        m = M.ClassificationMetrics(num_labels)
        m.update(logits.argmax(-1).cpu().numpy(), gold)
        return m.compute()

    def full_pass():
        with torch.no_grad():
            return torch.cat([model(**x).logits.float() for x in inputs])

    full_pass()  # warm-up (allocations, kernels) before anything is timed
    full_seconds, _, full_logits = _timed(full_pass, device, repeats)
    full = {"layers": model.num_layers, **score(full_logits), "layer_accuracy": layer_accuracies(model, batches)}
    rows = []
    for v in values:
        def exit_pass(v=v):
            parts = [early_exit_predict(model, x, rule=rule, value=v) for x in inputs]
            return torch.cat([p[0].float() for p in parts]), torch.cat([p[1] for p in parts])

        seconds, times, (logits, layers) = _timed(exit_pass, device, repeats)
        full_seconds = min(full_seconds, _timed(full_pass, device, 1)[0])  # baseline re-timed between settings
        counts = torch.bincount(layers.cpu(), minlength=model.num_layers + 1)[1:].tolist()
        avg_layer = float(layers.float().mean())
        rows.append({"threshold": v, **score(logits), "avg_exit_layer": round(avg_layer, 4),
                     "layer_speedup": round(model.num_layers / avg_layer, 4), "seconds": round(seconds, 6),
                     "seconds_repeats": [round(t, 6) for t in times], "exit_counts": counts})
    full["seconds"] = round(full_seconds, 6)
    for row in rows:  # against the best full-model time of the whole run (robust to a noisy machine)
        row["speedup"] = round(full_seconds / row["seconds"], 4)
        row["speedup_slowest_repeat"] = round(full_seconds / max(row["seconds_repeats"]), 4)
    result = {"model": str(model_dir), "eval_file": str(eval_file), "rule": rule, "examples": len(examples),
              "batch_size": batch_size, "repeats": repeats, "device": str(device),
              "threads": torch.get_num_threads(), "full": full, "rows": rows}
    if out.is_dir():
        out.rmdir()  # empty (checked above): the finished sweep is renamed into its place
    with atomic_dir(out) as tmp:
        atomic_write_json(tmp / "sweep.json", result)
        atomic_write_text(tmp / "sweep.md", sweep_markdown(result))
        plot_sweep(result, tmp / "speed_accuracy.png")
    return result


def sweep_markdown(result: dict) -> str:
    """The sweep as a Markdown table (one row per threshold, the full model first)."""
    name = "entropy threshold" if result["rule"] == "entropy" else "patience"
    full = result["full"]
    lines = [f"Early exit ({result['rule']}) on {result['examples']} examples, batch {result['batch_size']}, "
             f"{result['device']}, best of {result['repeats']}", "",
             f"| {name} | accuracy | macro F1 | avg exit layer | layer speedup | wall seconds | wall speedup |",
             "|---|---|---|---|---|---|---|",
             f"| full model | {full['accuracy']:.4f} | {full['macro_f1']:.4f} | {full['layers']} | 1.00 | "
             f"{full['seconds']:.4f} | 1.00 |"]
    for r in result["rows"]:
        lines.append(f"| {r['threshold']:g} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{r['avg_exit_layer']:.2f} | {r['layer_speedup']:.2f} | {r['seconds']:.4f} | "
                     f"{r['speedup']:.2f} |")
    lines += ["", "Accuracy of each layer's head alone: "
              + ", ".join(f"L{i + 1} {a:.4f}" for i, a in enumerate(full["layer_accuracy"]))]
    return "\n".join(lines) + "\n"
