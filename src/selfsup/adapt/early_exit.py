"""Early exit for `selfsup finetune --method early-exit` and `selfsup early-exit`: one classifier per encoder
layer, so an easy text can be labeled after a few layers instead of all of them.

Predicts the label of a text (sequence- or pair-classification) from the first token's state after each
encoder layer i (an "exit head": dense + tanh + dropout + linear, BERT's pooler and classifier per layer).

- Training (`--set exit_training=`): `joint` as PABEE (Zhou et al. 2020, "BERT Loses Patience: Fast and
  Robust Inference with Early Exit"): loss = sum_i i * CE_i / sum_i i, deeper layers weighted more; or
  `two-stage` as DeeBERT (Xin et al. 2020, "DeeBERT: Dynamic Early Exiting for Accelerating BERT
  Inference"): stage 1 trains the backbone and the last head on the task, stage 2 freezes both and trains
  the intermediate heads on sum_{i<L} CE_i.
- Inference (`early_exit_predict`): after layer i the heads of the rows still running are computed; a row
  exits when its prediction entropy < threshold (DeeBERT) or when its argmax has stayed the same for
  `patience` consecutive layers (PABEE). Only the remaining rows (hidden states, attention mask, and the
  padding columns none of them needs) go on to the next layer, so with batch > 1 the saving is real wall
  time. An impossible rule (entropy threshold 0, patience >= layers) reproduces the full model exactly.

Families: BERT, RoBERTa, ELECTRA, RoFormer (rotary positions per layer) and ALBERT (its shared layer group is
applied `num_hidden_layers` times; each application gets its own exit head). Saved as the HF backbone
(`config.json` + weights), `exit_heads.safetensors` and `task.json` (`method: early-exit`).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from selfsup.errors import SelfsupError

FAMILIES = ("bert", "roberta", "electra", "roformer", "albert")
KINDS = ("sequence-classification", "pair-classification")
RULES = ("entropy", "patience")
EXIT_TRAININGS = ("joint", "two-stage")
HEADS_FILE = "exit_heads.safetensors"
DEFAULT_THRESHOLDS = {"entropy": [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}  # patience: 1 .. layers


def check_supported(model_type: str, kind: str) -> None:
    """One-line SelfsupError for a family or task kind early exit cannot use."""
    if model_type not in FAMILIES:
        raise SelfsupError(f"--method early-exit: model type {model_type!r} is not supported (an encoder with "
                           f"a layer stack is needed; supported: {', '.join(FAMILIES)})")
    if kind not in KINDS:
        raise SelfsupError(f"--method early-exit: supports {', '.join(KINDS)} only, not {kind}")


# ------------------------------------------------------------------------------------- losses and rules

def pabee_weights(num_layers: int) -> list[float]:
    """PABEE's weight of layer i (1-based) in the joint loss: i / sum_j j."""
    total = num_layers * (num_layers + 1) / 2
    return [i / total for i in range(1, num_layers + 1)]


def joint_loss(all_logits, labels):
    """PABEE's joint loss: sum_i i * CE(logits_i, labels) / sum_i i over the layers' logits [L, B, C]."""
    import torch.nn.functional as F

    weights = pabee_weights(all_logits.shape[0])
    return sum(w * F.cross_entropy(logits.float(), labels) for w, logits in zip(weights, all_logits))


def intermediate_loss(all_logits, labels):
    """DeeBERT's stage-2 loss: sum of the intermediate layers' cross-entropies (the last layer excluded)."""
    import torch.nn.functional as F

    return sum(F.cross_entropy(logits.float(), labels) for logits in all_logits[:-1])


def prediction_entropy(logits):
    """Entropy (nats) of softmax(logits) per row: DeeBERT's exit criterion (exit when below the threshold)."""
    import torch

    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def next_streak(streak, previous, current):
    """PABEE's patience counter: +1 where this layer's argmax equals the previous layer's, else 0."""
    import torch

    if previous is None:
        return torch.zeros_like(current)
    return torch.where(current == previous, streak + 1, torch.zeros_like(streak))


