"""Task heads on any checkpoint: a selfsup run folder or a local HF folder (BERT / RoBERTa / ALBERT / MiniLM
encoders, GPT-2 / Llama decoders, BART).

The heads are transformers' own `AutoModelFor{SequenceClassification,TokenClassification,QuestionAnswering}`
(decoders classify from the last non-padding token; BART from its last end-of-sequence state). Only BART
token classification has no transformers class; it is written here (`BartForTokenClassification`) and
registered with the Auto class (`selfsup.adapt.core.bart_head`), so a fine-tuned folder reloads with
`AutoModelForTokenClassification` once a selfsup model has been built or loaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfsup.adapt.core.kinds import task_kind
from selfsup.errors import SelfsupError

TASK_FILE = "task.json"  # saved next to the HF files: task kind, labels, columns, max_length

def quiet_transformers() -> None:
    """No load reports ("newly initialized weights"), progress bars or advisory warnings on the screen."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*was not found in model.*")
    # peft 0.21 asks transformers 5 for a renamed property on every wrap: not the user's to act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def load_error(folder: Path, e: Exception, what: str = "cannot load") -> SelfsupError:
    """A failed `from_pretrained` as one line naming the file it read: the weights file when the error came
    from reading weights (a corrupt or truncated safetensors), else the folder."""
    first = str(e).splitlines()[0][:200] if str(e) else ""
    name = next((f for f in WEIGHT_FILES if (Path(folder) / f).is_file()), None)
    weights = name and ("safetensor" in type(e).__name__.lower() or "deserializ" in first.lower())
    where = Path(folder) / name if weights else folder
    return SelfsupError(f"{where}: {what} ({type(e).__name__}: {first})")


