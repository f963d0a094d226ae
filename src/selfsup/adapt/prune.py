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

import contextlib
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from selfsup.errors import SelfsupError

PRUNABLE_KINDS = ("sequence-classification", "pair-classification", "sequence-regression")
SWEEP_HEAD_FRACTIONS = (0.25, 0.5, 0.75)  # fractions of the heads removed by --sweep (100/75/50/25% kept)
PRUNED_HEADS_KEY = "selfsup_pruned_heads"  # config attribute (not transformers' old `pruned_heads`, which
# transformers 4 would act on at load time and then fail on the full-size zeroed weights)


# ------------------------------------------------------------------------------------------- model surgery

def encoder_blocks(model, where: str = "model"):
    """The transformer blocks (`base_model.encoder.layer`) of a BERT-family model; a one-line error for
    architectures without that layout (decoders, ALBERT's shared layer)."""
    import torch

    model_type = getattr(model.config, "model_type", "?")
    if model_type == "albert":
        raise SelfsupError(f"{where}: albert shares one set of weights across its layers; removing layers or "
                           f"heads would not make it smaller (use a bert/roberta-style encoder)")
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    blocks = getattr(encoder, "layer", None)
    ok = isinstance(blocks, torch.nn.ModuleList) and len(blocks) > 0 and all(
        hasattr(getattr(getattr(b, "attention", None), "self", None), name) for b in blocks
        for name in ("query", "key", "value", "attention_head_size"))
    if not ok:
        raise SelfsupError(f"{where}: model type {model_type!r} is not supported (pruning and layer-initialised "
                           f"students need a BERT-family encoder: bert, roberta, electra, xlm-roberta, ...)")
    return encoder, blocks


def evenly_spaced(n_layers: int, keep: int) -> list[int]:
    """`keep` layer indices spread over `n_layers`, first and last included (DistilBERT's choice for 6 of
    12: 0, 2, 4, 7, 9, 11); a single layer is the first."""
    if keep >= n_layers:
        return list(range(n_layers))
    if keep == 1:
        return [0]
    return sorted({round(i * (n_layers - 1) / (keep - 1)) for i in range(keep)})


def keep_layers(model, indices: Sequence[int], where: str = "model"):
    """A copy of `model` with only the blocks `indices` (in that order); `num_hidden_layers` updated, so
    the copy saves and reloads as an ordinary, smaller HF model."""
    import torch

    encoder, blocks = encoder_blocks(model, where)
    if not indices or any(not 0 <= i < len(blocks) for i in indices):
        raise SelfsupError(f"{where}: layer indices {list(indices)} out of range 0..{len(blocks) - 1}")
    smaller = copy.deepcopy(model)
    enc, old = encoder_blocks(smaller, where)
    enc.layer = torch.nn.ModuleList([old[i] for i in indices])
    for new_index, block in enumerate(enc.layer):
        for module in block.modules():  # cache slot of each attention module (unused by encoders)
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    for config in {id(c): c for c in (smaller.config, getattr(enc, "config", smaller.config))}.values():
        config.num_hidden_layers = len(indices)
    return smaller