def patience_exit_layers(per_layer_predictions, patience: int):
    """Exit layer (1-based) of each column of `per_layer_predictions` [L, B] under PABEE's rule: the first
    layer whose streak of unchanged predictions reaches `patience`, else the last layer."""
    import torch

    num_layers = per_layer_predictions.shape[0]
    exit_layer = torch.full_like(per_layer_predictions[0], num_layers)
    done = torch.zeros_like(per_layer_predictions[0], dtype=torch.bool)
    streak, previous = None, None
    for i, current in enumerate(per_layer_predictions):
        streak = next_streak(streak, previous, current)
        now = ~done & (streak >= patience)
        exit_layer[now] = i + 1
        done |= now
        previous = current
    return exit_layer


# ------------------------------------------------------------------------------------------------ model

@dataclasses.dataclass
class EarlyExitOutput:
    """`logits` [B, C]: the last layer's (training, full depth) or each row's exit layer's; `all_logits`
    [L, B, C] when every head ran; `exit_layers` [B] (1-based) after an early-exit pass."""
    loss: Any = None
    logits: Any = None
    all_logits: Any = None
    exit_layers: Any = None


def _model_classes():
    import torch

    class ExitHead(torch.nn.Module):
        """First-token state -> dense + tanh (BERT's pooler) -> dropout -> linear to the labels."""

        def __init__(self, hidden: int, num_labels: int, dropout: float):
            super().__init__()
            self.dense = torch.nn.Linear(hidden, hidden)
            self.dropout = torch.nn.Dropout(dropout)
            self.classifier = torch.nn.Linear(hidden, num_labels)

        def forward(self, first_token):
            return self.classifier(self.dropout(torch.tanh(self.dense(first_token))))

    class EarlyExitClassifier(torch.nn.Module):
        """A BERT-family encoder with one `ExitHead` per layer. `forward` in training mode returns every
        layer's logits and the PABEE joint loss; in eval mode the last layer's logits (the full model), or
        the early-exit logits when `exit_rule` is set (`set_exit_rule`)."""

        def __init__(self, backbone, num_labels: int):
            super().__init__()
            config = backbone.config
            self.backbone = backbone
            self.config = config
            self.model_type = config.model_type
            self.num_layers = int(config.num_hidden_layers)
            dropout = next((p for p in (getattr(config, "classifier_dropout", None),
                                        getattr(config, "classifier_dropout_prob", None),
                                        getattr(config, "hidden_dropout_prob", None)) if p is not None), 0.1)
            self.heads = torch.nn.ModuleList(ExitHead(config.hidden_size, num_labels, dropout)
                                             for _ in range(self.num_layers))
            std = getattr(config, "initializer_range", 0.02)
            for module in self.heads.modules():  # BERT's initialisation of new linear layers
                if isinstance(module, torch.nn.Linear):
                    torch.nn.init.normal_(module.weight, std=std)
                    torch.nn.init.zeros_(module.bias)
            self.exit_rule: str | None = None
            self.exit_value: float = 0.0

        # -- the layer stack, family by family (transformers has no per-layer stepping API) --
        def embed(self, input_ids, token_type_ids=None):
            """Token ids -> the first layer's input states [B, T, H]."""
            bb = self.backbone
            hidden = bb.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            if self.model_type == "albert":
                return bb.encoder.embedding_hidden_mapping_in(hidden)
            if hasattr(bb, "embeddings_project"):  # ELECTRA / RoFormer with embedding_size != hidden_size
                hidden = bb.embeddings_project(hidden)
            return hidden

        def attention_bias(self, hidden, attention_mask):
            """The backbone's own 4-D mask for these rows (None when nothing is padded, for SDPA)."""
            from transformers.masking_utils import create_bidirectional_mask

            return create_bidirectional_mask(config=self.config, inputs_embeds=hidden,
                                             attention_mask=attention_mask)

        def run_layer(self, i: int, hidden, bias):
            """Layer i (0-based) of the encoder on `hidden` [B, T, H]."""
            enc = self.backbone.encoder
            if self.model_type == "albert":
                group = int(i / (self.config.num_hidden_layers / self.config.num_hidden_groups))
                return enc.albert_layer_groups[group](hidden, bias)
            if self.model_type == "roformer":
                rotary = enc.embed_positions(hidden.shape[:-1], 0)[None, None, :, :]
                return enc.layer[i](hidden, bias, rotary)[0]
            return enc.layer[i](hidden, bias)

        def first_token_states(self, input_ids, attention_mask=None, token_type_ids=None) -> list:
            """The first token's state after every layer: L tensors [B, H]."""
            import torch

            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            hidden = self.embed(input_ids, token_type_ids)
            bias = self.attention_bias(hidden, attention_mask)
            states = []
            for i in range(self.num_layers):
                hidden = self.run_layer(i, hidden, bias)
                states.append(hidden[:, 0])
            return states

        def head_logits(self, states):
            """Every layer's logits [L, B, C] from its first-token states."""
            return torch.stack([head(s) for head, s in zip(self.heads, states)])

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **_: Any):
            import torch.nn.functional as F

            batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            if self.training:
                all_logits = self.head_logits(self.first_token_states(input_ids, attention_mask, token_type_ids))
                loss = joint_loss(all_logits, labels) if labels is not None else None
                return EarlyExitOutput(loss, all_logits[-1], all_logits)
            exit_layers = None
            if self.exit_rule is not None:
                logits, exit_layers = early_exit_predict(self, batch, rule=self.exit_rule, value=self.exit_value)
            else:
                states = self.first_token_states(input_ids, attention_mask, token_type_ids)
                logits = self.heads[-1](states[-1])
            loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
            return EarlyExitOutput(loss, logits, None, exit_layers)

    return ExitHead, EarlyExitClassifier