def resolve_checkpoint(model: str | Path) -> Path:
    """A selfsup run folder -> its `model/`; an HF folder (with config.json) -> itself."""
    p = Path(model)
    if (p / "model" / "config.json").is_file():
        return p / "model"
    if (p / "config.json").is_file():
        return p
    if not p.exists():
        raise SelfsupError(f"{model}: no such folder (expected a selfsup run folder or an HF checkpoint folder)")
    raise SelfsupError(f"{model}: not a checkpoint (no config.json, and no model/config.json of a selfsup run)")


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise SelfsupError(f"{path}: cannot load its tokenizer ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if not getattr(tok, "is_fast", False):
        raise SelfsupError(f"{path}: selfsup needs a fast tokenizer (sub-word offsets)")
    if tok.pad_token is None:  # GPT-2 / Llama: pad with end-of-sequence (padding is masked anyway)
        if tok.eos_token is None:
            raise SelfsupError(f"{path}: the tokenizer has neither a padding nor an end-of-sequence token")
        tok.pad_token = tok.eos_token
    return tok


def model_type(path: Path) -> str:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type", "")
    except (OSError, json.JSONDecodeError) as e:
        raise SelfsupError(f"{path / 'config.json'}: unreadable ({e})") from None


def auto_class(kind: str):
    """The transformers Auto class of `kind`'s head (with selfsup's hand-written heads registered)."""
    import transformers as tf

    from selfsup.adapt.core.bart_head import register

    register()
    if task_kind(kind).modality == "speech":  # selfsup's GRU encoder gets its audio-classification head
        from selfsup.adapt.core.audio_model import register as register_audio

        register_audio()
    return getattr(tf, task_kind(kind).auto_class)


def task_config(path: Path, kind: str, labels: list[str] | None, tokenizer, dropout: float | None = None):
    """The checkpoint's config with the head's label set (id2label / label2id) and padding id."""
    from transformers import AutoConfig

    extra: dict[str, Any] = {}
    if kind == "sequence-regression":
        extra.update(num_labels=1, problem_type="regression")
    elif kind != "extractive-qa":
        extra.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                     label2id={lab: i for i, lab in enumerate(labels)})
        if kind != "token-classification":
            extra["problem_type"] = "single_label_classification"
    try:
        config = AutoConfig.from_pretrained(str(path), **extra)
    except Exception as e:
        raise SelfsupError(f"{path}: cannot read the model config ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
    if dropout is not None:
        for name in ("hidden_dropout_prob", "classifier_dropout", "resid_pdrop", "dropout", "classifier_dropout_prob"):
            if hasattr(config, name):
                setattr(config, name, dropout)
    return config


def build_model(path: Path, kind: str, labels: list[str] | None, tokenizer, init: str = "pretrained",
                seed: int = 0, dropout: float | None = None):
    """(model, names of the parameters the head adds) for `kind` on the checkpoint at `path`.

    `init="scratch"` builds the same architecture with fresh random weights (seeded). Speech kinds take no
    tokenizer: their head is transformers' audio classifier (`selfsup.adapt.core.audio_model`)."""
    import torch

    quiet_transformers()
    if task_kind(kind).modality == "speech":
        from selfsup.adapt.core.audio_model import build_audio_classifier

        return build_audio_classifier(path, labels, init=init, seed=seed, dropout=dropout)
    family = model_type(path)
    auto = auto_class(kind)
    config = task_config(path, kind, labels, tokenizer, dropout)
    torch.manual_seed(seed)
    try:
        if init == "scratch":
            model = auto.from_config(config)
            new = set()
        else:
            model, info = auto.from_pretrained(str(path), config=config, output_loading_info=True)
            new = set(info.get("missing_keys") or ())
    except ValueError as e:  # an architecture without this head
        raise SelfsupError(f"{path}: model type {family!r} has no {kind} head "
                           f"({str(e).splitlines()[0][:160]})") from None
    except Exception as e:  # unreadable weights
        raise load_error(path, e) from None
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    prefix = getattr(model, "base_model_prefix", "")
    head = {n for n, _ in model.named_parameters() if not (prefix and n.startswith(prefix + "."))}
    return model.train(), head | new


def freeze_backbone(model, head: set[str]) -> None:
    """`--method linear`: train only the head — the task layer, plus any weight the checkpoint did not
    provide (e.g. BERT's pooler when the checkpoint is a masked LM)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)


def count_parameters(model) -> tuple[int, int]:
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def save_task(folder: Path, info: dict) -> None:
    """`task.json` beside the HF files: kind, labels, columns, max_length, method, source model."""
    (Path(folder) / TASK_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def finetuned_folder(model_dir: str | Path) -> Path:
    """The folder holding `task.json` of a `selfsup finetune` run (the run folder or its `model/`); for a
    multi-seed run folder, the model of its best seed by the main metric (said on stderr)."""
    p = Path(model_dir)
    if (p / "model" / TASK_FILE).is_file():
        p = p / "model"
    if not (p / TASK_FILE).is_file() and list(p.glob(f"seed-*/model/{TASK_FILE}")):
        return _best_seed(p)
    if not (p / TASK_FILE).is_file():
        raise SelfsupError(f"{model_dir}: not a fine-tuned model (no {TASK_FILE}; make one with `selfsup finetune`)")
    return p


def _best_seed(run: Path) -> Path:
    from selfsup.console import info

    seeds = sorted(run.glob(f"seed-*/model/{TASK_FILE}"), key=lambda f: int(f.parent.parent.name.split("-")[1]))
    chosen, why = seeds[0].parent, "the first seed"
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        metric = metrics["main_metric"]
        scored = [(r["eval"][metric], r["folder"]) for r in metrics["runs"] if metric in r["eval"]]
        score, folder = max(scored, key=lambda x: x[0])  # ties: the first seed
        chosen, why = run / folder / "model", f"its best seed by eval {metric} ({score:.4f})"
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError):
        pass
    info(f"{run} holds {len(seeds)} seeds; using {chosen.parent.name} ({why})")
    return chosen


def read_task_info(folder: Path) -> dict:
    try:
        info = json.loads((Path(folder) / TASK_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SelfsupError(f"{Path(folder) / TASK_FILE}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(info, dict) or "kind" not in info:
        raise SelfsupError(f"{Path(folder) / TASK_FILE}: not a selfsup task file (no 'kind')")
    return info


def load_task_model(folder: Path, kind: str):
    """A whole fine-tuned HF task model (`--method full|linear|bitfit`, distilled and pruned students)."""
    auto = auto_class(kind)
    try:
        model = auto.from_pretrained(str(folder))
    except Exception as e:
        raise load_error(folder, e, "cannot load the fine-tuned model") from None
    return model.eval()
