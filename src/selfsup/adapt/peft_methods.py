"""Parameter-efficient fine-tuning for `selfsup finetune --method lora|adapter|prefix|soft-prompt`.

LoRA, prefix tuning and prompt tuning ("soft-prompt") come from peft, with peft's task types, so the task head
(and any layer the checkpoint did not provide, e.g. BERT's pooler on a masked-LM checkpoint) trains through
`modules_to_save`; Houlsby adapters are written by hand (`selfsup.adapt.adapters`). Only the small task
artifact is saved: peft's `adapter_config.json` + `adapter_model.safetensors`, or `adapters.json` +
`adapters.safetensors`; `task.json` records the backbone it loads onto (`source_model`).

Supported combinations (anything else is a one-line SelfsupError):
- lora: every family in `LORA_TARGETS` (the attention query/value projections), every task kind;
- prefix: BERT, RoBERTa, RoFormer, ELECTRA, GPT-2, Llama, every task kind (ALBERT and BART: no key/value
  cache to hold the prefix);
- soft-prompt: every family but BART, sequence-level kinds only (on token classification and QA the
  outputs would include the virtual tokens);
- adapter: the families in `selfsup.adapt.adapters.SITES`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError

PEFT_METHODS = ("lora", "prefix", "soft-prompt")  # through peft
EFFICIENT_METHODS = PEFT_METHODS + ("adapter",)

# model_type -> module names of the attention query / value projections (GPT-2: the fused q/k/v `c_attn`)
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"], "roberta": ["query", "value"], "roformer": ["query", "value"],
    "electra": ["query", "value"], "albert": ["query", "value"], "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"], "bart": ["q_proj", "v_proj"],
}
PREFIX_FAMILIES = ("bert", "roberta", "roformer", "electra", "gpt2", "llama")
SEQUENCE_KINDS = ("sequence-classification", "pair-classification", "sequence-regression")

DEFAULT_LR = {"lora": 1e-3, "adapter": 1e-3, "prefix": 1e-2, "soft-prompt": 3e-2}


def _task_type(kind: str):
    from peft import TaskType

    if kind == "extractive-qa":
        return TaskType.QUESTION_ANS
    if kind == "token-classification":
        return TaskType.TOKEN_CLS
    return TaskType.SEQ_CLS


def check_supported(method: str, model_type: str, kind: str) -> None:
    """One-line SelfsupError for a method this family or task kind cannot use."""
    if method == "lora" and model_type not in LORA_TARGETS:
        raise SelfsupError(f"--method lora: model type {model_type!r} is not supported "
                           f"(supported: {', '.join(sorted(LORA_TARGETS))})")
    if method == "prefix" and model_type not in PREFIX_FAMILIES:
        raise SelfsupError(f"--method prefix: model type {model_type!r} is not supported (no key/value cache "
                           f"for the prefix; supported: {', '.join(PREFIX_FAMILIES)}); try --method lora")
    if method == "soft-prompt":
        if model_type == "bart":
            raise SelfsupError("--method soft-prompt: BART is not supported (its heads take no input "
                               "embeddings); try --method lora")
        if kind not in SEQUENCE_KINDS:
            raise SelfsupError(f"--method soft-prompt: supports {', '.join(SEQUENCE_KINDS)} only, not {kind} "
                               f"(the outputs would include the virtual tokens); try --method lora")
    if method == "adapter":
        from selfsup.adapt.adapters import SITES

        if model_type not in SITES:
            raise SelfsupError(f"--method adapter: model type {model_type!r} is not supported "
                               f"(supported: {', '.join(sorted(SITES))})")


def head_modules(model, head: set[str]) -> list[str]:
    """Module names to train and save in full: the task layer(s) and layers the checkpoint did not provide."""
    prefix = getattr(model, "base_model_prefix", "")
    mods = set()
    for name in head:
        if prefix and name.startswith(prefix + "."):
            mods.add(name.rpartition(".")[0])  # e.g. bert.pooler.dense
        else:
            mods.add(name.split(".")[0])  # classifier, score, qa_outputs
    return sorted(mods)


def _accept_past_key_values(model) -> None:
    """transformers 5 renamed the forward argument `past_key_values` to `cache`; peft's prefix tuning still
    passes (and looks for) `past_key_values`. Give the model's forward that argument again."""
    forward = model.forward

    def forward_with_prefix(*args, past_key_values=None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return forward(*args, **kwargs)

    model.forward = forward_with_prefix


def reserved_positions(model) -> int:
    """Positions taken by virtual tokens (prefix / soft prompt): the text gets that many fewer."""
    cfg = getattr(model, "peft_config", {}).get("default") if hasattr(model, "peft_config") else None
    return int(getattr(cfg, "num_virtual_tokens", 0) or 0)


def peft_config(method: str, model, kind: str, cfg, head: set[str], source: Path):
    """The peft config for `method` with the recipe's `--set` values."""
    import peft

    model_type = model.config.model_type
    common: dict[str, Any] = {"task_type": _task_type(kind), "base_model_name_or_path": str(source)}
    extra = head_modules(model, head)
    if method == "lora":
        return peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                               target_modules=list(cfg.lora_targets or LORA_TARGETS[model_type]),
                               fan_in_fan_out=model_type == "gpt2", modules_to_save=extra, **common)
    if method == "prefix":
        return peft.PrefixTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, modules_to_save=extra, **common)
    init = getattr(peft.PromptTuningInit, "SAMPLE_VOCAB", peft.PromptTuningInit.RANDOM)
    return peft.PromptTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, prompt_tuning_init=init,
                                   token_dim=model.get_input_embeddings().weight.shape[1],
                                   modules_to_save=extra, **common)