_CLASSES: tuple | None = None


def _classes():
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _model_classes()
        for cls in _CLASSES:
            cls.__module__ = __name__
            globals()[cls.__name__] = cls
    return _CLASSES


def is_early_exit(model) -> bool:
    return _CLASSES is not None and isinstance(model, _CLASSES[1])


def _load_backbone(path: Path, config, init: str):
    from transformers import AutoModel

    extra = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "albert") else {}
    if init == "scratch":
        return AutoModel.from_config(config, **extra)
    return AutoModel.from_pretrained(str(path), config=config, **extra)


def build_early_exit(path: Path, labels: list[str], tokenizer, *, init: str = "pretrained", seed: int = 0,
                     dropout: float | None = None):
    """An `EarlyExitClassifier` on the checkpoint at `path` (its masked-LM head, if any, is dropped)."""
    import torch

    from selfsup.adapt.heads import _model_type, quiet_transformers, task_config

    quiet_transformers()
    check_supported(_model_type(path), "sequence-classification")
    config = task_config(path, "sequence-classification", labels, tokenizer, dropout)
    torch.manual_seed(seed)
    try:
        backbone = _load_backbone(path, config, init)
    except (OSError, ValueError) as e:
        raise SelfsupError(f"{path}: cannot load the encoder ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if len(tokenizer) > backbone.get_input_embeddings().weight.shape[0]:
        backbone.resize_token_embeddings(len(tokenizer))
    return _classes()[1](backbone, len(labels)).train()


def save_early_exit(model, folder: Path) -> int:
    """HF backbone + `exit_heads.safetensors` into `folder`; returns the heads file's size in bytes."""
    from safetensors.torch import save_file

    folder = Path(folder)
    model.backbone.save_pretrained(str(folder))
    state = {k: v.detach().contiguous().cpu() for k, v in model.heads.state_dict().items()}
    save_file(state, str(folder / HEADS_FILE))
    return (folder / HEADS_FILE).stat().st_size


def load_early_exit(folder: Path, info: dict):
    """The model saved by `save_early_exit` (in eval mode), for `heads.load_finetuned`."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(folder)
    if not (folder / HEADS_FILE).is_file():
        raise SelfsupError(f"{folder}: no {HEADS_FILE} (an early-exit model saves its per-layer heads there)")
    try:
        config = AutoConfig.from_pretrained(str(folder))
        check_supported(config.model_type, info.get("kind", ""))
        backbone = _load_backbone(folder, config, "pretrained")
        model = _classes()[1](backbone, len(info["labels"]))
        model.heads.load_state_dict(load_file(str(folder / HEADS_FILE)))
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise SelfsupError(f"{folder}: cannot load the early-exit model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    return model.eval()


def set_exit_rule(model, threshold: float | None = None, patience: int | None = None) -> None:
    """Make the model's eval-mode forward exit early (entropy < threshold, or `patience` unchanged layers);
    neither given: full depth. Used by `selfsup evaluate / predict --set exit_threshold=... | exit_patience=...`."""
    if threshold is not None and patience is not None:
        raise SelfsupError("exit_threshold, exit_patience: set one of them, not both")
    if not is_early_exit(model):
        if threshold is not None or patience is not None:
            raise SelfsupError("exit_threshold / exit_patience: only for a model fine-tuned with --method early-exit")
        return
    if threshold is not None:
        model.exit_rule, model.exit_value = "entropy", float(_check_value("entropy", threshold, "exit_threshold"))
    elif patience is not None:
        model.exit_rule, model.exit_value = "patience", _check_value("patience", patience, "exit_patience")
    else:
        model.exit_rule, model.exit_value = None, 0.0


def _check_value(rule: str, value: Any, key: str) -> float | int:
    if rule == "patience":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
            raise SelfsupError(f"{key}: patience must be a whole number >= 1, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SelfsupError(f"{key}: an entropy threshold must be a number >= 0, got {value!r}")
    return float(value)


# -------------------------------------------------------------------------------------------- inference

def early_exit_predict(model, batch: dict, *, rule: str = "entropy", value: float | int | None = None,
                       threshold: float | None = None, patience: int | None = None):
    """(logits [B, C], exit layers [B], 1-based) of a batch, each row leaving the stack at its exit layer.

    Written by hand (transformers has no early-exit inference): after layer i the heads of the still-running
    rows are computed; rows that meet the rule take that layer's logits and are dropped from the batch (hidden
    states, mask, and trailing padding columns), so only the rest pay for the next layer."""
    import torch

    if rule not in RULES:
        raise SelfsupError(f"rule: expected one of {', '.join(RULES)}, got {rule!r}")
    value = value if value is not None else (threshold if rule == "entropy" else patience)
    if value is None:
        raise SelfsupError(f"rule {rule}: needs a {'threshold' if rule == 'entropy' else 'patience'}")
    value = _check_value(rule, value, "threshold" if rule == "entropy" else "patience")
    input_ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    with torch.no_grad():
        hidden = model.embed(input_ids, batch.get("token_type_ids"))
        bias = model.attention_bias(hidden, mask)
        n = input_ids.shape[0]
        rows = torch.arange(n, device=input_ids.device)  # original index of each running row
        out_logits: Any = None
        exit_layers = torch.full((n,), model.num_layers, dtype=torch.long, device=input_ids.device)
        streak = previous = None
        for i in range(model.num_layers):
            hidden = model.run_layer(i, hidden, bias)
            logits = model.heads[i](hidden[:, 0])
            if out_logits is None:
                out_logits = logits.new_zeros((n, logits.shape[-1]))
            if i == model.num_layers - 1:
                done = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
            elif rule == "entropy":
                done = prediction_entropy(logits) < value
            else:
                current = logits.argmax(-1)
                streak = next_streak(streak, previous, current)
                previous = current
                done = streak >= value
            if done.any():
                out_logits[rows[done]] = logits[done]
                exit_layers[rows[done]] = i + 1
                keep = ~done
                if not keep.any():
                    break
                rows, hidden, mask = rows[keep], hidden[keep], mask[keep]
                if streak is not None:
                    streak, previous = streak[keep], previous[keep]
                width = int(mask.any(0).nonzero().max()) + 1  # drop padding columns no running row needs
                hidden, mask = hidden[:, :width], mask[:, :width]
                bias = model.attention_bias(hidden, mask)
    return out_logits, exit_layers


# --------------------------------------------------------------------------------------------- training

def set_trainable(model, stage: Literal["joint", "last", "intermediate"]) -> None:
    """joint: everything; last (DeeBERT stage 1): backbone + last head; intermediate (stage 2): the other
    heads only (backbone and last head frozen)."""
    for p in model.backbone.parameters():
        p.requires_grad_(stage != "intermediate")
    for i, head in enumerate(model.heads):
        last = i == len(model.heads) - 1
        for p in head.parameters():
            p.requires_grad_(stage == "joint" or (stage == "last") == last)


def stage_loss(model, batch: dict, stage: str):
    """The loss of one training stage on a batch (the backbone runs without gradients in stage 2)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    inputs = {k: batch.get(k) for k in ("input_ids", "attention_mask", "token_type_ids")}
    ctx = torch.no_grad() if stage == "intermediate" else contextlib.nullcontext()
    with ctx:
        states = model.first_token_states(**inputs)
    if stage == "last":
        return F.cross_entropy(model.heads[-1](states[-1]).float(), batch["labels"])
    all_logits = torch.stack([head(s) for head, s in zip(model.heads, states)])
    return joint_loss(all_logits, batch["labels"]) if stage == "joint" else intermediate_loss(all_logits,
                                                                                            batch["labels"])


