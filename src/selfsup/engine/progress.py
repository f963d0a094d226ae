"""Pretraining progress on stderr, counted in optimizer steps (a run is step-based; its epochs mean little).

On a terminal: one rich bar (step / max_steps, loss, throughput, held-out loss, elapsed, ETA) redrawn in place.
Anywhere else (a log file, a pipe, CI): one plain line every `every` steps and at the last, never `\\r` frames.
Only global rank 0 shows anything.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def format_stats(metrics: dict[str, Any]) -> str:
    """`loss 5.123  tokens/s 1,234  heldout 5.01` from the trainer's progress-bar metrics."""
    parts = []
    for key, value in sorted(metrics.items(), key=lambda kv: (kv[0] != "loss", kv[0])):
        x = _number(value)
        if x is None:
            continue
        if key == "loss":
            parts.append(f"loss {x:.4f}")
        elif key.endswith("_per_s"):
            parts.append(f"{key.removesuffix('_per_s')}/s {x:,.0f}")
        elif key == "heldout_loss":
            parts.append(f"heldout_loss {x:.4f}")
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StepProgress(L.Callback):
    """A Lightning callback: the run's progress by optimizer step (rich on a TTY, plain lines otherwise)."""

    def __init__(self, every: int, stream: Any = None):
        self.every = max(1, int(every))
        self.stream = stream
        self.bar: Any = None
        self.task: Any = None
        self.started = 0.0
        self.first_step = 0
        self.last_step = -1

    def _out(self) -> Any:
        return self.stream if self.stream is not None else sys.stderr

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.started, self.first_step = time.perf_counter(), int(trainer.global_step)
        self.last_step = self.first_step
        out = self._out()
        if getattr(out, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(),
                                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
                                TimeRemainingColumn(),
                                console=Console(file=out), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=trainer.max_steps, completed=self.first_step, stats="")

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = int(trainer.global_step)
        if not trainer.is_global_zero or step == self.last_step:  # accumulation: no optimizer step yet
            return
        self.last_step = step
        self.show(step, trainer.max_steps, format_stats(trainer.progress_bar_metrics))

    def show(self, step: int, total: int, stats: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=stats)
            return
        if step % self.every and step < total:
            return
        done = step - self.first_step
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (total - step) if done else 0.0
        line = f"step {step}/{total}  {stats}  elapsed {_duration(elapsed)}  eta {_duration(eta)}"
        print(line.replace("    ", "  "), file=self._out(), flush=True)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        loss = _number(trainer.callback_metrics.get("heldout_loss"))
        if loss is None:
            return
        if self.bar is not None:
            self.bar.console.print(f"step {trainer.global_step}: heldout_loss {loss:.4f}")
        else:
            print(f"step {trainer.global_step}: heldout_loss {loss:.4f}", file=self._out(), flush=True)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.close()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
