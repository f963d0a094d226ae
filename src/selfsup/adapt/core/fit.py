"""The one fine-tuning loop, for every adaptation method and modality, on the Lightning engine that pretraining
uses: AdamW on the trainable parameters (no decay on biases and norms), warm-up + decay per optimizer step,
gradient clipping and accumulation, precision, the NaN guard, devices / num_nodes / strategy (DDP, FSDP), an
evaluation every `eval_every` epochs, and the weights of the best epoch by the task's main metric kept.

Data parallelism computes what one process computes: `EpochBatches` cuts each epoch's seeded permutation into
global batches of `batch_size` and gives rank r of W (with accumulation A) the slices r, W + r, ... of each
global batch, so a 2-process run sees exactly the examples of a 1-process run with the same global batch.
With `group_by_length` (the default) the permutation groups token sequences of similar length into the same
global batch (`length_groups`), so right padding to the batch's longest wastes few positions.
Several devices without an outside launcher use Lightning's `ddp_fork` (the method's closures need no pickling
and the trained weights return to this process); under torchrun / SLURM every rank runs the verb and only
global rank 0 writes (`runs.over_seeds`).

Resumable: when `runs.over_seeds` sets `CHECKPOINTS`, every fit of a seed saves its whole state (weights,
optimizer, schedule, history, the best epoch so far) atomically after each epoch to `checkpoints/fit-<k>.ckpt`
of the seed's folder, and with `resume` a fit starts from its checkpoint. The data order and dropout depend on
(seed, epoch) only, so a resumed run ends where an uninterrupted one does.
"""
from __future__ import annotations

import contextvars
import dataclasses
import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import numpy as np
import torch

from selfsup.adapt.core.options import total_steps as fit_steps
from selfsup.console import show_progress
from selfsup.engine.module import lr_lambda, param_groups, quiet_lightning, resolve_precision
from selfsup.errors import TrainingDiverged


@dataclasses.dataclass
class Checkpoints:
    """Where the fits of one seed keep their resumable state: the k-th fit of the seed in `fit-<k>.ckpt`."""
    folder: Path
    resume: bool = False
    count: int = 0

    def next_path(self) -> Path:
        self.count += 1
        return Path(self.folder) / "checkpoints" / f"fit-{self.count}.ckpt"


CHECKPOINTS: contextvars.ContextVar[Checkpoints | None] = contextvars.ContextVar("selfsup_checkpoints",
                                                                               default=None)


@dataclasses.dataclass
class FitResult:
    history: list[dict[str, Any]]  # one row per epoch: train loss (+ train_<stat>), eval loss and metrics
    eval: dict[str, float]  # the kept epoch's evaluation (best by the main metric, or the last)
    steps: int
    epochs: int
    best_epoch: int | None


class EpochBatches(torch.utils.data.Sampler):
    """Per-rank micro-batches of one epoch (hand-written: Lightning's distributed sampler pads and reshuffles
    per rank, so a W-process run would not see a 1-process run's batches)."""

    def __init__(self, n: int, batch_size: int, accumulate: int, seed: int,
                 lengths: Sequence[int] | None = None):
        self.n, self.batch, self.acc, self.seed = n, batch_size, accumulate, seed
        self.lengths = lengths  # given: length-grouped global batches (`length_groups.length_grouped_order`)
        self.epoch = 0
        self.offset = 0  # epochs a resumed fit already ran
        self.sampler = _EpochSetter(self)  # Lightning sets the epoch of `batch_sampler.sampler` before each epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch) * self.acc

    def order(self) -> np.ndarray:
        """This epoch's permutation: the (epoch + 1)-th draw (a `torch.randperm`, or a length-grouped order) of a
        generator seeded with the seed, recomputed from the seed alone (so any rank, and a resumed run, gets it
        without carried state)."""
        from selfsup.adapt.core.length_groups import length_grouped_order

        gen = torch.Generator().manual_seed(self.seed)

        def draw() -> np.ndarray:
            if self.lengths is None:
                return torch.randperm(self.n, generator=gen).numpy()
            return length_grouped_order(self.lengths, self.batch, gen)

        for _ in range(self.epoch):
            draw()
        return draw()

    def __iter__(self):
        order = self.order()
        self.epoch += 1  # outside Lightning, each pass is the next epoch
        dist = torch.distributed
        # read in the worker process (a forked rank gets the sampler its parent built)
        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized() \
            else (1, 0)
        parts = world * self.acc
        for start in range(0, self.n, self.batch):
            chunk = order[start:start + self.batch]
            if len(chunk) < parts:  # a last global batch too small to give every micro-batch an example
                chunk = np.concatenate([chunk, order[:parts - len(chunk)]])
            pieces = np.array_split(chunk, parts)
            for j in range(self.acc):
                yield pieces[j * world + rank].tolist()


