"""Houlsby bottleneck adapters (Houlsby et al. 2019), written by hand: peft has none (peft issue #244).

Each adapter is down-projection -> GELU -> up-projection plus a residual connection. One is inserted after the
attention output projection and one after the feed-forward output projection of every layer, before the block's
own residual connection and LayerNorm (for BERT: on `BertSelfOutput.dense` / `BertOutput.dense`, as in the
paper). The up-projection starts at zero and the down-projection small, so an adapted model starts out equal
to its backbone (near-identity). The backbone is frozen; the adapters, every LayerNorm (RMSNorm for Llama)
and the task head train, as in the paper.

The adapters hook the output of the existing projections (forward hooks), so the backbone's weight names are
unchanged and the artifact holds only `adapters.safetensors` (adapters + norms + head) and `adapters.json`.
ALBERT shares its layers across depth, so it gets one pair of adapters per shared layer.

Several adapter artifacts made on one backbone share it (`selfsup.adapt.shared.shared_backbone.load_shared`): the backbone is loaded once
and each task keeps only its own tensors (adapters, norms, head), which `use_tensors` points the model's
parameters at when its task is made active — no copy, and adapter sizes and label counts may differ per task.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from selfsup.errors import SelfsupError

ADAPTER_CONFIG = "adapters.json"
ADAPTER_WEIGHTS = "adapters.safetensors"

# model_type -> regexes of the (attention output, feed-forward output) projections, matched on module names
SITES: dict[str, tuple[str, str]] = {
    "bert": (r"\.attention\.output\.dense$", r"\.layer\.\d+\.output\.dense$"),
    "roberta": (r"\.attention\.output\.dense$", r"\.layer\.\d+\.output\.dense$"),
    "roformer": (r"\.attention\.output\.dense$", r"\.layer\.\d+\.output\.dense$"),
    "electra": (r"\.attention\.output\.dense$", r"\.layer\.\d+\.output\.dense$"),
    "albert": (r"\.attention\.dense$", r"\.ffn_output$"),
    "gpt2": (r"\.attn\.c_proj$", r"\.mlp\.c_proj$"),
    "llama": (r"\.self_attn\.o_proj$", r"\.mlp\.down_proj$"),
    "bart": (r"\.self_attn\.out_proj$", r"\.fc2$"),
}


def _hidden_size(config) -> int:
    for name in ("hidden_size", "d_model", "n_embd"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise SelfsupError("adapter: cannot tell the model's hidden size")


def _is_norm(module) -> bool:
    import torch

    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def add_adapters(model, size: int, init_std: float = 1e-2) -> list[str]:
    """Insert adapters into `model` (in place); returns the names of the adapted projections."""
    from selfsup.adapt.shared.bottleneck import BottleneckAdapter

    model_type = getattr(model.config, "model_type", "")
    if model_type not in SITES:
        raise SelfsupError(f"--method adapter: model type {model_type!r} is not supported "
                           f"(supported: {', '.join(sorted(SITES))})")
    hidden = _hidden_size(model.config)
    patterns = [re.compile(p) for p in SITES[model_type]]
    sites = [(name, mod) for name, mod in model.named_modules() if any(p.search(name) for p in patterns)]
    if not sites:
        raise SelfsupError(f"--method adapter: found no attention/feed-forward output projection in {model_type!r}")
    for name, proj in sites:
        adapter = BottleneckAdapter(hidden, size, init_std)
        parent_name, _, leaf = name.rpartition(".")
        model.get_submodule(parent_name).add_module(f"{leaf}_adapter", adapter)
        proj.register_forward_hook(lambda _m, _inp, out, a=adapter: a(out))
    return [n for n, _ in sites]


def mark_trainable(model, head: set[str]) -> None:
    """Freeze the backbone; train adapters, norms and the head."""
    norms = {f"{n}.{p}" if n else p for n, m in model.named_modules() if _is_norm(m)
             for p, _ in m.named_parameters(recurse=False)}
    for name, p in model.named_parameters():
        p.requires_grad_(name in head or name in norms or "_adapter." in name)


def adapt(model, head: set[str], size: int) -> dict:
    """Adapters on, backbone frozen; returns the artifact description (saved as adapters.json)."""
    sites = add_adapters(model, size)
    mark_trainable(model, head)
    return {"adapter_size": size, "sites": sites, "model_type": model.config.model_type}


def save_adapters(model, folder: Path, description: dict) -> None:
    """Only the trainable tensors (adapters, norms, head) + where they go."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, str(folder / ADAPTER_WEIGHTS))
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**description, "tensors": sorted(tensors)}, indent=2) + "\n")


def load_adapters(model, folder: Path) -> None:
    """Insert the adapters described in `folder` into `model` (a freshly built task model) and load the
    saved tensors; every saved tensor must find its place."""
    import torch
    from safetensors.torch import load_file

    desc = json.loads((Path(folder) / ADAPTER_CONFIG).read_text())
    add_adapters(model, int(desc["adapter_size"]))
    tensors = load_file(str(Path(folder) / ADAPTER_WEIGHTS))
    params = dict(model.named_parameters())
    missing = [n for n in tensors if n not in params]
    if missing:
        raise SelfsupError(f"{folder}: adapter tensors with no place in the model: {', '.join(missing[:3])}")
    with torch.no_grad():
        for n, t in tensors.items():
            if params[n].shape != t.shape:
                raise SelfsupError(f"{folder}: {n} has shape {tuple(t.shape)}, the model {tuple(params[n].shape)}")
            params[n].copy_(t)


def read_adapter_tensors(model, folder: Path) -> dict:
    """The tensors of the adapter artifact in `folder`, checked against `model` (which already has adapters):
    every tensor must have a place, and every trainable parameter of the model must be given one."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / ADAPTER_WEIGHTS))
    params = dict(model.named_parameters())
    missing = [n for n in tensors if n not in params]
    if missing:
        raise SelfsupError(f"{folder}: adapter tensors with no place in the model: {', '.join(missing[:3])}")
    ungiven = [n for n, p in params.items() if ("_adapter." in n or p.requires_grad) and n not in tensors]
    if ungiven:
        raise SelfsupError(f"{folder}: the artifact gives no value for {', '.join(ungiven[:3])} (another backbone?)")
    return tensors


def use_tensors(model, tensors: dict) -> None:
    """Point the named parameters of `model` at `tensors` (a task's adapters, norms and head): a switch of
    task without copying; shapes may change (an adapter of another size, a head of another label count)."""
    params = dict(model.named_parameters())
    for n, t in tensors.items():
        params[n].data = t
