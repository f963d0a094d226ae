"""The LightningModule that trains any objective: AdamW with warm-up and decay, a NaN/inf guard, per-step
seeding (so dropout is the same after a resume), throughput and held-out loss logging."""
from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins import LayerSync

from selfsup.distributed import convert_global_batchnorm, revert_global_batchnorm
from selfsup.errors import TrainingDiverged
from selfsup.seeding import seed_torch


def lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and embeddings' LayerNorm (BERT's recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision for a recipe's `precision` key: `auto` is bf16-mixed on CUDA devices with bf16,
    else fp32 (CPUs without native bf16 matmul emulate it, slower than fp32; opt in explicitly)."""
    if precision != "auto":
        return "32-true" if precision == "32" else precision
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter (accelerator lines, tips) and known deprecation noise off the screen."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*val_dataloader.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")  # a resume


class GlobalBatchNormSync(LayerSync):
    """`train.sync_batchnorm` on CPU processes (gloo), where Lightning's (torch's SyncBatchNorm) cannot run:
    every BatchNorm layer becomes a `selfsup.distributed.GlobalBatchNorm` while fitting."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return convert_global_batchnorm(model)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        return revert_global_batchnorm(model)


def _batch_size(batch: dict) -> int:
    return next((int(v.shape[0]) for v in batch.values() if torch.is_tensor(v) and v.ndim), 1)


class PretrainModule(L.LightningModule):
    def __init__(self, objective, train_cfg, checkpoint_path=None):
        super().__init__()
        self.checkpoint_path = checkpoint_path
        self.objective = objective
        self.cfg = train_cfg
        self._last_time: float | None = None
        self._work = 0.0
        self.heldout_losses: list[float] = []
        self._log_now = True

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # dropout and other torch randomness depend on (seed, micro step, rank) only: resume-exact
        seed_torch(self.cfg.seed * 1_000_003 + int(batch["micro_step"]) * 131 + self.global_rank)
        self.objective.on_micro_step(int(batch["micro_step"]))
        # Lightning writes on-step values only every log_every_n_steps optimizer steps and drops the others, and each
        # self.log call costs ~1 ms of bookkeeping: log only on the steps that are written (the same rows result)
        self._log_now = (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        batch = {k: v for k, v in batch.items() if k != "micro_step"}
        out = self.objective(batch)
        loss = out["loss"]
        if not torch.isfinite(loss.detach()):
            path = self.checkpoint_path
            ckpt = str(path) if path is not None and path.is_file() else "none yet"
            raise TrainingDiverged(f"loss is {loss.item()} at step {self.global_step + 1}; stopped. Last good "
                                   f"checkpoint: {ckpt} (lower train.lr or raise train.warmup_steps, then --resume)")
        count = out.get(self.objective.count_key)
        if count is not None:
            self._work += float(count)
        log = {k: v for k, v in out.items() if k != self.objective.count_key and k != "loss"}
        if self._log_now:
            sync = self.trainer.world_size > 1  # log the global mean, comparable with a 1-process run
            n = _batch_size(batch)
            self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, sync_dist=sync,
                     batch_size=n)
            self.log_dict({k: v.float() if torch.is_tensor(v) else v for k, v in log.items()}, on_step=True,
                          on_epoch=False, sync_dist=sync, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: dict, batch_idx: int) -> None:
        # throughput: the work of all steps since the last written row over their time (the logging, probe and
        # diagnostics of the written steps included); the clock restarts after evaluation
        now = time.perf_counter()
        if self._last_time is None:
            self._last_time, self._work = now, 0.0
        elif self._log_now and self._work:
            rate = self._work * self.trainer.world_size / max(now - self._last_time, 1e-9)
            self.log(f"{self.objective.count_key.removeprefix('n_')}_per_s", rate, prog_bar=True, on_step=True,
                     on_epoch=False)
            self._last_time, self._work = now, 0.0
        if (batch_idx + 1) % self.cfg.accumulate == 0:
            self.objective.on_step_end(self.global_step, self.trainer.max_steps)
            if self._log_now:
                self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        batch = {k: v for k, v in batch.items() if k != "micro_step"}
        out = self.objective(batch)
        n = _batch_size(batch)
        self.log("heldout_loss", out["loss"], on_step=False, on_epoch=True, sync_dist=True, prog_bar=True,
                 batch_size=n)
        extra = {f"heldout_{k}": v.float() for k, v in out.items()
                 if k not in ("loss", self.objective.count_key) and torch.is_tensor(v)}
        self.log_dict(extra, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)

    def on_validation_epoch_start(self) -> None:
        self._last_time = None  # evaluation time is not training throughput

    def configure_optimizers(self):
        c = self.cfg
        kwargs: dict[str, Any] = dict(lr=c.lr, betas=tuple(c.betas), eps=c.eps)
        try:
            opt = torch.optim.AdamW(param_groups(self.objective, c.weight_decay), fused=True, **kwargs)
        except (RuntimeError, TypeError):  # a device or dtype without a fused kernel
            opt = torch.optim.AdamW(param_groups(self.objective, c.weight_decay), foreach=True, **kwargs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(c.schedule, c.warmup_steps, c.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