def run_stage(model, stage: str, train_feats: Sequence[dict], cfg, *, lr: float, seed: int, device,
              collate_fn: Callable, eval_fn: Callable, main_metric: str | None = None):
    """One training stage through the shared fine-tuning loop (`finetune.fit`)."""
    from selfsup.adapt.finetune import fit

    set_trainable(model, stage)
    history, ev, steps, epochs = fit(model, train_feats, cfg, lr=lr, seed=seed, device=device,
                                     loss_fn=lambda m, b: stage_loss(m, b, stage), collate_fn=collate_fn,
                                     eval_fn=eval_fn, main_metric=main_metric)
    for row in history:
        row["stage"] = stage
    return history, ev, steps, epochs


def layer_accuracies(model, batches: Sequence[dict]) -> list[float]:
    """Accuracy of each layer's head alone on labeled, collated batches (a static exit at every layer)."""
    import torch

    was_training = model.training
    model.eval()
    correct, total = torch.zeros(model.num_layers), 0
    with torch.no_grad():
        for batch in batches:
            inputs = {k: batch.get(k) for k in ("input_ids", "attention_mask", "token_type_ids")}
            all_logits = model.head_logits(model.first_token_states(**inputs))
            correct += (all_logits.argmax(-1) == batch["labels"]).sum(-1).float().cpu()
            total += batch["labels"].shape[0]
    model.train(was_training)
    return [round(float(c) / max(1, total), 6) for c in correct]


