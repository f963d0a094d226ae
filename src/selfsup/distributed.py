"""The few collective operations that make a data-parallel run optimize the same objective as one process.

Batch-level losses (NT-Xent's negatives, Barlow Twins' cross-correlation, VICReg's variance and covariance)
and MoCo's queue need the *global* batch: each rank gathers every rank's embeddings, in rank order (the
engine's stream gives rank r the r-th contiguous slice of the global batch, so the gathered batch is the
single-process batch), and computes the global loss. Gradients flow back to each rank's own slice summed
over ranks; DDP then averages over ranks, which gives exactly the single-process gradient. Outside a process
group (one process) every function is the identity.
"""
from __future__ import annotations

import torch


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice. Written here (as lightly's
    `GatherLayer`): torch's differentiable `torch.distributed.nn.all_gather` is deprecated."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's `x` (equal shapes), concatenated in rank order along dim 0, differentiable; `x` itself
    in one process."""
    return _GatherWithGrad.apply(x) if world_size() > 1 else x


@torch.no_grad()
def gather_detached(x: torch.Tensor) -> torch.Tensor:
    """Like `gather`, without gradients (MoCo's keys for the queue)."""
    if world_size() == 1:
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
