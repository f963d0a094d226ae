"""What the reconstruction methods (Mockingjay, TERA, APC) share: the prediction head and the masked L1 loss."""
from __future__ import annotations

import torch


def reconstruction_head(hidden: int, out: int) -> torch.nn.Sequential:
    """Mockingjay's and TERA's prediction head: dense + GELU + LayerNorm, then a projection to the frame size."""
    return torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.LayerNorm(hidden),
                               torch.nn.Linear(hidden, out))


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the chosen values of (B, T, F) frames: `chosen` is (B, T) (every value of the
    chosen frames) or (B, T, F) (single values, e.g. TERA's masked channels)."""
    diff = (prediction.float() - target.float()).abs()
    weight = chosen.to(diff.dtype)
    if weight.dim() == diff.dim() - 1:
        weight = weight.unsqueeze(-1).expand_as(diff)
    return (diff * weight).sum() / weight.sum().clamp_min(1)