def train_early_exit(source: Path, data, cfg, *, init: str, seed: int, out: Path, train_examples: list,
                     progress: bool) -> dict[str, Any]:
    """`selfsup finetune --method early-exit` for one seed: train (joint or two-stage), evaluate the full
    depth and every exit head, save `model/` and `metrics.json`, plot the curves."""
    ft = importlib.import_module("selfsup.adapt.finetune")  # the module (`selfsup.adapt.finetune` is also a function)
    from selfsup.adapt.heads import count_parameters, load_tokenizer, save_task
    from selfsup.adapt.plots import plot_history
    from selfsup.fileio import atomic_write_json

    check_supported(json.loads((Path(source) / "config.json").read_text()).get("model_type", ""), data.kind)
    tok = load_tokenizer(source)
    model = build_early_exit(source, data.labels, tok, init=init, seed=seed, dropout=cfg.dropout)
    trainable, total = count_parameters(model)
    device = ft._device(cfg)
    model.to(device)
    max_length = min(cfg.max_length, ft.model_positions(model.config, tok))
    types = ft.keep_token_types(model.config)
    train_feats = ft.encode(data.kind, tok, train_examples, data.labels, max_length, types, cfg)
    eval_feats = ft.encode(data.kind, tok, data.eval, data.labels, max_length, types, cfg)
    pad_id = tok.pad_token_id
    lr = cfg.lr or 1e-4
    common = dict(lr=lr, seed=seed, device=device, collate_fn=lambda chunk: ft.collate(chunk, pad_id, device),
                  eval_fn=lambda m: ft.run_eval(m, eval_feats, data.eval, data.kind, data.labels, cfg, pad_id,
                                                device),
                  main_metric=ft.MAIN_METRIC[data.kind] if progress else None)
    started = time.perf_counter()
    curves: dict[str, list] = {}
    steps = epochs = 0
    for stage in (("joint",) if cfg.exit_training == "joint" else ("last", "intermediate")):
        history, ev, s, e = run_stage(model, stage, train_feats, cfg, **common)
        curves[{"joint": "joint", "last": "stage 1", "intermediate": "stage 2"}[stage]] = history
        steps, epochs = steps + s, epochs + e
    seconds = time.perf_counter() - started
    set_trainable(model, "joint")
    eval_batches = [ft.collate(eval_feats[i:i + cfg.eval_batch_size], pad_id, device)
                    for i in range(0, len(eval_feats), cfg.eval_batch_size)]
    per_layer = layer_accuracies(model, eval_batches)
    model.cpu()
    heads_bytes = save_early_exit(model, out / "model")
    tok.save_pretrained(str(out / "model"))
    save_task(out / "model", {"kind": data.kind, "labels": data.labels, "text_column": data.columns.text,
                              "pair_column": data.columns.pair, "label_column": data.columns.label,
                              "max_length": max_length, "source_model": str(source), "init": init,
                              "method": "early-exit", "exit_training": cfg.exit_training,
                              "num_layers": model.num_layers})
    history = [row for rows in curves.values() for row in rows]
    metrics = {"task": data.kind, "model": str(source), "init": init, "method": "early-exit", "seed": seed,
               "exit_training": cfg.exit_training, "eval": dict(ev), "layer_accuracy": per_layer,
               "main_metric": ft.MAIN_METRIC[data.kind], "trainable_parameters": trainable,
               "total_parameters": total, "backbone_parameters": total - sum(p.numel() for p in
                                                                             model.heads.parameters()),
               "trainable_percent": 100.0, "artifact_bytes": None, "exit_heads_bytes": heads_bytes,
               "history": history, "steps": steps, "epochs": epochs, "lr": lr,
               "train_examples": len(train_examples), "eval_examples": len(data.eval), "labels": data.labels,
               "train_seconds": round(seconds, 2)}
    atomic_write_json(out / "metrics.json", metrics)
    plot_history(curves, out / "curves.png", ft.MAIN_METRIC[data.kind], title=f"{data.kind}, early exit")
    return metrics