def head_counts(model) -> list[int]:
    """Heads per layer (after any slicing)."""
    _, blocks = encoder_blocks(model)
    return [b.attention.self.query.out_features // b.attention.self.attention_head_size for b in blocks]


@contextlib.contextmanager
def gated_heads(model, gates) -> Iterator[None]:
    """Multiply each head's attention output by a gate while the block is active: `gates` is (layers, heads)
    or (batch, layers, heads). Written by hand because transformers 5 has no `head_mask` any more."""
    _, blocks = encoder_blocks(model)
    handles = []
    for index, block in enumerate(blocks):
        def hook(module, args, output, index=index):
            hidden = output[0] if isinstance(output, tuple) else output
            b, s, width = hidden.shape
            gate = gates[..., index, :]
            gate = gate.reshape(-1, 1, gate.shape[-1], 1).to(hidden.dtype)  # (1 or batch, 1, heads, 1)
            gated = (hidden.view(b, s, -1, module.attention_head_size) * gate).view(b, s, width)
            return (gated, *output[1:]) if isinstance(output, tuple) else gated
        handles.append(block.attention.self.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def per_example_loss(logits, labels, kind: str):
    """Summed per-example task loss: cross-entropy (classification) or squared error (regression)."""
    import torch
    import torch.nn.functional as F

    logits = logits if logits.dtype == torch.float64 else logits.float()
    if kind == "sequence-regression":
        return F.mse_loss(logits[:, 0], labels.to(logits.dtype), reduction="sum")
    return F.cross_entropy(logits, labels, reduction="sum")


def head_importance(model, feats: Sequence[dict], kind: str, batch_size: int, pad_id: int, device
                    ) -> tuple[Any, Any]:
    """(raw, normalised) head importance, arrays of shape (layers, heads): raw[l, h] = mean over the labeled
    features of |dL(x)/d gate_lh| (Michel et al. 2019, eq. 2), normalised[l] = raw[l] / ||raw[l]||_2."""
    import numpy as np
    import torch

    from selfsup.adapt.finetune import _MODEL_INPUTS, collate

    counts = head_counts(model)
    if len(set(counts)) != 1:
        raise SelfsupError("head importance: the model already has pruned heads (prune the original model)")
    n_layers, n_heads = len(counts), counts[0]
    total = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    was_training = model.training
    model.eval()
    seen = 0
    for i in range(0, len(feats), batch_size):
        batch = collate(feats[i:i + batch_size], pad_id, device)
        gates = torch.ones(len(batch["input_ids"]), n_layers, n_heads, device=device, requires_grad=True)
        with gated_heads(model, gates):
            logits = model(**{k: v for k, v in batch.items() if k in _MODEL_INPUTS}).logits
        loss = per_example_loss(logits, batch["labels"], kind)
        (grad,) = torch.autograd.grad(loss, gates)  # per-example gradients: each row has its own gates
        total += grad.abs().sum(0).double().cpu()
        seen += len(batch["input_ids"])
    model.train(was_training)
    raw = (total / max(1, seen)).numpy()
    norm = np.linalg.norm(raw, axis=1, keepdims=True)
    return raw, raw / np.where(norm > 0, norm, 1.0)


def heads_to_prune(importance, n_remove: int) -> dict[int, list[int]]:
    """The `n_remove` least important heads over the whole model (ties: lower layer, lower head first),
    never the last head of a layer."""
    import numpy as np

    n_layers, n_heads = importance.shape
    left = [n_heads] * n_layers
    chosen: dict[int, list[int]] = {}
    for flat in np.argsort(importance, axis=None, kind="stable"):
        if sum(len(v) for v in chosen.values()) >= n_remove:
            break
        layer, head = divmod(int(flat), n_heads)
        if left[layer] > 1:
            left[layer] -= 1
            chosen.setdefault(layer, []).append(head)
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


def _head_rows(keep_heads: Sequence[int], head_size: int):
    import torch

    return torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in keep_heads])


def remove_heads(model, pruned: dict[int, list[int]]):
    """A copy of `model` with the heads `pruned` ({layer: [heads]}) sliced out of the query/key/value and
    output projections (`transformers.pytorch_utils.prune_linear_layer`): fewer parameters, less compute."""
    from transformers.pytorch_utils import prune_linear_layer

    smaller = copy.deepcopy(model)
    _, blocks = encoder_blocks(smaller)
    for layer, heads in pruned.items():
        if not heads:
            continue
        att = blocks[layer].attention.self
        n_heads = att.query.out_features // att.attention_head_size
        keep = [h for h in range(n_heads) if h not in set(heads)]
        if not keep:
            raise SelfsupError(f"layer {layer}: cannot remove all of its {n_heads} heads")
        rows = _head_rows(keep, att.attention_head_size)
        for name in ("query", "key", "value"):
            setattr(att, name, prune_linear_layer(getattr(att, name), rows, dim=0))
        out = blocks[layer].attention.output
        out.dense = prune_linear_layer(out.dense, rows, dim=1)
        att.num_attention_heads = len(keep)
        att.all_head_size = len(keep) * att.attention_head_size
    return smaller


