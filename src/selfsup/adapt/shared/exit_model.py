"""The early-exit model (one exit head per encoder layer) and its losses and exit rules. Imports torch at the
top: `selfsup.adapt.shared.exit_heads` imports it when a model is built. The layer stepping, the exit rules
and the batched exit inference are written by hand: transformers has no per-layer stepping API and no early
exit (PABEE: Zhou et al. 2020; DeeBERT: Xin et al. 2020)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError

RULES = ("entropy", "patience")


def pabee_weights(num_layers: int) -> list[float]:
    """PABEE's weight of layer i (1-based) in the joint loss: i / sum_j j."""
    total = num_layers * (num_layers + 1) / 2
    return [i / total for i in range(1, num_layers + 1)]


def joint_loss(all_logits, labels):
    """PABEE's joint loss: sum_i i * CE(logits_i, labels) / sum_i i over the layers' logits [L, B, C]."""
    weights = pabee_weights(all_logits.shape[0])
    return sum(w * F.cross_entropy(logits.float(), labels) for w, logits in zip(weights, all_logits))


def intermediate_loss(all_logits, labels):
    """DeeBERT's stage-2 loss: sum of the intermediate layers' cross-entropies (the last layer excluded)."""
    return sum(F.cross_entropy(logits.float(), labels) for logits in all_logits[:-1])


def prediction_entropy(logits):
    """Entropy (nats) of softmax(logits) per row: DeeBERT's exit criterion (exit when below the threshold)."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def next_streak(streak, previous, current):
    """PABEE's patience counter: +1 where this layer's argmax equals the previous layer's, else 0."""
    if previous is None:
        return torch.zeros_like(current)
    return torch.where(current == previous, streak + 1, torch.zeros_like(streak))


def patience_exit_layers(per_layer_predictions, patience: int):
    """Exit layer (1-based) of each column of `per_layer_predictions` [L, B] under PABEE's rule: the first
    layer whose streak of unchanged predictions reaches `patience`, else the last layer."""
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


def check_value(rule: str, value: Any, key: str) -> float | int:
    if rule == "patience":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
            raise SelfsupError(f"{key}: patience must be a whole number >= 1, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SelfsupError(f"{key}: an entropy threshold must be a number >= 0, got {value!r}")
    return float(value)


@dataclasses.dataclass
class EarlyExitOutput:
    """`logits` [B, C]: the last layer's (training, full depth) or each row's exit layer's; `all_logits`
    [L, B, C] when every head ran; `exit_layers` [B] (1-based) after an early-exit pass."""
    loss: Any = None
    logits: Any = None
    all_logits: Any = None
    exit_layers: Any = None


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


def compact_rows(keep, tensors: dict, mask, bias):
    """Keep the rows where `keep` is True, in their order, in every tensor of `tensors` (first dimension), in
    the 2-D `mask` [B, T] and in the attention `bias` [B, 1, T, T] or None; then drop the trailing padding
    columns no kept row needs from the hidden states (`tensors["hidden"]`, [B, T, H]), the mask and the bias.
    The bias is sliced, not rebuilt, and becomes None once no kept row is padded (SDPA's fast path)."""
    kept = {k: (v[keep] if v is not None else None) for k, v in tensors.items()}
    mask = mask[keep]
    width = int(mask.any(0).nonzero().max()) + 1
    if width < mask.shape[1]:
        kept["hidden"], mask = kept["hidden"][:, :width], mask[:, :width]
    if bias is not None:
        bias = None if bool(mask.all()) else bias[keep][..., :width, :width]
    return kept, mask, bias


def exit_decision(rule: str, value: float | int, logits, state: dict):
    """Rows that exit after this layer: entropy < value (DeeBERT), or an argmax unchanged for `value` layers
    (PABEE; `state` holds the running streak and previous prediction, updated in place)."""
    if rule == "entropy":
        return prediction_entropy(logits) < value
    current = logits.argmax(-1)
    state["streak"] = next_streak(state.get("streak"), state.get("previous"), current)
    state["previous"] = current
    return state["streak"] >= value


def early_exit_predict(model, batch: dict, *, rule: str = "entropy", value: float | int | None = None,
                       threshold: float | None = None, patience: int | None = None,
                       timings: dict | None = None):
    """(logits [B, C], exit layers [B], 1-based) of a batch, each row leaving the stack at its exit layer.

    Written by hand (transformers has no early-exit inference): after layer i the heads of the still-running
    rows are computed; rows that meet the rule take that layer's logits and are dropped from the batch (hidden
    states, mask, attention bias and trailing padding columns: `compact_rows`), so only the rest pay for the
    next layer. Each row's result equals its result alone in a batch of 1 (up to float rounding of padded
    attention). `timings`, if given, accumulates seconds per phase: embeddings, layers, heads and rule,
    bookkeeping (for the profile in bench/early_exit.py)."""
    import time

    if rule not in RULES:
        raise SelfsupError(f"rule: expected one of {', '.join(RULES)}, got {rule!r}")
    value = value if value is not None else (threshold if rule == "entropy" else patience)
    if value is None:
        raise SelfsupError(f"rule {rule}: needs a {'threshold' if rule == 'entropy' else 'patience'}")
    value = check_value(rule, value, "threshold" if rule == "entropy" else "patience")
    clock = {"t": time.perf_counter()}

    def tick(phase: str) -> None:
        if timings is not None:
            now = time.perf_counter()
            timings[phase] = timings.get(phase, 0.0) + now - clock["t"]
            clock["t"] = now

    input_ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    with torch.no_grad():
        hidden = model.embed(input_ids, batch.get("token_type_ids"))
        bias = model.attention_bias(hidden, mask)
        n, last = input_ids.shape[0], model.num_layers - 1
        rows = torch.arange(n, device=input_ids.device)  # original index of each running row
        out_logits: Any = None
        exit_layers = torch.full((n,), model.num_layers, dtype=torch.long, device=input_ids.device)
        state: dict = {}
        tick("embeddings")
        for i in range(model.num_layers):
            hidden = model.run_layer(i, hidden, bias)
            tick("layers")
            logits = model.heads[i](hidden[:, 0])
            if out_logits is None:
                out_logits = logits.new_zeros((n, logits.shape[-1]))
            if i == last:
                out_logits[rows] = logits
                exit_layers[rows] = i + 1
                tick("heads and rule")
                break
            done = exit_decision(rule, value, logits, state)
            tick("heads and rule")
            if done.any():
                out_logits[rows[done]] = logits[done]
                exit_layers[rows[done]] = i + 1
                keep = ~done
                if not keep.any():
                    break
                kept, mask, bias = compact_rows(keep, {"rows": rows, "hidden": hidden, **state}, mask, bias)
                rows, hidden = kept.pop("rows"), kept.pop("hidden")
                state.update(kept)
                tick("bookkeeping")
    return out_logits, exit_layers
