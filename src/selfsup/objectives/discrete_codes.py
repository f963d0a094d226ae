"""Discrete codes shared by the methods that sample them (the one-hot-code auto-encoder, text as the code): a
straight-through Gumbel-softmax sample and its temperature schedule over a run. Pure functions."""
from __future__ import annotations

import torch


def gumbel_onehot(logits: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """A straight-through Gumbel-softmax sample over the last axis: exactly one-hot forward, the soft sample's
    gradient backward. The soft sample is torch's `F.gumbel_softmax`; the straight-through step is written
    `one_hot + (soft - soft.detach())` rather than torch's `hard=True` (`one_hot - soft.detach() + soft`),
    the same gradient but a forward value of exactly 1 (torch's can round off 1 by one ulp)."""
    import torch.nn.functional as F

    soft = F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard + (soft - soft.detach())


def annealed_temperature(step: int, max_steps: int, tau_start: float, tau_end: float) -> float:
    """Exponential decay from tau_start (step 0) to tau_end (step max_steps and after)."""
    return tau_start * (tau_end / tau_start) ** min(1.0, step / max(1, max_steps))
