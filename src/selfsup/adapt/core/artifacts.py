"""Loading a fine-tuned folder: its task.json names the method, the registry finds the method, the method
loads its artifact (a whole HF model, a peft or adapter artifact on its backbone, a prompt model, exit heads)."""
from __future__ import annotations

from pathlib import Path

from selfsup.adapt.core.kinds import KINDS
from selfsup.adapt.core.models import finetuned_folder, load_tokenizer, quiet_transformers, read_task_info
from selfsup.errors import SelfsupError

# whole HF task models written by tools rather than methods: loaded as a full fine-tune is
LOADED_AS = {"distill": "full"}


def load_finetuned(model_dir: str | Path, with_method: bool = False):
    """(model in eval mode, tokenizer, task info) of a folder written by `selfsup finetune` (and its method
    object as a fourth item with `with_method`). A prompt model's "tokenizer" renders its prompts. The symbol
    map the model was fine-tuned with (`symbol_map.json`) comes as `info["symbol_map"]`."""
    from selfsup.adapt.registry import check_requirements, get_method
    from selfsup.data.symbol_map import load_symbol_map

    quiet_transformers()
    folder = finetuned_folder(model_dir)
    info = read_task_info(folder)
    smap = load_symbol_map(folder)
    if smap is not None:
        info["symbol_map"] = smap.to_json()
    name = info.get("method") or "full"
    method = get_method(LOADED_AS.get(name, name), key=f"{folder / 'task.json'}: method")
    check_requirements(method)
    if info.get("kind") in KINDS and KINDS[info["kind"]].modality == "image":  # read by images.load_classifier
        raise SelfsupError(f"{folder}: a fine-tuned image classifier; `selfsup evaluate` / `predict` (or "
                           "transformers' AutoModelForImageClassification) read it, not this verb")
    if info.get("kind") in KINDS and KINDS[info["kind"]].modality == "table":  # read by table_tasks
        raise SelfsupError(f"{folder}: a fine-tuned table classifier; `selfsup evaluate` / `predict` read it, "
                           "not this verb")
    speech = info.get("kind") in KINDS and KINDS[info["kind"]].modality == "speech"
    model, tok = method.load(folder, info, None if speech else load_tokenizer(folder))  # speech: no tokenizer
    return (model, tok, info, method) if with_method else (model, tok, info)
