"""Causal language modelling (GPT, Radford et al. 2018): predict every token from the tokens before it.

Examples are packed blocks of the token stream (documents separated by the end-of-text token), no padding.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.backbones.text import build_text_model
from selfsup.errors import SelfsupError
from selfsup.objectives.text_base import TextObjective
from selfsup.registry import register_objective


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of position t's logits against token t+1."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())


@register_objective("clm")
class CausalLanguageModeling(TextObjective):
    default_backbone = "gpt2"
    block_specials = "none"

    @dataclasses.dataclass
    class Options:
        pass

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        if recipe.model.type != "gpt2" and not recipe.model.from_pretrained:
            raise SelfsupError(f"model.type: clm needs a decoder (gpt2), got {recipe.model.type!r}")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        self.model = build_text_model(recipe.model, "causal-lm", self.tokenizer)

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.from_numpy(np.stack([self.wrap_block(tokens) for tokens, _ in examples]))}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"]
        logits = self.model(input_ids=ids).logits
        loss = next_token_loss(logits, ids)
        accuracy = (logits[:, :-1].argmax(-1) == ids[:, 1:]).float().mean()
        return {"loss": loss, "next_token_accuracy": accuracy.detach(), "n_tokens": torch.tensor(ids.numel())}
