"""CLM: the loss equals a direct cross-entropy on the same logits, and HF's own shifted loss."""
from __future__ import annotations

import math

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from selfsup.objectives.clm import next_token_loss


def test_next_token_loss_equals_direct_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    ids = torch.randint(0, 5, (2, 4))
    probs = logits.softmax(-1)
    direct = -sum(math.log(probs[b, t, ids[b, t + 1]]) for b in range(2) for t in range(3)) / 6
    assert abs(next_token_loss(logits, ids).item() - direct) < 1e-5


def test_next_token_loss_equals_transformers_internal_loss():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16)).eval()
    ids = torch.randint(0, 50, (3, 12))
    out = model(input_ids=ids, labels=ids)
    assert torch.allclose(next_token_loss(out.logits, ids), out.loss, atol=1e-6)