def zero_filled(sliced, original, pruned: dict[int, list[int]]):
    """The full-size equivalent of a head-sliced model: `original`'s shapes, `sliced`'s weights, the removed
    heads' query/key/value rows and output columns zero (so plain transformers can load it), and
    `config.selfsup_pruned_heads` naming them."""
    import torch

    full = copy.deepcopy(original)
    sliced_state = sliced.state_dict()
    with torch.no_grad():
        for name, tensor in full.state_dict().items():
            if name in sliced_state and sliced_state[name].shape == tensor.shape:
                tensor.copy_(sliced_state[name])
        _, full_blocks = encoder_blocks(full)
        _, small_blocks = encoder_blocks(sliced)
        for layer, heads in pruned.items():
            if not heads:
                continue
            big, small = full_blocks[layer].attention, small_blocks[layer].attention
            n_heads = big.self.query.out_features // big.self.attention_head_size
            rows = _head_rows([h for h in range(n_heads) if h not in set(heads)], big.self.attention_head_size)
            for name in ("query", "key", "value"):
                target, source = getattr(big.self, name), getattr(small.self, name)
                target.weight.zero_()
                target.weight[rows] = source.weight
                target.bias.zero_()
                target.bias[rows] = source.bias
            big.output.dense.weight.zero_()
            big.output.dense.weight[:, rows] = small.output.dense.weight
            big.output.dense.bias.copy_(small.output.dense.bias)
    setattr(full.config, PRUNED_HEADS_KEY, {str(k): list(v) for k, v in pruned.items() if v})
    return full


def load_pruned(folder: str | Path):
    """(model, tokenizer, task info) of a folder written by `selfsup prune`, with pruned heads sliced away
    (the saved model is full-size with those heads zeroed; this is the smaller, faster equivalent)."""
    from selfsup.adapt.heads import load_finetuned

    model, tok, info = load_finetuned(folder)
    pruned = getattr(model.config, PRUNED_HEADS_KEY, None) or {}
    if pruned:
        model = remove_heads(model, {int(k): list(v) for k, v in pruned.items()}).eval()
    return model, tok, info


def layer_importance(model, evaluate) -> tuple[float, list[float]]:
    """(loss of the whole model, loss increase when each layer alone is skipped), `evaluate(model)` giving
    a metrics dict with `loss`."""
    import torch

    encoder, blocks = encoder_blocks(model)
    base = evaluate(model)["loss"]
    increase = []
    for i in range(len(blocks)):
        encoder.layer = torch.nn.ModuleList([b for j, b in enumerate(blocks) if j != i])
        try:
            increase.append(evaluate(model)["loss"] - base)
        finally:
            encoder.layer = blocks
    return base, increase


