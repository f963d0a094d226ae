"""Sequence-to-sequence denoising pretraining: BART (Lewis et al. 2020) and MASS (Song et al. 2019).

BART: the encoder reads a corrupted document (any mix of token masking, token deletion, text infilling with
Poisson spans, sentence permutation, document rotation; default = the paper's best, text infilling 30% with
λ=3 plus sentence permutation) and the decoder reconstructs the *whole original* document, [CLS] ... [SEP],
token by token with teacher forcing.

MASS: the encoder reads the document with one contiguous span of ~50% of its tokens masked, and the decoder
predicts *only that span* (see `selfsup.pretext.denoising.mass_span` for the position simplification).

Examples are runs of consecutive sentences of one document (`SentenceChunks`); the loss is the mean token
cross-entropy over the decoder's labels.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.backbones.text import build_text_model
from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.objectives.text_base import TextObjective, pad_stack
from selfsup.pretext.denoising import apply_bart_noise, mass_span
from selfsup.pretext.masking import IGNORE
from selfsup.registry import register_objective


@register_objective("denoising")
class Denoising(TextObjective):
    default_backbone = "bart"
    example_kind = "sentences"

    @dataclasses.dataclass
    class Options:
        method: Literal["bart", "mass"] = "bart"
        token_masking: float = bounded(0.0, ge=0, lt=1, doc="BART: rate of tokens replaced by [MASK]; 0 = off")
        token_deletion: float = bounded(0.0, ge=0, lt=1, doc="BART: rate of tokens deleted; 0 = off")
        text_infilling: float = bounded(0.3, ge=0, lt=1, doc="BART: rate of tokens covered by masked spans; 0 = off")
        poisson_lambda: float = bounded(3.0, gt=0, doc="BART: mean span length of text infilling")
        sentence_permutation: bool = True  # BART: shuffle the sentences
        document_rotation: bool = False  # BART: rotate the document to start at a random word
        mass_span_fraction: float = bounded(0.5, gt=0, le=1, doc="MASS: fraction of tokens in the masked span")

        def validate(self) -> None:
            noises = (self.token_masking, self.token_deletion, self.text_infilling,
                      self.sentence_permutation, self.document_rotation)
            if self.method == "bart" and not any(noises):
                raise SelfsupError("token_masking/token_deletion/text_infilling/sentence_permutation/"
                                   "document_rotation: method bart needs at least one noise (else it learns to copy)")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        if recipe.model.type != "bart" and not recipe.model.from_pretrained:
            raise SelfsupError(f"model.type: denoising needs an encoder-decoder (bart), got {recipe.model.type!r}")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        if self.ids["mask"] is None:
            raise SelfsupError("tokenizer: has no mask token; denoising needs one")
        self.model = build_text_model(recipe.model, "seq2seq-lm", self.tokenizer)
        start = self.model.config.decoder_start_token_id
        self.decoder_start_id = int(start if start is not None else self.ids["eos"])
        # [CLS] content [SEP] must fit the block (and so the position embeddings)
        self.max_content = recipe.data.block_size - 2

    def _bart_row(self, sentences: list[np.ndarray], rng: np.random.Generator):
        original = np.concatenate(sentences)[:, 0].astype(np.int64)[:self.max_content]
        noised = apply_bart_noise(sentences, rng, self.options, self.ids)[:self.max_content]
        labels = self.wrap_block(original)
        decoder_input = np.concatenate([[self.decoder_start_id], labels[:-1]]).astype(np.int64)
        return self.wrap_block(noised), decoder_input, labels

    def _mass_row(self, sentences: list[np.ndarray], rng: np.random.Generator):
        original = np.concatenate(sentences)[:, 0].astype(np.int64)[:self.max_content]
        encoder, decoder_input, labels = mass_span(original, rng, self.options.mass_span_fraction,
                                                   mask_id=self.ids["mask"], start_id=self.decoder_start_id)
        return self.wrap_block(encoder), decoder_input, labels

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        row = self._mass_row if self.options.method == "mass" else self._bart_row
        rows = [row(sentences, rng) for (_, sentences), rng in zip(examples, rngs)]
        pad = self.ids["pad"]
        return {"input_ids": pad_stack([r[0] for r in rows], pad),
                "attention_mask": pad_stack([np.ones(len(r[0]), np.int64) for r in rows], 0),
                "decoder_input_ids": pad_stack([r[1] for r in rows], pad),
                "labels": pad_stack([r[2] for r in rows], IGNORE)}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            decoder_input_ids=batch["decoder_input_ids"]).logits
        selected = labels != IGNORE
        predicted, targets = logits[selected], labels[selected]
        loss = F.cross_entropy(predicted.float(), targets)
        accuracy = (predicted.argmax(-1) == targets).float().mean()
        return {"loss": loss, "token_accuracy": accuracy.detach(), "n_tokens": batch["attention_mask"].sum()}
