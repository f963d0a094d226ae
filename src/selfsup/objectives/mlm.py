"""Masked language modelling (BERT, Devlin et al. 2019), with whole-word (BERT WWM) and span (SpanBERT,
Joshi et al. 2020) masking, and optional next-sentence (BERT) or sentence-order (ALBERT, Lan et al. 2020)
prediction from the [CLS] output.

Predicts: the original token at ~15% of positions (80% shown as [MASK], 10% a random token, 10% unchanged)
from the corrupted sequence; with `sentence_task`, whether segment B follows A (NSP) or A and B are swapped
(SOP). The vocabulary projection runs at masked positions only (the waste a plain HF loop spends on the
other 85%).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.backbones.text import build_text_model, masked_lm_parts
from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.objectives.text_base import TextObjective, pad_stack
from selfsup.pretext.masking import IGNORE, mask_tokens
from selfsup.pretext.sentence_pairs import make_pair
from selfsup.registry import register_objective


@register_objective("mlm")
class MaskedLanguageModeling(TextObjective):
    @dataclasses.dataclass
    class Options:
        mask_rate: float = bounded(0.15, gt=0, le=1, doc="fraction of tokens predicted")
        masking: Literal["token", "whole-word", "span"] = "token"
        mask_token_prob: float = bounded(0.8, ge=0, le=1, doc="of the predicted tokens, shown as [MASK]")
        random_token_prob: float = bounded(0.1, ge=0, le=1, doc="of the predicted tokens, replaced at random")
        span_p: float = bounded(0.2, gt=0, le=1, doc="SpanBERT geometric parameter (span masking)")
        max_span: int = bounded(10, ge=1, doc="longest span in words (span masking)")
        sentence_task: Literal["none", "nsp", "sop"] = "none"
        sentence_task_weight: float = bounded(1.0, ge=0)

        def validate(self) -> None:
            if self.mask_token_prob + self.random_token_prob > 1:
                raise SelfsupError("mask_token_prob + random_token_prob: must be <= 1, got "
                                   f"{self.mask_token_prob + self.random_token_prob}")

    @classmethod
    def example_kind_for(cls, recipe) -> str:
        return "sentences" if recipe.objective.sentence_task != "none" else "blocks"

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        if recipe.model.type not in ("bert", "albert", "roberta", "roformer"):
            raise SelfsupError(f"model.type: mlm needs an encoder (bert, albert, roberta, roformer), "
                               f"got {recipe.model.type!r}")
        if recipe.objective.sentence_task != "none" and recipe.model.type in ("roberta", "roformer"):
            raise SelfsupError(f"objective.sentence_task: {recipe.model.type} has no sentence-pair head; "
                               "use bert or albert")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.pairs = o.sentence_task != "none"
        if self.ids["mask"] is None:
            raise SelfsupError("tokenizer: has no mask token; masked language modelling needs one")
        self.model = build_text_model(recipe.model, "pretraining" if self.pairs else "masked-lm", self.tokenizer)
        self.parts = masked_lm_parts(self.model)
        self.pair_head = None
        if self.pairs:
            self.pair_head = getattr(self.model, "sop_classifier", None) or self.model.cls.seq_relationship

    def _mask(self, tokens: np.ndarray, word_start: np.ndarray, rng: np.random.Generator):
        o = self.options
        special = np.isin(tokens, self.special_id_array)
        return mask_tokens(tokens, special, rng, mask_id=self.ids["mask"], vocab_size=self.vocab_size,
                           special_ids=self.special_id_array, rate=o.mask_rate, mode=o.masking,
                           word_start=word_start, mask_prob=o.mask_token_prob, random_prob=o.random_token_prob,
                           span_p=o.span_p, max_span=o.max_span)

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        if not self.pairs:
            inputs, labels = [], []
            for (tokens, word_start), rng in zip(examples, rngs):
                seq = self.wrap_block(tokens)
                ws = np.concatenate([[1], word_start, [1]]) if len(seq) != len(tokens) else word_start
                x, y = self._mask(seq, ws, rng)
                inputs.append(x)
                labels.append(y)
            return {"input_ids": torch.from_numpy(np.stack(inputs)), "labels": torch.from_numpy(np.stack(labels))}
        rows = []
        for (index, sentences), rng in zip(examples, rngs):
            other = self.prepared.train.random_other(index, rng) if self.options.sentence_task == "nsp" else []
            a, b, label = make_pair(sentences, other, self.options.sentence_task, rng, self.recipe.data.block_size - 3)
            cls, sep = [[self.ids["cls"], 1]], [[self.ids["sep"], 1]]
            seq, ws = np.concatenate([cls, a, sep, b, sep]).astype(np.int64).T
            segment = np.r_[np.zeros(len(a) + 2, np.int64), np.ones(len(b) + 1, np.int64)]
            x, y = self._mask(seq, ws, rng)
            rows.append((x, y, segment, label))
        pad = self.ids["pad"]
        out = {"input_ids": pad_stack([r[0] for r in rows], pad), "labels": pad_stack([r[1] for r in rows], IGNORE),
               "token_type_ids": pad_stack([r[2] for r in rows], 0),
               "attention_mask": pad_stack([np.ones(len(r[0]), np.int64) for r in rows], 0)}
        out["pair_labels"] = torch.tensor([r[3] for r in rows], dtype=torch.long)
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        kwargs = {k: batch[k] for k in ("attention_mask", "token_type_ids") if k in batch}
        selected = labels != IGNORE
        if self.parts is not None:
            encoder, head = self.parts
            out = encoder(input_ids=batch["input_ids"], **kwargs)
            logits = head(out.last_hidden_state[selected])
            pooled = getattr(out, "pooler_output", None)
        else:  # unknown architecture: full forward, logits everywhere
            out = self.model(input_ids=batch["input_ids"], output_hidden_states=False, **kwargs)
            logits = (out.logits if hasattr(out, "logits") else out.prediction_logits)[selected]
            pooled = None
        targets = labels[selected]
        mlm_loss = F.cross_entropy(logits.float(), targets)
        result = {"loss": mlm_loss, "mlm_loss": mlm_loss.detach(),
                  "mlm_accuracy": (logits.argmax(-1) == targets).float().mean().detach(),
                  "n_tokens": batch["attention_mask"].sum() if "attention_mask" in batch
                  else torch.tensor(labels.numel())}
        if self.pairs:
            pair_logits = self.pair_head(pooled)
            pair_loss = F.cross_entropy(pair_logits.float(), batch["pair_labels"])
            result["loss"] = mlm_loss + self.options.sentence_task_weight * pair_loss
            result[f"{self.options.sentence_task}_loss"] = pair_loss.detach()
            result[f"{self.options.sentence_task}_accuracy"] = \
                (pair_logits.argmax(-1) == batch["pair_labels"]).float().mean().detach()
        return result
