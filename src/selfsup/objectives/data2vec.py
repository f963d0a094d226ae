"""data2vec for speech (Baevski, Hsu, Xu, Babu, Gu & Auli 2022, "data2vec: A General Framework for
Self-supervised Learning in Speech, Vision and Language").

Predicts: at masked output frames (spans of `mask_span` frames, `mask_prob` as in wav2vec 2.0, replaced by the
model's learned mask embedding), the average of the teacher's top-K transformer layers, each instance-
normalized over the time axis of its real frames, from the student's last layer through a linear regression
head; L2 loss (the paper's beta = 0) or smooth L1. The teacher — a copy of the encoder that gets no gradients
— sees the unmasked input and follows the student by an exponential moving average whose rate tau rises
linearly from `ema_start` to `ema_end` over `ema_anneal_steps` (default: the whole run), then stays. Targets
are the teacher's layer outputs as transformers returns them (after each block's final LayerNorm; the paper
takes the FFN output before it). The student is exported; the teacher and head are dropped.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.losses import ema_update
from selfsup.objectives.speech_base import SpeechObjective
from selfsup.objectives.speech_quantizers import add_mask_embedding, export_encoder, frame_span_mask
from selfsup.registry import register_objective


def masked_instance_norm(h: torch.Tensor, frames: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, T, D) -> each example's channels normalized over its real frames (mask (B, T)): the same numbers as
    F.instance_norm on each example's unpadded (1, D, T_i) slice (biased variance); padded frames are 0."""
    m = frames.to(h.dtype).unsqueeze(-1)
    count = m.sum(1, keepdim=True).clamp_min(1.0)
    mean = (h * m).sum(1, keepdim=True) / count
    var = ((h - mean).pow(2) * m).sum(1, keepdim=True) / count
    return (h - mean) / torch.sqrt(var + eps) * m


def data2vec_targets(layers: list[torch.Tensor], frames: torch.Tensor, top_k: int) -> torch.Tensor:
    """y_t = (1/K) sum over the top K transformer layers of instance_norm(a^l)_t (data2vec, eq. 2 + sec. 3.3)."""
    top = layers[-top_k:]
    return sum(masked_instance_norm(h.float(), frames) for h in top) / len(top)


def ema_rate(step: int, start: float, end: float, anneal_steps: int) -> float:
    """tau rises linearly from `start` to `end` over `anneal_steps` updates, then stays at `end`."""
    if step >= anneal_steps:
        return end
    return start + (end - start) * step / max(1, anneal_steps)


@register_objective("data2vec")
class Data2Vec(SpeechObjective):
    inputs = ("waveform",)

    @dataclasses.dataclass
    class Options:
        mask_prob: float = bounded(0.65, gt=0, lt=1, doc="span starts: mask_prob * frames / mask_span (fairseq)")
        mask_span: int = bounded(10, gt=0, doc="output frames per masked span")
        top_k: int = bounded(2, gt=0, doc="average this many top teacher layers (paper: 8 of 12)")
        ema_start: float = bounded(0.99, ge=0, lt=1, doc="teacher EMA rate at step 0 (paper: 0.999)")
        ema_end: float = bounded(0.999, ge=0, le=1, doc="teacher EMA rate after the anneal (paper: 0.9999)")
        ema_anneal_steps: int | None = bounded(None, gt=0, doc="steps of the linear anneal (null = the whole run)")
        loss: Literal["mse", "smooth_l1"] = "mse"
        loss_beta: float = bounded(0.25, gt=0, doc="smooth_l1: where L2 turns into L1")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        if recipe.objective.top_k > recipe.model.num_layers:
            raise SelfsupError(f"objective.top_k: {recipe.objective.top_k} exceeds model.num_layers="
                               f"{recipe.model.num_layers}")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        add_mask_embedding(self.encoder.model)  # before the copy: teacher and student parameters pair up for the EMA
        self.head = torch.nn.Linear(self.encoder.feature_dim, self.encoder.feature_dim)
        self.teacher = copy.deepcopy(self.encoder).requires_grad_(False)
        self.tau = self.options.ema_start

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # targets without dropout, as fairseq runs the EMA teacher
        return self

    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        o = self.options
        mask = frame_span_mask(self.output_frames(len(clip)), self.output_frames(valid), o.mask_prob, o.mask_span, rng)
        return {"mask_time_indices": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = batch["mask_time_indices"]
        layers, frames = self.encode(batch["inputs"], batch, mask)
        self.remember(layers[-1], frames, batch["labels"])
        with torch.no_grad():
            teacher_layers = self.teacher.layers(batch["inputs"], self.input_mask(batch))
            targets = data2vec_targets(teacher_layers[1:], frames, self.options.top_k)
        chosen = mask & frames
        prediction = self.head(layers[-1][chosen]).float()
        target = targets[chosen]
        if self.options.loss == "mse":
            loss = F.mse_loss(prediction, target)
        else:
            loss = F.smooth_l1_loss(prediction, target, beta=self.options.loss_beta)
        return {"loss": loss, "masked_fraction": chosen.sum() / frames.sum().clamp_min(1),
                "target_std": target.std(0).mean() if len(target) > 1 else torch.zeros(()),
                "prediction_std": prediction.detach().std(0).mean() if len(target) > 1 else torch.zeros(()),
                "ema_rate": torch.tensor(self.tau), "n_seconds": batch["n_seconds"]}

    def on_step_end(self, step: int, max_steps: int) -> None:
        o = self.options
        self.tau = ema_rate(step, o.ema_start, o.ema_end, o.ema_anneal_steps or max_steps)
        ema_update(self.teacher, self.encoder, self.tau)

    def export(self, folder) -> None:
        export_encoder(self.encoder, folder, self.front.to_dict())  # the student, without its mask vector