def layers_to_keep(importance: Sequence[float], keep: int, order: str) -> list[int]:
    """`order="importance"`: the `keep` layers whose removal raises the loss most (model order kept);
    `"top"`: the bottom `keep` layers."""
    if order == "top":
        return list(range(keep))
    ranked = sorted(range(len(importance)), key=lambda i: (-importance[i], i))
    return sorted(ranked[:keep])


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

    from selfsup.adapt.heads import TASK_FILE

    p = Path(model_dir)
    p = p / "model" if (p / "model" / TASK_FILE).is_file() else p
    if not (p / TASK_FILE).is_file():
        raise SelfsupError(f"{model_dir}: not a fine-tuned model (no {TASK_FILE}; make one with `selfsup finetune`)")
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
    from selfsup.adapt.finetune import (MAIN_METRIC, _device, _resolve_threads, encode, keep_token_types,
                                        parse_overrides)
    from selfsup.adapt.heads import load_finetuned
    from selfsup.adapt.peft_methods import EFFICIENT_METHODS
    from selfsup.adapt.tasks import Columns, check_labels, read_task

    model, tok, info = load_finetuned(model_dir)
    kind = info["kind"]
    if kind not in PRUNABLE_KINDS:
        raise SelfsupError(f"{model_dir}: pruning supports {', '.join(PRUNABLE_KINDS)} models; this one is {kind}")
    if info.get("method") in EFFICIENT_METHODS:
        raise SelfsupError(f"{model_dir}: a --method {info['method']} artifact; prune a full fine-tune")
    if getattr(model.config, PRUNED_HEADS_KEY, None):
        raise SelfsupError(f"{model_dir}: already head-pruned; prune the original fine-tuned model")
    encoder_blocks(model, str(model_dir))
    cfg = parse_overrides(overrides, {"max_length": info["max_length"]})
    _resolve_threads(cfg)
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
    return _Setup(model, tok, info, kind, labels, MAIN_METRIC[kind], cfg, _device(cfg), eval_examples, eval_feats,
                  importance_examples,
                  eval_feats if importance_examples is eval_examples else enc(importance_examples),
                  enc(train_examples))


def _evaluate(s: _Setup, model) -> dict[str, Any]:
    """Eval metrics, parameter count and eval seconds of `model` (moved to the device and back)."""
    from selfsup.adapt.finetune import run_eval
    from selfsup.adapt.heads import count_parameters

    model.to(s.device)
    started = time.perf_counter()
    ev = run_eval(model, s.eval_feats, s.eval_examples, s.kind, s.labels, s.cfg, s.tok.pad_token_id, s.device)
    seconds = time.perf_counter() - started
    model.cpu()
    return {"eval": ev, "parameters": count_parameters(model)[1], "eval_seconds": round(seconds, 3)}


def _recover(s: _Setup, model, epochs: int, seed: int) -> list[dict]:
    """Fine-tune a pruned model for `epochs` on the training file (the shared `fit` loop, plain task loss)."""
    from selfsup.adapt.finetune import collate, fit, run_eval

    cfg = dataclasses.replace(s.cfg, epochs=epochs, max_steps=None)
    pad = s.tok.pad_token_id
    model.to(s.device)
    history, _, _, _ = fit(
        model, s.train_feats, cfg, lr=cfg.lr or 1e-4, seed=seed, device=s.device,
        loss_fn=lambda m, batch: m(**batch).loss, collate_fn=lambda chunk: collate(chunk, pad, s.device),
        eval_fn=lambda m: run_eval(m, s.eval_feats, s.eval_examples, s.kind, s.labels, cfg, pad, s.device))
    model.cpu().eval()
    return history


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
    from selfsup.adapt.finetune import _check_out
    from selfsup.config import to_dict
    from selfsup.fileio import atomic_dir, atomic_write_json

    out = Path(out)
    _validate(layers, heads, sweep, layer_order, finetune_epochs, train)
    _check_out(out)
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
        from selfsup.adapt.finetune import run_eval

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
    from selfsup.adapt.heads import save_task

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


def plot_size_accuracy(rows: Sequence[dict], metric: str, path: Path, title: str = "") -> Path:
    """The metric against the parameter count, one line per pruning method, each starting at the original."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.adapt.plots import _figure_bytes
    from selfsup.fileio import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    origin = [r for r in rows if r["method"] in ("none", "teacher")]
    for i, method in enumerate(sorted({r["method"] for r in rows} - {"none", "teacher"})):
        series = sorted(origin + [r for r in rows if r["method"] == method], key=lambda r: -r["parameters"])
        ax.plot([r["parameters"] for r in series], [r.get(metric) for r in series], "-o", color=f"C{i}",
                label=method, ms=4)
    for r in origin:
        ax.plot([r["parameters"]], [r.get(metric)], "k*", ms=10, label=r["setting"])
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"eval {metric}")
    ax.set_title(title or f"{metric} vs size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    atomic_write_bytes(path, _figure_bytes(fig))
    return path
