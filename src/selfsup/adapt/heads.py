"""Task heads on any checkpoint: a selfsup run folder or a local HF folder (BERT / RoBERTa / ALBERT / MiniLM
encoders, GPT-2 / Llama decoders, BART).

The heads are transformers' own `AutoModelFor{SequenceClassification,TokenClassification,QuestionAnswering}`
(decoders classify from the last non-padding token; BART from its last end-of-sequence state). Only BART
token classification has no transformers class; it is written here (`BartForTokenClassification`) and
registered with the Auto class, so a fine-tuned folder reloads with `AutoModelForTokenClassification` once
`selfsup.adapt.heads` is imported.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError

TASK_FILE = "task.json"  # saved next to the HF files: task kind, labels, columns, max_length

AUTO_BY_KIND = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "sequence-regression": "AutoModelForSequenceClassification",
    "pair-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "extractive-qa": "AutoModelForQuestionAnswering",
}


def quiet_transformers() -> None:
    """No load reports ("newly initialized weights"), progress bars or advisory warnings on the screen."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*was not found in model.*")
    # peft 0.21 asks transformers 5 for a renamed property on every wrap: not the user's to act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)


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


def _model_type(path: Path) -> str:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type", "")
    except (OSError, json.JSONDecodeError) as e:
        raise SelfsupError(f"{path / 'config.json'}: unreadable ({e})") from None


def _auto_class(kind: str, model_type: str):
    import transformers as tf

    _register_hand_heads()
    return getattr(tf, AUTO_BY_KIND[kind])


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

    `init="scratch"` builds the same architecture with fresh random weights (seeded)."""
    import torch

    quiet_transformers()
    model_type = _model_type(path)
    auto = _auto_class(kind, model_type)
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
        raise SelfsupError(f"{path}: model type {model_type!r} has no {kind} head "
                           f"({str(e).splitlines()[0][:160]})") from None
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
    (Path(folder) / TASK_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def load_finetuned(model_dir: str | Path):
    """(model in eval mode, tokenizer, task info) of a folder written by `selfsup finetune`."""
    quiet_transformers()
    p = Path(model_dir)
    if (p / "model" / TASK_FILE).is_file():
        p = p / "model"
    if not (p / TASK_FILE).is_file():
        raise SelfsupError(f"{model_dir}: not a fine-tuned model (no {TASK_FILE}; make one with `selfsup finetune`)")
    info = json.loads((p / TASK_FILE).read_text())
    tok = load_tokenizer(p)
    from selfsup.adapt.peft_methods import EFFICIENT_METHODS, load_artifact

    if info.get("method") in EFFICIENT_METHODS:  # a small task artifact: its backbone + the artifact
        return load_artifact(p, info, tok), tok, info
    if info.get("method") == "prompt":  # the LM + template and verbalizer; its tokenizer renders the prompts
        from selfsup.adapt.prompting import load_prompt_model

        model, prompts = load_prompt_model(p, info, tok)
        return model, prompts, info
    if info.get("method") == "early-exit":  # HF backbone + one exit head per layer
        from selfsup.adapt.early_exit import load_early_exit

        return load_early_exit(p, info), tok, info
    auto = _auto_class(info["kind"], _model_type(p))
    try:
        model = auto.from_pretrained(str(p))
    except Exception as e:
        raise SelfsupError(f"{p}: cannot load the fine-tuned model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    return model.eval(), tok, info


_REGISTERED = False


def _register_hand_heads() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AutoModelForTokenClassification, BartConfig

    AutoModelForTokenClassification.register(BartConfig, _bart_token_classification(), exist_ok=True)
    _REGISTERED = True


def _bart_token_classification():
    import torch
    from transformers.modeling_outputs import TokenClassifierOutput
    from transformers.models.bart import modeling_bart as mb

    class BartForTokenClassification(mb.BartPreTrainedModel):
        # transformers has no BART token-classification head: encoder states + dropout + linear, by hand
        _tied_weights_keys = {"model.encoder.embed_tokens.weight": "model.shared.weight"}

        def __init__(self, config):
            super().__init__(config)
            self.model = torch.nn.Module()  # the encoder half of BartModel, same weight names
            scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
            self.model.shared = mb.BartScaledWordEmbedding(config.vocab_size, config.d_model,
                                                           config.pad_token_id, embed_scale=scale)
            self.model.encoder = mb.BartEncoder(config)
            self.dropout = torch.nn.Dropout(config.classifier_dropout or config.dropout)
            self.classifier = torch.nn.Linear(config.d_model, config.num_labels)
            self.post_init()

        def get_input_embeddings(self):
            return self.model.shared

        def set_input_embeddings(self, value):
            self.model.shared = value
            self.model.encoder.embed_tokens = value

        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
            hidden = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            logits = self.classifier(self.dropout(hidden))
            loss = None
            if labels is not None:
                loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1),
                                                         ignore_index=-100)
            return TokenClassifierOutput(loss=loss, logits=logits)

    BartForTokenClassification.__module__ = __name__
    BartForTokenClassification.__qualname__ = "BartForTokenClassification"
    globals()["BartForTokenClassification"] = BartForTokenClassification
    return BartForTokenClassification