def wrap(model, method: str, head: set[str], kind: str, cfg, source: Path):
    """(model ready to train, backbone parameter count) for a parameter-efficient `method`."""
    check_supported(method, model.config.model_type, kind)
    backbone = sum(p.numel() for n, p in model.named_parameters() if n not in head)
    if method == "adapter":
        from selfsup.adapt.adapters import adapt

        model.selfsup_adapters = adapt(model, head, cfg.adapter_size)
        return model, backbone
    import peft

    if method == "prefix":
        _accept_past_key_values(model)
    try:
        wrapped = peft.get_peft_model(model, peft_config(method, model, kind, cfg, head, source))
    except (ValueError, TypeError) as e:
        raise SelfsupError(f"--method {method}: peft cannot wrap this {model.config.model_type!r} model "
                           f"({str(e).splitlines()[0][:160]})") from None
    return wrapped, backbone


def artifact_files(method: str) -> tuple[str, str]:
    if method == "adapter":
        from selfsup.adapt.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

        return ADAPTER_CONFIG, ADAPTER_WEIGHTS
    return "adapter_config.json", "adapter_model.safetensors"


def save_artifact(model, method: str, folder: Path) -> int:
    """Write only the task artifact into `folder`; returns its size in bytes (config + weights)."""
    folder = Path(folder)
    if method == "adapter":
        from selfsup.adapt.adapters import save_adapters

        save_adapters(model, folder, model.selfsup_adapters)
    elif method in PEFT_METHODS:
        model.save_pretrained(str(folder))
    else:
        model.save_pretrained(str(folder), safe_serialization=True)
        return sum((folder / f).stat().st_size for f in ("config.json", "model.safetensors"))
    return sum((folder / f).stat().st_size for f in artifact_files(method))


def _base_for(folder: Path, info: dict, tok, method: str):
    from selfsup.adapt.heads import build_model, resolve_checkpoint

    source = info.get("source_model")
    if method in PEFT_METHODS:
        source = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path") or source
    if not source or not Path(source).exists():
        raise SelfsupError(f"{folder}: the backbone this {method} artifact loads onto ({source}) is not there")
    model, _ = build_model(resolve_checkpoint(source), info["kind"], info["labels"], tok)
    if method == "prefix":
        _accept_past_key_values(model)
    return model


def load_artifact(folder: Path, info: dict, tok):
    """The fine-tuned model of a parameter-efficient run: its backbone (from `source_model`) + the artifact."""
    method = info["method"]
    folder = Path(folder)
    base = _base_for(folder, info, tok, method)
    if method == "adapter":
        from selfsup.adapt.adapters import load_adapters

        load_adapters(base, folder)
        return base.eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(folder)).eval()


def load_shared(folders: list[str | Path]):
    """Several task artifacts made on the same backbone (label sets may differ) on ONE backbone instance:
    returns (model, tokenizer, {name: task info}) where the names are "task0", "task1", ...;
    `use_task(model, infos, name)` switches the active task. All peft artifacts (lora / prefix / soft-prompt:
    peft's named adapters) or all Houlsby adapter artifacts (each task's adapters, norms and head held
    beside the one backbone)."""
    from selfsup.adapt.heads import TASK_FILE, load_tokenizer, quiet_transformers

    quiet_transformers()
    infos: dict[str, dict] = {}
    for i, f in enumerate(folders):
        f = Path(f)
        f = f / "model" if (f / "model" / TASK_FILE).is_file() else f
        if not (f / TASK_FILE).is_file():
            raise SelfsupError(f"{f}: not a fine-tuned model (no {TASK_FILE}; make one with `selfsup finetune`)")
        info = json.loads((f / TASK_FILE).read_text())
        if info.get("method") not in EFFICIENT_METHODS:
            raise SelfsupError(f"{f}: a --method {info.get('method')} model is not a task artifact "
                               f"({'/'.join(EFFICIENT_METHODS)}); cannot share a backbone")
        infos[f"task{i}"] = {**info, "folder": str(f)}
    if not infos:
        raise SelfsupError("load_shared: no task artifacts given")
    families = {"adapter" if i["method"] == "adapter" else "peft" for i in infos.values()}
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
            model = PeftModel.from_pretrained(_base_for(f, info, tok, info["method"]), str(f), adapter_name=name)
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
    from selfsup.adapt.adapters import ADAPTER_CONFIG, add_adapters, mark_trainable, read_adapter_tensors

    first = next(iter(infos.values()))
    model = _base_for(Path(first["folder"]), first, tok, "adapter")
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
        from selfsup.adapt.adapters import use_tensors

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
