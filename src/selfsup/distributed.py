"""The few collective operations that make a data-parallel run optimize the same objective as one process.

Batch-level losses (NT-Xent's negatives, Barlow Twins' cross-correlation, VICReg's variance and covariance)
and MoCo's queue need the *global* batch: each rank gathers every rank's embeddings, in rank order (the
engine's stream gives rank r the r-th contiguous slice of the global batch, so the gathered batch is the
single-process batch), and computes the global loss. Gradients flow back to each rank's own slice summed
over ranks; DDP then averages over ranks, which gives exactly the single-process gradient. Outside a process
group (one process) every function is the identity.

BatchNorm: on CPU processes `GlobalBatchNorm` normalizes with the global batch's statistics (what torch's
SyncBatchNorm does on GPUs, where the engine uses it); without it, MoCo's key encoder shuffles its batch
across ranks (`shuffle_across_ranks` / `unshuffle_across_ranks`).
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


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its backward sums the gradients over ranks (every rank's output depends on every input)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of every rank's `x`, differentiable; `x` itself in one process."""
    return _AllReduceSum.apply(x) if world_size() > 1 else x


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch on CPU processes (gloo), where torch's SyncBatchNorm refuses to run
    (hand-written for that reason): the statistics are summed across ranks, differentiably, so W processes
    normalize, update running statistics and back-propagate as one process on the global batch. Outside
    training in a process group it is plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        count = float(all_reduce_sum(torch.tensor(float(x.numel() // x.shape[1]), device=x.device)))
        mean = all_reduce_sum(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce_sum(centred.square().sum(dims)) / count
        if self.track_running_stats and self.num_batches_tracked is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * count / max(count - 1.0, 1.0)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


LOCAL_BATCHNORM = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def convert_global_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with every BatchNorm layer turned into a `GlobalBatchNorm` in place (same parameters, buffers
    and names; `revert_global_batchnorm` undoes it)."""
    for layer in module.modules():
        if type(layer) in LOCAL_BATCHNORM:
            layer.local_class = type(layer)
            layer.__class__ = GlobalBatchNorm  # no state of its own: the layer keeps its tensors
    return module


def revert_global_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    for layer in module.modules():
        if isinstance(layer, GlobalBatchNorm):
            layer.__class__ = layer.local_class
    return module


def has_local_batchnorm(module: torch.nn.Module) -> bool:
    """Whether `module` has BatchNorm layers whose statistics are rank-local (not synchronized)."""
    return any(isinstance(m, LOCAL_BATCHNORM) for m in module.modules())


@torch.no_grad()
def shuffle_across_ranks(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of the global batch in a random order that every rank draws alike from `generator`,
    and that order (MoCo's shuffling BN, as the official `_batch_shuffle_ddp`; seeded rather than broadcast)."""
    full = gather_detached(x)
    order = torch.randperm(full.shape[0], generator=generator).to(x.device)
    b = x.shape[0]
    return full[order[rank() * b:(rank() + 1) * b]], order


@torch.no_grad()
def unshuffle_across_ranks(y: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The inverse of `shuffle_across_ranks`: the rows of this rank's original slice, in their original order
    (the official `_batch_unshuffle_ddp`)."""
    full = gather_detached(y)
    b = y.shape[0]
    return full[torch.argsort(order)[rank() * b:(rank() + 1) * b]]
