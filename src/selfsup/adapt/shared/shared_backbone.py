"""Several task artifacts made on one backbone, on ONE instance of it (label sets may differ): peft artifacts
(lora / prefix / soft-prompt / ia3: peft's named adapters) or Houlsby adapter artifacts (each task's adapters,
norms and head held beside the one backbone). `use_task` switches the active task."""
from __future__ import annotations

import json
from pathlib import Path

from selfsup.adapt.shared.adapters import ADAPTER_CONFIG
from selfsup.adapt.shared.peft_tuning import base_for
from selfsup.errors import SelfsupError


def load_shared(folders: list[str | Path]):
    """Several task artifacts made on the same backbone (label sets may differ) on ONE backbone instance:
    returns (model, tokenizer, {name: task info}) where the names are "task0", "task1", ...;
    `use_task(model, infos, name)` switches the active task. All peft artifacts (lora / prefix / soft-prompt:
    peft's named adapters) or all Houlsby adapter artifacts (each task's adapters, norms and head held
    beside the one backbone)."""
    from selfsup.adapt.core.models import finetuned_folder, load_tokenizer, quiet_transformers, read_task_info

    quiet_transformers()
    infos: dict[str, dict] = {}
    for i, given in enumerate(folders):
        f = finetuned_folder(given)
        info = read_task_info(f)
        if not ((f / "adapter_config.json").is_file() or (f / ADAPTER_CONFIG).is_file()):
            raise SelfsupError(f"{f}: a --method {info.get('method')} model is not a task artifact "
                               f"(lora / prefix / soft-prompt / ia3 / adapter); cannot share a backbone")
        infos[f"task{i}"] = {**info, "folder": str(f)}
    if not infos:
        raise SelfsupError("load_shared: no task artifacts given")
    families = {"adapter" if (Path(i["folder"]) / ADAPTER_CONFIG).is_file() else "peft" for i in infos.values()}
    if len(families) > 1:
        raise SelfsupError("load_shared: Houlsby adapter artifacts and peft artifacts cannot share a backbone "
                           "(give all of one kind)")
    sources = {str(Path(i.get("source_model") or "").resolve()) for i in infos.values()}
    if families == {"adapter"} and len(sources) > 1:
        raise SelfsupError(f"load_shared: the artifacts were made on different backbones: {sorted(sources)}")
    tok = load_tokenizer(Path(next(iter(infos.values()))["folder"]))
    model = (_shared_adapters if families == {"adapter"} else _shared_peft)(infos, tok)
    use_task(model, infos, next(iter(infos)))
    return model.eval(), tok, infos


def _shared_peft(infos: dict[str, dict], tok):
    import torch
    from peft import PeftConfig, PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    model = None
    for name, info in infos.items():
        f = Path(info["folder"])
        if model is None:
            model = PeftModel.from_pretrained(base_for(f, info, tok, info["method"]), str(f), adapter_name=name)
            continue
        model.add_adapter(name, PeftConfig.from_pretrained(str(f)))
        state = load_peft_weights(str(f), device="cpu")
        # a head of another label count: give this task's copy of the head the saved shapes
        params = dict(model.named_parameters())
        for key, t in state.items():
            for n, p in params.items():
                if f".modules_to_save.{name}." in n and n.replace(f".modules_to_save.{name}", "") == key \
                        and p.shape != t.shape:
                    p.data = torch.empty_like(t)
        result = set_peft_model_state_dict(model, state, adapter_name=name)
        bad = [k for k in getattr(result, "unexpected_keys", []) if name in k]
        if bad:
            raise SelfsupError(f"{f}: artifact tensors with no place on the shared backbone: {bad[:3]}")
    return model


def _shared_adapters(infos: dict[str, dict], tok):
    from selfsup.adapt.shared.adapters import add_adapters, mark_trainable, read_adapter_tensors

    first = next(iter(infos.values()))
    model = base_for(Path(first["folder"]), first, tok, "adapter")
    desc = json.loads((Path(first["folder"]) / ADAPTER_CONFIG).read_text())
    add_adapters(model, int(desc["adapter_size"]))
    mark_trainable(model, {n for n in desc.get("tensors", []) if "_adapter." not in n})
    model.selfsup_task_tensors = {name: read_adapter_tensors(model, Path(info["folder"]))
                                  for name, info in infos.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def use_task(model, infos: dict, name: str) -> None:
    """Make `name` the active task of a `load_shared` model."""
    if hasattr(model, "selfsup_task_tensors"):  # Houlsby adapters: point the parameters at this task's tensors
        from selfsup.adapt.shared.adapters import use_tensors

        use_tensors(model, model.selfsup_task_tensors[name])
        base = model
    else:
        model.set_adapter(name)
        base = model.get_base_model()
    labels = infos[name].get("labels")
    if labels:
        base.num_labels = base.config.num_labels = len(labels)
        base.config.id2label = dict(enumerate(labels))
        base.config.label2id = {lab: i for i, lab in enumerate(labels)}
