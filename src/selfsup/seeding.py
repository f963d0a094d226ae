"""Reseeding torch's global generator cheaply, for the per-step reseeds that make training resume- and DDP-exact.

`torch.manual_seed` also queues a lazy seed for every accelerator backend, and each queued call formats the
Python stack (`traceback.format_stack`); deep inside Lightning's hooks that costs 1-2 ms per call on a CPU-only
machine, a visible share of a small model's step. Where no accelerator exists only the CPU generator needs the
seed, and that takes microseconds.
"""
from __future__ import annotations

import functools

import torch


@functools.cache
def _accelerator_present() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return bool(torch.cuda.is_available() or (mps is not None and mps.is_available())
                or (xpu is not None and xpu.is_available()))


def seed_torch(seed: int) -> None:
    """Same effect as `torch.manual_seed(seed)`: the full call where an accelerator exists, the CPU generator's
    seed alone where none does."""
    if _accelerator_present():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(int(seed))
