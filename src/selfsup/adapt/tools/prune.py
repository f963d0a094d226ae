"""`selfsup prune`: structured pruning of a fine-tuned BERT-family encoder (bert, roberta, electra, ...) —
whole attention heads or whole layers — with an accuracy-vs-size table.

Heads (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?"): head h's importance is
E_x |dL(x)/d xi_h|, where xi_h is a gate (1.0) multiplying the head's output and L the task loss of the
labeled example x; each layer's scores are divided by their L2 norm (the paper's layer-wise normalisation)
and the lowest-scoring heads are removed, ranked over the whole model, every layer keeping at least one head.
Transformers 5 dropped `head_mask` and `prune_heads`, so the gate is a forward hook on each self-attention
module that scales the per-head slices of its output, with one gate per example (one backward pass gives
every per-example gradient), and heads are removed by slicing the query/key/value and output projections
with `transformers.pytorch_utils.prune_linear_layer`.

Saved format of a head-pruned model: BERT derives the head size as hidden_size / num_attention_heads, and
transformers 5 no longer records pruned heads in the config, so a model with fewer heads cannot be described
by its config. The saved model keeps the full shapes with the pruned heads' query/key/value rows and
output-projection columns set to zero: it loads with plain `AutoModelForSequenceClassification.from_pretrained`
and computes what the sliced model computes. `config.selfsup_pruned_heads` ({layer: [heads]}) names the
removed heads, and `load_pruned` slices them away again (the smaller, faster model). Parameter counts and
timings in the tables are those of the sliced model.

Layers: layer i's importance is the increase of the loss on the importance data when layer i is skipped; the
N layers with the highest importance are kept (`layer_order="top"` instead keeps the bottom N, dropping the
top layers as in Sajjad et al. 2020, "Poor Man's BERT"). The kept layers' weights are copied and
`num_hidden_layers` is set: a genuinely smaller HF model.

Outputs (a new folder, renamed into place only when complete): `model/` (not with `--sweep`), `metrics.json`,
`table.md`, `table.json`, `size_accuracy.png`.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

from selfsup.adapt.shared.surgery import (PRUNED_HEADS_KEY, encoder_blocks, head_counts, head_importance,
                                          heads_to_prune, keep_layers, layer_importance, layers_to_keep,
                                          remove_heads, zero_filled)
from selfsup.errors import SelfsupError

PRUNABLE_KINDS = ("sequence-classification", "pair-classification", "sequence-regression")
SWEEP_HEAD_FRACTIONS = (0.25, 0.5, 0.75)  # fractions of the heads removed by --sweep (100/75/50/25% kept)


# --------------------------------------------------------------------------------------------- the verb

@dataclasses.dataclass
class _Setup:
    model: Any
    tok: Any
    info: dict
    kind: str
    labels: list[str] | None
    metric: str
    cfg: Any
    device: Any
    eval_examples: list
    eval_feats: list
    importance_examples: list
    importance_feats: list
    train_feats: list


def _validate(layers: int | None, heads: float | None, sweep: bool, layer_order: str, finetune_epochs: int,
              train: str | None) -> None:
    if [layers is not None, heads is not None, bool(sweep)].count(True) != 1:
        raise SelfsupError("--layers/--heads/--sweep: give exactly one (keep N layers, remove a fraction F of "
                           "the heads, or sweep both)")
    if heads is not None and not 0 <= heads < 1:
        raise SelfsupError(f"--heads: the fraction of attention heads to remove, in [0, 1); got {heads}")
    if layers is not None and layers < 1:
        raise SelfsupError(f"--layers: the number of layers to keep, >= 1; got {layers}")
    if layer_order not in ("importance", "top"):
        raise SelfsupError(f"--layer-order: expected importance or top, got {layer_order!r}")
    if finetune_epochs < 0:
        raise SelfsupError(f"--finetune-epochs: must be >= 0, got {finetune_epochs}")
    if finetune_epochs and not train:
        raise SelfsupError("--finetune-epochs: needs --train FILE (the labeled data to recover accuracy on)")


def _peek(model_dir: str | Path, layers: int | None) -> None:
    """Cheap checks before anything is loaded: a fine-tuned folder, not ALBERT, enough layers."""
    import json

    from selfsup.adapt.core.models import finetuned_folder

    p = finetuned_folder(model_dir)
    try:
        config = json.loads((p / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return  # (a --method artifact, or unreadable: load_finetuned says which)
    if config.get("model_type") == "albert":
        raise SelfsupError(f"{model_dir}: albert shares one set of weights across its layers; removing layers or "
                           f"heads would not make it smaller (use a bert/roberta-style encoder)")
    depth = config.get("num_hidden_layers")
    if layers is not None and isinstance(depth, int) and layers > depth:
        raise SelfsupError(f"--layers: {model_dir} has {depth} layers; got {layers}")


def _setup(model_dir, eval_file, importance_data, train, columns_given, overrides) -> _Setup:
    from selfsup.adapt.core.artifacts import load_finetuned
    from selfsup.adapt.core.features import encode, keep_token_types
    from selfsup.adapt.core.kinds import Columns, main_metric
    from selfsup.adapt.core.options import parse_overrides
    from selfsup.adapt.core.runs import device_of, resolve_threads
    from selfsup.adapt.core.tasks import check_labels, read_task

    model, tok, info, method = load_finetuned(model_dir, with_method=True)
    kind = info["kind"]
    if kind not in PRUNABLE_KINDS:
        raise SelfsupError(f"{model_dir}: pruning supports {', '.join(PRUNABLE_KINDS)} models; this one is {kind}")
    if not method.whole_model:
        raise SelfsupError(f"{model_dir}: a --method {info['method']} artifact; prune a full fine-tune")
    if getattr(model.config, PRUNED_HEADS_KEY, None):
        raise SelfsupError(f"{model_dir}: already head-pruned; prune the original fine-tuned model")
    encoder_blocks(model, str(model_dir))
    cfg = parse_overrides(overrides, {"max_length": info["max_length"]})
    resolve_threads(cfg)
    text, pair, label = columns_given
    columns = Columns(text or info.get("text_column") or "text", pair or info.get("pair_column"),
                      label or info.get("label_column") or "label")
    labels = info.get("labels")

    def read(path: str) -> list:
        examples = read_task(path, kind, columns, labeled=True)
        if labels:
            check_labels(examples, labels)
        return examples

    eval_examples = read(eval_file)
    importance_examples = read(importance_data) if importance_data else eval_examples
    train_examples = read(train) if train else []
    types = keep_token_types(model.config)

    def enc(examples: list) -> list[dict]:
        return encode(kind, tok, examples, labels, info["max_length"], types, cfg) if examples else []

    eval_feats = enc(eval_examples)
    return _Setup(model, tok, info, kind, labels, main_metric(kind), cfg, device_of(cfg), eval_examples, eval_feats,
                  importance_examples,
                  eval_feats if importance_examples is eval_examples else enc(importance_examples),
                  enc(train_examples))


def _evaluate(s: _Setup, model) -> dict[str, Any]:
    """Eval metrics, parameter count and eval seconds of `model` (moved to the device and back)."""
    from selfsup.adapt.core.evaluation import run_eval
    from selfsup.adapt.core.models import count_parameters

    model.to(s.device)
    started = time.perf_counter()
    ev = run_eval(model, s.eval_feats, s.eval_examples, s.kind, s.labels, s.cfg, s.tok.pad_token_id, s.device)
    seconds = time.perf_counter() - started
    model.cpu()
    return {"eval": ev, "parameters": count_parameters(model)[1], "eval_seconds": round(seconds, 3)}


def _recover(s: _Setup, model, epochs: int, seed: int) -> list[dict]:
    """Fine-tune a pruned model for `epochs` on the training file (the shared `fit` loop, plain task loss)."""
    from selfsup.adapt.core.evaluation import run_eval
    from selfsup.adapt.core.features import collate
    from selfsup.adapt.core.fit import fit

    cfg = dataclasses.replace(s.cfg, epochs=epochs, max_steps=None)
    pad = s.tok.pad_token_id
    result = fit(model, s.train_feats, cfg, lr=cfg.lr or 1e-4, seed=seed, main_metric=s.metric,
                 loss_fn=lambda m, batch: m(**batch).loss, collate_fn=lambda chunk, dev: collate(chunk, pad, dev),
                 eval_fn=lambda m: run_eval(m, s.eval_feats, s.eval_examples, s.kind, s.labels, cfg, pad,
                                            next(m.parameters()).device))
    model.eval()
    return result.history


def _row(s: _Setup, model, method: str, setting: str, base_params: int, base_score: float | None,
         extra: dict) -> dict[str, Any]:
    measured = _evaluate(s, model)
    score = measured["eval"].get(s.metric)
    return {"method": method, "setting": setting, "layers": len(encoder_blocks(model)[1]),
            "heads": sum(head_counts(model)), "parameters": measured["parameters"],
            "parameters_percent": round(100 * measured["parameters"] / base_params, 2),
            s.metric: score, "delta": None if score is None or base_score is None else score - base_score,
            "eval_loss": measured["eval"].get("loss"), "eval_seconds": measured["eval_seconds"],
            "eval": measured["eval"], **extra}


def prune(model: str | Path, eval: str, out: str | Path, *, layers: int | None = None, heads: float | None = None,
          sweep: bool = False, importance_data: str | None = None, layer_order: str = "importance",
          train: str | None = None, finetune_epochs: int = 0, text_column: str | None = None,
          pair_column: str | None = None, label_column: str | None = None, seed: int = 0,
          overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Prune the fine-tuned `model` (a `selfsup finetune` folder): keep `layers` layers, or remove the
    fraction `heads` of its attention heads, or (`sweep`) both at several sizes. Importance is measured on
    `importance_data` (default: the eval file). Returns what is written to `out/metrics.json`."""
    from selfsup.adapt.core.runs import check_out
    from selfsup.config import to_dict
    from selfsup.fileio import atomic_dir, atomic_write_json

    out = Path(out)
    _validate(layers, heads, sweep, layer_order, finetune_epochs, train)
    check_out(out)
    _peek(model, layers)
    s = _setup(model, eval, importance_data, train, (text_column, pair_column, label_column), overrides)
    original = s.model
    _, blocks = encoder_blocks(original)
    n_layers, n_heads = len(blocks), sum(head_counts(original))
    if layers is not None and layers > n_layers:
        raise SelfsupError(f"--layers: {model} has {n_layers} layers; got {layers}")
    base = _row(s, original, "none", "original", 1, None, {})
    base_params, base_score = base["parameters"], base[s.metric]
    base.update(parameters_percent=100.0, delta=0.0)
    result: dict[str, Any] = {"model": str(model), "task": s.kind, "main_metric": s.metric, "eval_file": str(eval),
                              "importance_data": str(importance_data or eval), "layer_order": layer_order,
                              "finetune_epochs": finetune_epochs, "seed": seed, "original": base}
    head_scores = None
    original.to(s.device)
    if heads is not None or sweep:
        raw, head_scores = head_importance(original, s.importance_feats, s.kind, s.cfg.eval_batch_size,
                                           s.tok.pad_token_id, s.device)
        result["head_importance"] = [[round(float(x), 6) for x in r] for r in head_scores]
        result["head_importance_raw"] = [[float(x) for x in r] for r in raw]
    layer_scores: list[float] | None = None
    if (layers is not None and layer_order == "importance") or sweep:
        from selfsup.adapt.core.evaluation import run_eval

        _, layer_scores = layer_importance(original, lambda m: run_eval(
            m, s.importance_feats, s.importance_examples, s.kind, s.labels, s.cfg, s.tok.pad_token_id, s.device))
        result["layer_importance"] = [round(float(x), 6) for x in layer_scores]
    original.cpu()

    def head_variant(fraction: float):
        n_remove = min(round(fraction * n_heads), n_heads - n_layers)
        pruned = heads_to_prune(head_scores, n_remove)
        sliced = remove_heads(original, pruned)
        history = _recover(s, sliced, finetune_epochs, seed) if finetune_epochs else None
        setting = f"remove {n_remove}/{n_heads} heads"
        row = _row(s, sliced, "heads", setting, base_params, base_score,
                   {"pruned_heads": {str(k): v for k, v in pruned.items()}, "history": history})
        return row, sliced, pruned

    def layer_variant(keep: int):
        kept = layers_to_keep(layer_scores or [0.0] * n_layers, keep, layer_order)
        smaller = keep_layers(original, kept)
        history = _recover(s, smaller, finetune_epochs, seed) if finetune_epochs else None
        row = _row(s, smaller, "layers", f"keep {keep}/{n_layers} layers", base_params, base_score,
                   {"kept_layers": kept, "history": history})
        return row, smaller

    if out.is_dir():
        out.rmdir()  # empty (checked above): the finished folder is renamed into its place
    with atomic_dir(out) as tmp:
        if sweep:
            rows = [base]
            done: set[int] = set()
            for fraction in SWEEP_HEAD_FRACTIONS:
                n_remove = min(round(fraction * n_heads), n_heads - n_layers)
                if n_remove in done or n_remove == 0:
                    continue
                done.add(n_remove)
                rows.append(head_variant(fraction)[0])
            for keep in range(n_layers - 1, 0, -1):
                rows.append(layer_variant(keep)[0])
            result["rows"] = rows
        else:
            if heads is not None:
                row, sliced, pruned = head_variant(heads)
                saved = zero_filled(sliced, original, pruned)
            else:
                row, saved = layer_variant(layers)
            rows = [base, row]
            result["pruned"] = row
            result["compression"] = round(base_params / row["parameters"], 4)
            _save(saved, s, tmp / "model", model, row)
        result["config"] = to_dict(s.cfg)
        name = Path(str(model))  # a seed folder of a several-seed run is named with its run
        name = f"{name.parent.name}/{name.name}" if name.name.startswith("seed-") else name.name
        write_table(rows, s.metric, tmp, title=f"{name}: {s.kind}")
        atomic_write_json(tmp / "metrics.json", result)
    return result


