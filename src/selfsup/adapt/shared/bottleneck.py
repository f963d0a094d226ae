"""The Houlsby bottleneck module (hand-written: peft has no Houlsby adapters, peft issue #244). Imports torch
at the top: `selfsup.adapt.shared.adapters` imports it when adapters are inserted."""
from __future__ import annotations

import torch


class BottleneckAdapter(torch.nn.Module):
    """x + up(gelu(down(x))); up starts near zero, so the adapter starts as (nearly) the identity."""

    def __init__(self, hidden: int, size: int, init_std: float = 1e-2):
        super().__init__()
        self.down = torch.nn.Linear(hidden, size)
        self.up = torch.nn.Linear(size, hidden)
        torch.nn.init.normal_(self.down.weight, std=init_std)
        torch.nn.init.zeros_(self.down.bias)
        torch.nn.init.normal_(self.up.weight, std=init_std * 1e-2)  # near zero: near-identity at init
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.nn.functional.gelu(self.down(x)))