class _EpochSetter:
    """What Lightning's `_set_sampler_epoch` finds at `batch_sampler.sampler`: it passes the epoch about to run
    (also after a resume, when `on_train_epoch_start` is skipped) on to the batch sampler."""

    def __init__(self, batches: EpochBatches):
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        self.batches.epoch = epoch + self.batches.offset


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, feats: Sequence):
        self.feats = feats

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int):
        return self.feats[i]


def _as_list(items: list) -> list:
    return items


class FitModule(L.LightningModule):
    """Wraps the model being adapted; the method supplies its loss, collation and evaluation."""

    def __init__(self, model: torch.nn.Module, cfg, *, lr: float, total_steps: int, epochs: int,
                 loss_fn: Callable, collate_fn: Callable, eval_fn: Callable, main_metric: str | None,
                 params: Sequence | None, train_mode: Callable | None, progress: bool, result_path: Path,
                 seed: int = 0, sampler: EpochBatches | None = None, checkpoint_path: Path | None = None,
                 restored: dict | None = None):
        super().__init__()
        self.model = model
        self.cfg, self.lr, self.total_steps, self.epochs = cfg, lr, total_steps, epochs
        self.loss_fn, self.collate_fn, self.eval_fn = loss_fn, collate_fn, eval_fn
        self.main_metric, self.params, self.train_mode = main_metric, params, train_mode
        self.progress, self.result_path = show_progress(progress), result_path
        self.seed, self.sampler, self.checkpoint_path = seed, sampler, checkpoint_path
        self.history: list[dict[str, Any]] = []
        self.best: tuple[tuple[float, float], int, dict] | None = None
        self.last_eval: dict[str, float] = {}
        self._sums: dict[str, float] = {}
        # a resumed fit: the epochs and steps a killed run finished (this Trainer runs the rest)
        self.restored = restored
        self.epochs_done = self.steps_done = 0
        if restored is not None:
            self.epochs_done, self.steps_done = int(restored["epochs_done"]), int(restored["steps_done"])
            self.history = list(restored["history"])
            self.last_eval = dict(restored["last_eval"])
            best = restored.get("best")
            self.best = None if best is None else (tuple(best[0]), int(best[1]), best[2])
            if sampler is not None:
                sampler.offset = self.epochs_done

    @property
    def epoch_index(self) -> int:
        """0-based epoch of the whole fit (a resumed Trainer counts from 0 again)."""
        return self.current_epoch + self.epochs_done

    @property
    def step_index(self) -> int:
        return int(self.global_step) + self.steps_done

    def setup(self, stage: str) -> None:
        world = self.trainer.world_size
        if world > 1 and self.device.type == "cpu" and not self.cfg.threads:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, self.cfg.devices)))

    def start_epoch(self) -> None:
        """At an epoch's first batch (Lightning skips `on_train_epoch_start` for the epoch after a resume)."""
        torch.manual_seed(self.seed * 1_000_003 + self.epoch_index)  # dropout: a function of (seed, epoch)
        self.model.train()
        if self.train_mode is not None:
            self.train_mode(self.model)
        self._sums = {}

    def training_step(self, chunk: list, batch_idx: int) -> torch.Tensor:
        if batch_idx == 0:
            self.start_epoch()
        batch = self.collate_fn(chunk, self.device)
        out = self.loss_fn(self.model, batch)
        loss, stats = (out["loss"], {k: v for k, v in out.items() if k != "loss"}) if isinstance(out, dict) \
            else (out, {})
        if not torch.isfinite(loss.detach()):
            raise TrainingDiverged(f"loss is {loss.item()} at step {self.step_index + 1}; stopped "
                                   "(lower lr with --set lr=...)")
        n = float(len(chunk))
        for key, value in (("loss", loss), *stats.items()):
            value = value.detach() if torch.is_tensor(value) else value
            self._sums[key] = self._sums.get(key, 0.0) + float(value) * n
        self._sums["_n"] = self._sums.get("_n", 0.0) + n
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=False, batch_size=len(chunk))
        return loss

    def on_train_epoch_end(self) -> None:
        keys = sorted(self._sums)
        totals = torch.tensor([self._sums[k] for k in keys], dtype=torch.float64)
        if self.trainer.world_size > 1:  # the epoch's train loss over every rank's examples
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        sums = dict(zip(keys, totals.tolist()))
        n = max(1.0, sums.pop("_n", 0.0))
        epoch = self.epoch_index + 1
        row: dict[str, Any] = {"epoch": epoch, "step": self.step_index, "train_loss": sums.pop("loss", 0.0) / n,
                               **{f"train_{k}": v / n for k, v in sums.items()}}
        last = epoch >= self.epochs or self.step_index >= self.total_steps
        if self.trainer.is_global_zero and (epoch % self.cfg.eval_every == 0 or last):
            ev = self.eval_fn(self.model)
            self.model.train()
            if self.train_mode is not None:
                self.train_mode(self.model)
            self.last_eval = ev
            row.update({"eval_loss": ev.get("loss"), **{k: v for k, v in ev.items() if k not in ("loss", "examples")}})
            score, loss = ev.get(self.main_metric) if self.main_metric else None, ev.get("loss")
            finite = isinstance(score, (int, float)) and math.isfinite(score)
            # the best main metric; a tie goes to the lower eval loss, then to the later epoch
            key = (float(score) if finite else 0.0,
                   -float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else 0.0)
            if self.cfg.keep_best and finite and (self.best is None or key >= self.best[0]):
                state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                self.best = (key, epoch, {"eval": ev, "state": state})
            if self.progress:
                print(f"epoch {epoch}/{self.epochs} step {self.step_index}: train_loss={row['train_loss']:.4f} "
                      f"eval_loss={(row['eval_loss'] if row['eval_loss'] is not None else float('nan')):.4f}"
                      + (f" {self.main_metric}={row.get(self.main_metric, float('nan')):.4f}"
                         if self.main_metric else ""), file=sys.stderr)
        if self.trainer.is_global_zero:
            self.history.append(row)
        if self.checkpoint_path is not None and self.trainer.is_global_zero:
            self.save_state(epoch)

    def save_state(self, epochs_done: int) -> None:
        """Everything a resumed fit needs, atomically (hand-written rather than Lightning's checkpoint: its
        loop state saved at an epoch's end resumes mid-epoch in Lightning 2.6)."""
        import io

        from selfsup.fileio import atomic_write_bytes

        opt = self.trainer.optimizers[0]
        sched = self.trainer.lr_scheduler_configs[0].scheduler
        best = None if self.best is None else [list(self.best[0]), self.best[1], self.best[2]]
        state = {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epochs_done": epochs_done,
                 "steps_done": self.step_index, "history": self.history, "last_eval": self.last_eval, "best": best}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint_path, buffer.getvalue())

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            self.write_result()

    def write_result(self) -> None:
        """The kept epoch's weights into the model, and the result for `fit` (also across a fork)."""
        best_epoch = None
        ev = self.last_eval
        if self.best is not None:
            _, best_epoch, kept = self.best
            self.model.load_state_dict(kept["state"])
            ev = kept["eval"]
        self.result_path.write_text(json.dumps({"history": self.history, "eval": ev, "steps": self.step_index,
                                                "best_epoch": best_epoch}, default=float))

    def configure_optimizers(self):
        c = self.cfg
        groups = param_groups(self.model, c.weight_decay) if self.params is None else \
            [{"params": list(self.params), "weight_decay": c.weight_decay}]
        opt = torch.optim.AdamW(groups, lr=self.lr, betas=tuple(c.betas))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(c.schedule, int(c.warmup_ratio * self.total_steps), self.total_steps))
        if self.restored is not None:
            opt.load_state_dict(self.restored["optimizer"])
            sched.load_state_dict(self.restored["scheduler"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}


def _accelerator(cfg) -> tuple[str, Any]:
    if cfg.device == "auto":
        return "auto", cfg.devices
    if cfg.device.startswith("cuda"):
        _, _, index = cfg.device.partition(":")
        return "gpu", [int(index)] if index and cfg.devices == 1 else cfg.devices
    return cfg.device, cfg.devices


def _launched_outside() -> bool:
    """torchrun / SLURM started this process as one of several (Lightning then launches nothing)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def fit(model: torch.nn.Module, train_feats: Sequence, cfg, *, lr: float, seed: int,
        loss_fn: Callable[[Any, dict], Any], collate_fn: Callable[[Sequence, Any], dict],
        eval_fn: Callable[[Any], dict[str, float]], main_metric: str | None = None, progress: bool = False,
        params: Sequence | None = None, train_mode: Callable[[Any], None] | None = None,
        log_dir: Path | None = None) -> FitResult:
    """Train `model` on `train_feats` for `options.total_steps(cfg, ...)` optimizer steps (max_steps, else epochs,
    else the default epochs raised to min_steps) and return its history and kept
    evaluation; the model ends with the kept epoch's weights, on the CPU.

    `collate_fn(chunk, device)` makes a batch; `loss_fn(model, batch)` returns the loss, or a dict with "loss"
    and per-batch statistics logged per epoch as `train_<name>`; `eval_fn(model)` returns the evaluation
    (global rank 0 only); `main_metric` selects the best epoch (`cfg.keep_best`); `train_mode(model)` runs after
    `model.train()` each epoch (e.g. a frozen encoder back to eval mode); `params` restricts the optimizer."""
    from selfsup.adapt.core.length_groups import feature_lengths
    from selfsup.engine.checkpoint import AtomicCheckpointIO
    from selfsup.loggers import make_loggers

    quiet_lightning()
    warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
    world = cfg.devices * cfg.num_nodes
    per_epoch = math.ceil(len(train_feats) / cfg.batch_size)
    total_steps = fit_steps(cfg, per_epoch)
    epochs = math.ceil(total_steps / per_epoch)
    strategy = cfg.strategy
    if strategy == "auto" and world > 1:
        strategy = "ddp" if _launched_outside() else "ddp_fork"
    accelerator, devices = _accelerator(cfg)
    torch.manual_seed(seed)  # dropout and augmentation: reproducible for a given --seed
    checkpoints = CHECKPOINTS.get()
    path = checkpoints.next_path() if checkpoints is not None else None
    restored = None
    if checkpoints is not None and checkpoints.resume and path.is_file():
        restored = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(restored["model"])
    lengths = feature_lengths(train_feats) if getattr(cfg, "group_by_length", False) else None
    sampler = EpochBatches(len(train_feats), cfg.batch_size, cfg.accumulate, seed, lengths)
    version = f"fit-{checkpoints.count}" if checkpoints is not None else ""
    if log_dir is None and checkpoints is not None:  # a run's fits log per step to logs/fit-<k>/metrics.csv
        log_dir = checkpoints.folder
    with tempfile.TemporaryDirectory(prefix="selfsup-fit-") as tmp:
        result_path = Path(tmp) / "result.json"
        module = FitModule(model, cfg, lr=lr, total_steps=total_steps, epochs=epochs,
                           loss_fn=loss_fn, collate_fn=collate_fn, eval_fn=eval_fn, main_metric=main_metric,
                           params=params, train_mode=train_mode, progress=progress, result_path=result_path,
                           seed=seed, sampler=sampler, checkpoint_path=path, restored=restored)
        if restored is not None and (restored["epochs_done"] >= epochs or restored["steps_done"] >= total_steps):
            module.write_result()  # the killed run had finished this fit: its result, no training
            res = json.loads(result_path.read_text())
            model.cpu()
            return FitResult(res["history"], res["eval"], res["steps"], epochs, res["best_epoch"])
        trainer = L.Trainer(
            max_steps=total_steps - module.steps_done, max_epochs=epochs - module.epochs_done, accelerator=accelerator, devices=devices,
            num_nodes=cfg.num_nodes, strategy=strategy, precision=resolve_precision(cfg.precision, accelerator),
            gradient_clip_val=cfg.grad_clip or None, accumulate_grad_batches=cfg.accumulate,
            logger=make_loggers(cfg.logger, Path(log_dir), version) if log_dir is not None else False,
            log_every_n_steps=max(1, min(50, per_epoch)), enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
            use_distributed_sampler=False, default_root_dir=tmp, plugins=[AtomicCheckpointIO()])
        loader = torch.utils.data.DataLoader(_Indexed(train_feats), collate_fn=_as_list, batch_sampler=sampler)
        with warnings.catch_warnings():  # the module sets each epoch's train / eval modes at its first batch
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
            trainer.fit(module, train_dataloaders=loader)
        if not result_path.is_file():  # a rank other than 0 of an outside launch: it keeps no result
            return FitResult([], {}, total_steps, epochs, None)
        res = json.loads(result_path.read_text())
    model.cpu()
    return FitResult(res["history"], res["eval"], res["steps"], epochs, res["best_epoch"])


def classification_loss(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy and batch accuracy of a classifier's logits: the `loss_fn` body of the image and table tasks."""
    logits = logits.float()
    return {"loss": torch.nn.functional.cross_entropy(logits, target),
            "accuracy": (logits.argmax(-1) == target).float().mean().detach()}


def frozen_norms_eval(model) -> None:
    """BatchNorm layers whose parameters are all frozen keep (and use) their pretrained statistics."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and \
                not any(p.requires_grad for p in module.parameters()):
            module.eval()
