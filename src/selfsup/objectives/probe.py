"""An online linear probe and collapse diagnostics during pretraining (any image method gets them).

The objective's `forward` leaves `probe_batch = (features.detach(), labels)` behind (backbone features of
its first view, labels -1 where unknown). After each training micro-step this callback fits a linear
classifier on those detached features with its own Adam optimizer (no gradient reaches the backbone) and
logs `probe_accuracy`, plus `feature_std` and `effective_rank` (selfsup.diagnostics); on held-out
batches it logs `heldout_probe_accuracy` and the held-out diagnostics. Its weights live in the checkpoint.
The training-side numbers (the diagnostics' SVD included) are computed only on the steps whose logs are kept
(`train.log_every`): Lightning drops on-step values logged between them, so computing them there is waste.
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from selfsup.diagnostics import effective_rank, feature_std


class OnlineLinearProbe(L.Callback):
    def __init__(self, feature_dim: int, num_classes: int, lr: float = 1e-3):
        super().__init__()
        self.num_classes = num_classes
        self.head = torch.nn.Linear(feature_dim, max(1, num_classes))
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=lr)
        self.lr = lr

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.head.to(pl_module.device)

    @staticmethod
    def _take(pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor] | None:
        objective = pl_module.objective
        got = getattr(objective, "probe_batch", None)
        objective.probe_batch = None
        return got

    def _log_diagnostics(self, pl_module, feats: torch.Tensor, prefix: str, on_step: bool) -> None:
        if feats.shape[0] < 2:
            return
        pl_module.log_dict({f"{prefix}feature_std": feature_std(feats),
                            f"{prefix}effective_rank": effective_rank(feats)},
                           on_step=on_step, on_epoch=not on_step, batch_size=feats.shape[0])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        got = self._take(pl_module)
        if got is None:
            return
        feats, labels = got
        logged = trainer.global_step % max(1, trainer.log_every_n_steps) == 0  # the step Lightning keeps logs of
        if logged:
            self._log_diagnostics(pl_module, feats, "", True)
        known = labels >= 0
        if self.num_classes < 2 or not bool(known.any()):
            return
        x, y = feats[known].detach().float(), labels[known]
        self.head.to(x.device)
        with torch.enable_grad():
            logits = self.head(x)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        if logged:
            acc = (logits.argmax(-1) == y).float().mean()
            pl_module.log_dict({"probe_accuracy": acc, "probe_loss": loss.detach()}, on_step=True, on_epoch=False,
                               batch_size=int(known.sum()))

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        got = self._take(pl_module)
        if got is None:
            return
        feats, labels = got
        self._log_diagnostics(pl_module, feats, "heldout_", False)
        known = labels >= 0
        if self.num_classes < 2 or not bool(known.any()):
            return
        self.head.to(feats.device)
        with torch.no_grad():
            acc = (self.head(feats[known].float()).argmax(-1) == labels[known]).float().mean()
        pl_module.log("heldout_probe_accuracy", acc, on_step=False, on_epoch=True, sync_dist=True,
                      batch_size=int(known.sum()))

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.head.load_state_dict(state_dict["head"])
        self.optimizer.load_state_dict(state_dict["optimizer"])
