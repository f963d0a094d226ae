"""Examples -> model features -> padded batches, for every text method: tokenization with the task's
alignment (first sub-word piece labels, QA windows), right-padded collation of inputs and targets (soft targets
of distillation and PET included), and the model positions a checkpoint can take."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from selfsup.adapt.core.tasks import IGNORE


def model_positions(config, tokenizer) -> int:
    """How many tokens the model can take."""
    limits = []
    mt = getattr(config, "model_type", "")
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if n:
        limits.append(n - (config.pad_token_id or 1) - 1 if mt in ("roberta", "xlm-roberta", "camembert") else n)
    tml = getattr(tokenizer, "model_max_length", None)
    if tml and tml < 1_000_000:
        limits.append(tml)
    return min(limits) if limits else 512


def keep_token_types(config) -> bool:
    return (getattr(config, "type_vocab_size", 0) or 0) > 1


def encode(kind: str, tokenizer, examples: Sequence, labels: list[str] | None, max_length: int, keep_types: bool,
           cfg: Any) -> list[dict]:
    """Examples -> features (python lists; padded per batch by `collate`)."""
    from selfsup.adapt.core.tasks import first_piece_index, first_piece_labels, join_words, token_word_ids

    if hasattr(tokenizer, "encode_prompts"):  # --method prompt: template + verbalizer (selfsup.adapt.shared.prompts)
        return tokenizer.encode_prompts(examples, labels, max_length)
    if kind == "extractive-qa":
        from selfsup.adapt.core.qa import encode_qa

        return encode_qa(tokenizer, examples, max_length, min(cfg.doc_stride, max_length // 2), keep_types)
    label2id = {lab: i for i, lab in enumerate(labels or [])}
    feats: list[dict] = []
    if kind == "token-classification":
        texts, spans = zip(*(join_words(s.words) for s in examples))
        enc = tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_token_type_ids=keep_types)
        for i, s in enumerate(examples):
            wids = token_word_ids(enc["offset_mapping"][i], enc.sequence_ids(i), spans[i])
            tag_ids = [label2id[t] for t in s.tags] if s.tags is not None and label2id else None
            f = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 "first_piece": first_piece_index(wids, len(s.words)), "example": i}
            if tag_ids is not None:
                f["labels"] = first_piece_labels(wids, tag_ids)
            if keep_types and "token_type_ids" in enc:
                f["token_type_ids"] = enc["token_type_ids"][i]
            feats.append(f)
        return feats
    texts = [e.text for e in examples]
    pairs = [e.pair for e in examples] if kind == "pair-classification" else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, return_token_type_ids=keep_types)
    for i, e in enumerate(examples):
        f = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "example": i}
        if keep_types and "token_type_ids" in enc:
            f["token_type_ids"] = enc["token_type_ids"][i]
        if e.label is not None:
            f["labels"] = float(e.label) if kind == "sequence-regression" else label2id[e.label]
        feats.append(f)
    return feats


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def collate(feats: Sequence[dict], pad_id: int, device=None) -> dict:
    """Right-padded tensors of the model inputs and targets present in every feature."""
    import torch

    width = max(len(f["input_ids"]) for f in feats)
    batch: dict[str, Any] = {}
    for key, pad in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in feats[0]:
            batch[key] = torch.tensor([f[key] + [pad] * (width - len(f[key])) for f in feats])
    if "labels" in feats[0]:
        first = feats[0]["labels"]
        if isinstance(first, list):
            batch["labels"] = torch.tensor([f["labels"] + [IGNORE] * (width - len(f["labels"])) for f in feats])
        elif isinstance(first, float):
            batch["labels"] = torch.tensor([f["labels"] for f in feats], dtype=torch.float32)
        else:
            batch["labels"] = torch.tensor([f["labels"] for f in feats])
    for key in ("start_positions", "end_positions"):
        if key in feats[0]:
            batch[key] = torch.tensor([f[key] for f in feats])
    for key in ("teacher_logits", "soft_labels"):  # per-example soft targets (distillation, PET)
        if key in feats[0]:
            batch[key] = torch.tensor([f[key] for f in feats], dtype=torch.float32)
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}


def logits_of(model, batch: dict):
    """The model's logits on a collated batch (its inputs only, never its targets)."""
    return model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}).logits


def batches(feats: Sequence[dict], size: int) -> Iterator[Sequence[dict]]:
    for i in range(0, len(feats), size):
        yield feats[i:i + size]
