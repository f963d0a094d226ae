"""`train.export_every=N`: a Hugging Face export of the model every N optimizer steps, kept as
RUN/exports/step-NNNNNNN (and the last step), so abilities can be probed along pretraining — BERT embryology,
Chiang, Huang & Lee 2020, "Pretrained Language Model Embryology: The Birth of ALBERT". A suite lists them
with `model: RUN/exports/*`."""
from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from selfsup.fileio import atomic_dir


def export_name(step: int) -> str:
    return f"step-{step:07d}"


class ExportEvery(Callback):
    """Export through the objective's own `export` on global rank 0 after every N-th optimizer step; an export
    that already exists (written before a kill) is kept, and a half-written one is removed on the next start."""

    def __init__(self, objective, folder: Path, every: int, card=None) -> None:
        self.objective, self.folder, self.every = objective, Path(folder), every
        self.card = card  # card(tmp_folder, final_folder, step): writes the export's model card
        self.last = -1
        for stale in self.folder.glob(".step-*.tmp.*") if self.folder.is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step and step % self.every == 0 and step != self.last and trainer.is_global_zero:
            self.export(step)

    def export(self, step: int) -> Path:
        self.last = step
        target = self.folder / export_name(step)
        if not target.is_dir():
            with atomic_dir(target) as tmp:
                self.objective.export(tmp)
                if self.card is not None:
                    self.card(tmp, target, step)
        return target