def _save(model, s: _Setup, folder: Path, source, row: dict) -> None:
    from selfsup.adapt.core.models import save_task

    model.save_pretrained(str(folder))
    s.tok.save_pretrained(str(folder))
    info = dict(s.info)
    info.update(pruned_from=str(source), pruning={k: row[k] for k in ("method", "setting", "layers", "heads",
                                                                     "parameters") if k in row})
    info["pruning"].update({k: row[k] for k in ("pruned_heads", "kept_layers") if k in row})
    save_task(folder, info)


# ------------------------------------------------------------------------------------------------ tables

def write_table(rows: Sequence[dict], metric: str, folder: Path, title: str = "") -> None:
    """`table.md`, `table.json` and `size_accuracy.png` (the metric against parameters) for `rows`."""
    from selfsup.fileio import atomic_write_json, atomic_write_text
    from selfsup.report.figures import plot_size_accuracy

    keep = ("method", "setting", "layers", "heads", "parameters", "parameters_percent", metric, "delta",
            "eval_loss", "eval_seconds", "pruned_heads", "kept_layers")
    atomic_write_json(folder / "table.json", [{k: r[k] for k in keep if k in r} for r in rows])
    atomic_write_text(folder / "table.md", markdown_table(rows, metric))
    plot_size_accuracy(rows, metric, folder / "size_accuracy.png", title)


def _num(x: Any, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown_table(rows: Sequence[dict], metric: str) -> str:
    lines = [f"| model | layers | heads | parameters | size | {metric} | Δ {metric} | eval loss | eval s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['layers']} | {r['heads']} | {r['parameters']:,} | "
                     f"{r['parameters_percent']:.1f}% | {_num(r.get(metric), '.4f')} | "
                     f"{_num(r.get('delta'), '+.4f')} | {_num(r.get('eval_loss'), '.4f')} | "
                     f"{_num(r.get('eval_seconds'), '.3f')} |")
    return "\n".join(lines) + "\n"
