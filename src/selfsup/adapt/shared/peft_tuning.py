"""What the peft-based methods share (lora, prefix, soft-prompt, ia3 in `selfsup.adapt.methods`): peft's task
type per kind, the head modules that train in full (`modules_to_save`: the task layer and any layer the
checkpoint did not provide, e.g. BERT's pooler on a masked-LM checkpoint), wrapping, saving only the small
artifact (peft's `adapter_config.json` + `adapter_model.safetensors`) and loading it onto its backbone.
Each method builds its own peft config and says which families it supports."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError

# model_type -> module names of the attention query / value projections (GPT-2: the fused q/k/v `c_attn`)
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"], "roberta": ["query", "value"], "roformer": ["query", "value"],
    "electra": ["query", "value"], "albert": ["query", "value"], "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"], "bart": ["q_proj", "v_proj"],
}
PREFIX_FAMILIES = ("bert", "roberta", "roformer", "electra", "gpt2", "llama")
SEQUENCE_KINDS = ("sequence-classification", "pair-classification", "sequence-regression")

def task_type(kind: str):
    from peft import TaskType

    if kind == "extractive-qa":
        return TaskType.QUESTION_ANS
    if kind == "token-classification":
        return TaskType.TOKEN_CLS
    return TaskType.SEQ_CLS


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


def accept_past_key_values(model) -> None:
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


def common_config(model, kind: str, head: set[str], source: Path) -> dict[str, Any]:
    """The peft config keys every method sets: task type, the resolvable base path, the head modules."""
    return {"task_type": task_type(kind), "base_model_name_or_path": str(Path(source).resolve()),
            "modules_to_save": head_modules(model, head)}


def backbone_parameters(model, head: set[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n not in head)


def wrap(model, config, method: str):
    """`model` wrapped by peft with `config`; a one-line error when peft cannot wrap this architecture."""
    import peft

    base = getattr(config, "base_model_name_or_path", None)
    try:
        wrapped = peft.get_peft_model(model, config)
    except (ValueError, TypeError) as e:
        raise SelfsupError(f"--method {method}: peft cannot wrap this {model.config.model_type!r} model "
                           f"({str(e).splitlines()[0][:160]})") from None
    if base:  # get_peft_model overwrites it with the path as the model was loaded (maybe relative)
        for cfg in wrapped.peft_config.values():
            cfg.base_model_name_or_path = base
    return wrapped


def save_artifact(model, folder: Path) -> int:
    """peft's artifact only; returns its size in bytes (config + weights)."""
    folder = Path(folder)
    model.save_pretrained(str(folder))
    return sum((folder / f).stat().st_size for f in ("adapter_config.json", "adapter_model.safetensors"))


def base_for(folder: Path, info: dict, tok, method: str):
    """The backbone a task artifact in `folder` loads onto (peft's recorded base path, else task.json's
    `source_model`), with its task head built."""
    from selfsup.adapt.core.models import build_model, resolve_checkpoint

    source = info.get("source_model")
    if (Path(folder) / "adapter_config.json").is_file():
        source = json.loads((Path(folder) / "adapter_config.json").read_text()).get("base_model_name_or_path") \
            or source
    if not source or not Path(source).exists():
        raise SelfsupError(f"{folder}: the backbone this {method} artifact loads onto ({source}) is not there")
    model, _ = build_model(resolve_checkpoint(source), info["kind"], info["labels"], tok)
    if method == "prefix":
        accept_past_key_values(model)
    return model


def load_artifact(folder: Path, info: dict, tok):
    """The fine-tuned model of a peft run: its backbone + the artifact, in eval mode."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_for(folder, info, tok, info["method"]), str(folder)).eval()


class PeftArtifact:
    """Mix into an adaptation method whose artifact is peft's: wraps the task model with the method's
    `peft_config(model, kind, opts, common)` (`common`: task type, base path, head modules), saves only the
    artifact, loads it onto its backbone, and gives the text fewer positions by the virtual tokens."""
    needs_pretrained = True
    whole_model = False
    requires = ("peft",)
    passes_cache = False  # prefix tuning: peft hands the prefix to the model as `past_key_values`

    def peft_config(self, model, kind: str, opts: Any, common: dict[str, Any]):
        raise NotImplementedError

    def prepare(self, model, head: set[str], kind: str, opts: Any, source: Path) -> tuple[Any, int | None]:
        self.check(model.config.model_type, kind, opts)
        backbone = backbone_parameters(model, head)
        if self.passes_cache:
            accept_past_key_values(model)
        config = self.peft_config(model, kind, opts, common_config(model, kind, head, source))
        return wrap(model, config, self.name), backbone

    def save(self, model, folder: Path) -> int:
        return save_artifact(model, folder)

    def load(self, folder: Path, info: dict, tokenizer) -> tuple[Any, Any]:
        return load_artifact(folder, info, tokenizer), tokenizer

    def reserved_positions(self, model) -> int:
        return reserved_positions(model)
