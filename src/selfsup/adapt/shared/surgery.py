"""Model surgery on BERT-family encoders, shared by `selfsup prune` and `selfsup distill`: the encoder's
blocks, keeping a subset of layers (a genuinely smaller HF model), gating, scoring and removing attention
heads (Michel, Levy & Neubig 2019), and reloading a head-pruned model at its small size. Hand-written:
transformers 5 dropped `head_mask` and `prune_heads`; the slicing uses `transformers.pytorch_utils`."""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Iterator, Sequence

from selfsup.errors import SelfsupError

PRUNED_HEADS_KEY = "selfsup_pruned_heads"  # config attribute (not transformers' old `pruned_heads`, which
# transformers 4 would act on at load time and then fail on the full-size zeroed weights)


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

    from selfsup.adapt.core.features import MODEL_INPUTS, collate

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
            logits = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}).logits
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
    from selfsup.adapt.core.artifacts import load_finetuned

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
