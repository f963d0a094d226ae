"""Early exit, shared by `--method early-exit` (training) and `selfsup early-exit` (the threshold sweep): one
classifier per encoder layer, so an easy text can be labeled after a few layers instead of all of them. The
model classes, losses and exit rules are in `exit_model.py` (torch at its top); this module builds, saves,
loads and trains them.

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
from pathlib import Path
from typing import Callable, Literal, Sequence

from selfsup.errors import SelfsupError

FAMILIES = ("bert", "roberta", "electra", "roformer", "albert")
KINDS = ("sequence-classification", "pair-classification")
EXIT_TRAININGS = ("joint", "two-stage")
HEADS_FILE = "exit_heads.safetensors"


def check_supported(model_type: str, kind: str) -> None:
    """One-line SelfsupError for a family or task kind early exit cannot use."""
    if model_type not in FAMILIES:
        raise SelfsupError(f"--method early-exit: model type {model_type!r} is not supported (an encoder with "
                           f"a layer stack is needed; supported: {', '.join(FAMILIES)})")
    if kind not in KINDS:
        raise SelfsupError(f"--method early-exit: supports {', '.join(KINDS)} only, not {kind}")



# ------------------------------------------------------------------------------------------------ model



def is_early_exit(model) -> bool:
    from selfsup.adapt.shared.exit_model import EarlyExitClassifier

    return isinstance(model, EarlyExitClassifier)


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

    from selfsup.adapt.core.models import model_type, quiet_transformers, task_config
    from selfsup.adapt.shared.exit_model import EarlyExitClassifier

    quiet_transformers()
    check_supported(model_type(path), "sequence-classification")
    config = task_config(path, "sequence-classification", labels, tokenizer, dropout)
    torch.manual_seed(seed)
    try:
        backbone = _load_backbone(path, config, init)
    except (OSError, ValueError) as e:
        raise SelfsupError(f"{path}: cannot load the encoder ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if len(tokenizer) > backbone.get_input_embeddings().weight.shape[0]:
        backbone.resize_token_embeddings(len(tokenizer))
    return EarlyExitClassifier(backbone, len(labels)).train()


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

    from selfsup.adapt.shared.exit_model import EarlyExitClassifier

    folder = Path(folder)
    if not (folder / HEADS_FILE).is_file():
        raise SelfsupError(f"{folder}: no {HEADS_FILE} (an early-exit model saves its per-layer heads there)")
    try:
        config = AutoConfig.from_pretrained(str(folder))
        check_supported(config.model_type, info.get("kind", ""))
        backbone = _load_backbone(folder, config, "pretrained")
        model = EarlyExitClassifier(backbone, len(info["labels"]))
        model.heads.load_state_dict(load_file(str(folder / HEADS_FILE)))
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise SelfsupError(f"{folder}: cannot load the early-exit model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    return model.eval()


def set_exit_rule(model, threshold: float | None = None, patience: int | None = None) -> None:
    """Make the model's eval-mode forward exit early (entropy < threshold, or `patience` unchanged layers);
    neither given: full depth. Used by `selfsup evaluate / predict --set exit_threshold=... | exit_patience=...`."""
    from selfsup.adapt.shared.exit_model import check_value

    if threshold is not None and patience is not None:
        raise SelfsupError("exit_threshold, exit_patience: set one of them, not both")
    if not is_early_exit(model):
        if threshold is not None or patience is not None:
            raise SelfsupError("exit_threshold / exit_patience: only for a model fine-tuned with --method early-exit")
        return
    if threshold is not None:
        model.exit_rule, model.exit_value = "entropy", float(check_value("entropy", threshold, "exit_threshold"))
    elif patience is not None:
        model.exit_rule, model.exit_value = "patience", check_value("patience", patience, "exit_patience")
    else:
        model.exit_rule, model.exit_value = None, 0.0


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

    from selfsup.adapt.shared.exit_model import intermediate_loss, joint_loss

    inputs = {k: batch.get(k) for k in ("input_ids", "attention_mask", "token_type_ids")}
    ctx = torch.no_grad() if stage == "intermediate" else contextlib.nullcontext()
    with ctx:
        states = model.first_token_states(**inputs)
    if stage == "last":
        return F.cross_entropy(model.heads[-1](states[-1]).float(), batch["labels"])
    all_logits = torch.stack([head(s) for head, s in zip(model.heads, states)])
    return joint_loss(all_logits, batch["labels"]) if stage == "joint" else intermediate_loss(all_logits,
                                                                                            batch["labels"])


def run_stage(model, stage: str, train_feats: Sequence[dict], cfg, *, lr: float, seed: int,
              collate_fn: Callable, eval_fn: Callable, main_metric: str | None = None, progress: bool = False):
    """One training stage through the shared fitting loop (`selfsup.adapt.core.fit`)."""
    from selfsup.adapt.core.fit import fit

    set_trainable(model, stage)
    if stage == "intermediate":  # the full-depth metric cannot change in stage 2: keep its last heads
        cfg = dataclasses.replace(cfg, keep_best=False)
    result = fit(model, train_feats, cfg, lr=lr, seed=seed, loss_fn=lambda m, b: stage_loss(m, b, stage),
                 collate_fn=collate_fn, eval_fn=eval_fn, main_metric=main_metric, progress=progress)
    for row in result.history:
        row["stage"] = stage
    return result


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


def refit_exit_heads(model, batches: Sequence[dict], *, epochs: int, lr: float = 1e-3, batch_size: int = 32,
                     seed: int = 0) -> list[float]:
    """DeeBERT's stage 2 on cached states: the backbone (in eval mode, no dropout) runs once over the labeled,
    collated `batches`; then each intermediate head is trained on its layer's first-token states for `epochs`
    at `lr` (AdamW; the backbone and the last head are left alone). Returns each epoch's mean loss (the sum of
    the intermediate heads' cross-entropies, DeeBERT's stage-2 loss). Written by hand: a few hundred AdamW
    steps on cached [N, H] tensors need no fitting loop, and cost seconds where a stage through the loop
    re-runs the encoder every step. Joint training at the backbone's lr (1e-4) leaves shallow heads of a
    pretrained 6-layer model at chance (docs/benchmarks.md, "Early exit on a 6-layer MiniLM")."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    with torch.no_grad():
        per_batch = [model.first_token_states(**{k: b.get(k) for k in ("input_ids", "attention_mask",
                                                                          "token_type_ids")}) for b in batches]
    states = [torch.cat(layer) for layer in zip(*per_batch)][:-1]  # intermediate layers: [N, H] each
    labels = torch.cat([b["labels"] for b in batches])
    heads = model.heads[:-1]
    heads.train()
    optimizer = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order, total = torch.randperm(len(labels), generator=generator), 0.0
        for start in range(0, len(labels), batch_size):
            rows = order[start:start + batch_size]
            loss = sum(F.cross_entropy(head(s[rows]).float(), labels[rows]) for head, s in zip(heads, states))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(labels))
    model.train(was_training)
    return losses