# ------------------------------------------------------------------------------------------------ sweep

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
        values.append(_check_value(rule, x, "--thresholds"))
    return values


def _timed(fn: Callable[[], Any], device, repeats: int) -> tuple[float, Any]:
    """(best wall time of `repeats` runs, the last run's result)."""
    import torch

    best, result = math.inf, None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def exit_sweep(model_dir: str | Path, eval_file: str, out: str | Path, *, rule: str = "entropy",
               thresholds: Sequence[float] | str | None = None, batch_size: int = 32, repeats: int = 3,
               text_column: str | None = None, pair_column: str | None = None, label_column: str | None = None,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Accuracy, average exit layer and wall-time speedup over the full model (same batches, same run, best
    of `repeats`) for each threshold (entropy) or patience value; writes `sweep.json`, `sweep.md` and
    `speed_accuracy.png` into the new folder `out`."""
    import numpy as np
    import torch

    from selfsup import metrics as M
    ft = importlib.import_module("selfsup.adapt.finetune")  # the module (`selfsup.adapt.finetune` is also a function)
    from selfsup.adapt.tasks import check_labels, read_task
    from selfsup.fileio import atomic_dir, atomic_write_json, atomic_write_text

    values = parse_thresholds(thresholds, rule)
    if batch_size < 1:
        raise SelfsupError(f"--batch-size: must be >= 1, got {batch_size}")
    if repeats < 1:
        raise SelfsupError(f"--repeats: must be >= 1, got {repeats}")
    out = Path(out)
    ft._check_out(out)
    model, tok, info, cfg, columns = ft._load_for_inference(model_dir, text_column, pair_column, label_column,
                                                            batch_size, overrides)
    if not is_early_exit(model):
        raise SelfsupError(f"{model_dir}: not an early-exit model (method {info.get('method', 'full')}); "
                           f"fine-tune one with `selfsup finetune --method early-exit`")
    set_exit_rule(model)  # the sweep sets the rule itself
    if values is None:
        values = DEFAULT_THRESHOLDS["entropy"] if rule == "entropy" else list(range(1, model.num_layers + 1))
    examples = read_task(eval_file, info["kind"], columns, labeled=True)
    check_labels(examples, info["labels"])
    device = ft._device(cfg)
    model.to(device).eval()
    feats = ft.encode(info["kind"], tok, examples, info["labels"], info["max_length"],
                      ft.keep_token_types(model.config), cfg)
    batches = [ft.collate(feats[i:i + batch_size], tok.pad_token_id, device)
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
    full_seconds, full_logits = _timed(full_pass, device, repeats)
    full = {"layers": model.num_layers, **score(full_logits), "layer_accuracy": layer_accuracies(model, batches)}
    rows = []
    for v in values:
        def exit_pass(v=v):
            parts = [early_exit_predict(model, x, rule=rule, value=v) for x in inputs]
            return torch.cat([p[0].float() for p in parts]), torch.cat([p[1] for p in parts])

        seconds, (logits, layers) = _timed(exit_pass, device, repeats)
        full_seconds = min(full_seconds, _timed(full_pass, device, 1)[0])  # baseline re-timed between settings
        counts = torch.bincount(layers.cpu(), minlength=model.num_layers + 1)[1:].tolist()
        avg_layer = float(layers.float().mean())
        rows.append({"threshold": v, **score(logits), "avg_exit_layer": round(avg_layer, 4),
                     "layer_speedup": round(model.num_layers / avg_layer, 4), "seconds": round(seconds, 6),
                     "exit_counts": counts})
    full["seconds"] = round(full_seconds, 6)
    for row in rows:  # against the best full-model time of the whole run (robust to a noisy machine)
        row["speedup"] = round(full_seconds / row["seconds"], 4)
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


def plot_sweep(result: dict, path: Path) -> Path:
    """Left: accuracy vs wall-time speedup (one point per threshold, the full model at 1); right: accuracy
    vs average exit layer, with each layer's head alone for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.adapt.plots import _figure_bytes
    from selfsup.fileio import atomic_write_bytes

    rows, full = result["rows"], result["full"]
    fig, (ax_speed, ax_layer) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    ax_speed.plot([r["speedup"] for r in rows], [r["accuracy"] for r in rows], "-o", ms=4, label="early exit")
    ax_speed.plot([1.0], [full["accuracy"]], "*", ms=12, color="C3", label="full model")
    for r in rows:
        ax_speed.annotate(f"{r['threshold']:g}", (r["speedup"], r["accuracy"]), fontsize=7,
                          textcoords="offset points", xytext=(3, 3))
    ax_speed.set_xlabel("wall-time speedup over the full model")
    ax_speed.set_ylabel("accuracy")
    ax_speed.set_title(f"speed vs accuracy ({result['rule']})")
    ax_layer.plot([r["avg_exit_layer"] for r in rows], [r["accuracy"] for r in rows], "-o", ms=4,
                  label="early exit")
    ax_layer.plot(range(1, full["layers"] + 1), full["layer_accuracy"], "--s", ms=3, color="C2",
                  label="one layer's head alone")
    ax_layer.set_xlabel("average exit layer")
    ax_layer.set_ylabel("accuracy")
    ax_layer.set_title("depth vs accuracy")
    for ax in (ax_speed, ax_layer):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    atomic_write_bytes(Path(path), _figure_bytes(fig))
    return Path(path)
