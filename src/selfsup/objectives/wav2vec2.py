"""wav2vec 2.0 (Baevski, Zhou, Mohamed & Auli 2020, "wav2vec 2.0: A Framework for Self-Supervised Learning of
Speech Representations").

Predicts: for each masked frame — spans of the CNN feature encoder's output replaced by a learned mask vector
before the transformer — which of its own quantized CNN feature and K distractors (the quantized features of
other masked frames of the same utterance) belongs there: cross-entropy over cosine similarities / kappa
(eq. 3), plus alpha times the diversity loss (G*V - perplexity) / (G*V) (eq. 4), perplexity = sum over the
G groups of exp(entropy of the batch-averaged softmax over the V codes), which spreads the use of the Gumbel
product quantizer. Its temperature anneals from `gumbel_max` by `gumbel_decay` per step down to `gumbel_min`.
transformers' `Wav2Vec2ForPreTraining` holds the quantizer, `project_q`, `project_hid` and the logits (built
around the backbone's own `Wav2Vec2Model`, so the export is the trained encoder); masks come from `span_mask`
per example and distractors from torch, not from transformers' numpy-global samplers. The quantizer and the
projections are dropped after pretraining.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import bounded
from selfsup.diagnostics import codebook_health
from selfsup.errors import SelfsupError
from selfsup.objectives.speech_base import SpeechObjective
from selfsup.objectives.speech_quantizers import (add_mask_embedding, annealed_temperature, export_encoder,
                                                  frame_span_mask, sample_negatives)
from selfsup.registry import register_objective


def diversity_loss(perplexity: torch.Tensor, num_codevectors: int) -> torch.Tensor:
    """(G*V - perplexity) / (G*V): 0 when every code of every group is used equally often, near 1 when each
    group uses one code."""
    return (num_codevectors - perplexity) / num_codevectors


def contrastive_logits(projected: torch.Tensor, quantized: torch.Tensor, negatives: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """(B, T, K + 1) cosine(c_t, candidate) / kappa, the true quantized frame first, then the K distractors
    (flat (B*T) indices, (B, T, K)); a distractor equal to the true one scores -inf (transformers' rule)."""
    from transformers import Wav2Vec2ForPreTraining

    b, t, d = quantized.shape
    distractors = quantized.reshape(-1, d)[negatives.reshape(-1)].view(b, t, -1, d).permute(2, 0, 1, 3)
    logits = Wav2Vec2ForPreTraining.compute_contrastive_logits(quantized[None], distractors, projected, temperature)
    same = (quantized[None] == distractors).all(-1)
    logits = torch.cat([logits[:1], logits[1:].masked_fill(same, float("-inf"))])
    return logits.permute(1, 2, 0)


@register_objective("wav2vec2")
class Wav2Vec2(SpeechObjective):
    inputs = ("waveform",)
    default_backbone = "wav2vec2"

    @dataclasses.dataclass
    class Options:
        mask_prob: float = bounded(0.65, gt=0, lt=1, doc="span_mask's mask_prob (fairseq's: ~50% of frames masked)")
        mask_span: int = bounded(5, gt=0, doc="frames per masked span (20 ms each; the paper's 10 on long clips)")
        num_negatives: int = bounded(20, gt=0, doc="distractors per masked frame (the paper's 100)")
        codevector_groups: int = bounded(2, gt=0, doc="G codebooks")
        codevectors_per_group: int = bounded(64, gt=1, doc="V codes per codebook (the paper's 320)")
        codevector_dim: int = bounded(64, gt=0, doc="size of a quantized vector (G parts concatenated)")
        proj_dim: int = bounded(64, gt=0, doc="space of the cosine similarity (project_q, project_hid)")
        logit_temperature: float = bounded(0.1, gt=0, doc="kappa")
        diversity_weight: float = bounded(0.1, ge=0, doc="alpha")
        gumbel_max: float = bounded(2.0, gt=0)
        gumbel_min: float = bounded(0.5, gt=0)
        gumbel_decay: float = bounded(0.995, gt=0, le=1, doc="per step (the paper's 0.999995 over 400k steps)")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        o = recipe.objective
        if recipe.model.type != "wav2vec2":
            raise SelfsupError(f"model.type: wav2vec2 pretraining needs a wav2vec2 backbone, got {recipe.model.type!r}")
        if o.codevector_dim % o.codevector_groups:
            raise SelfsupError(f"objective.codevector_dim: {o.codevector_dim} is not divisible by "
                               f"codevector_groups={o.codevector_groups}")

    def __init__(self, recipe, prepared):
        from transformers import Wav2Vec2ForPreTraining

        super().__init__(recipe, prepared)
        if self.encoder.type != "wav2vec2":
            raise SelfsupError(f"model.from_pretrained: wav2vec2 pretraining needs a wav2vec2 model, got "
                               f"{self.encoder.type!r}")
        o = self.options
        config = copy.deepcopy(self.encoder.model.config)
        config.update(dict(num_codevector_groups=o.codevector_groups, num_codevectors_per_group=o.codevectors_per_group,
                           codevector_dim=o.codevector_dim, proj_codevector_dim=o.proj_dim,
                           contrastive_logits_temperature=o.logit_temperature, num_negatives=o.num_negatives,
                           diversity_loss_weight=o.diversity_weight, feat_quantizer_dropout=0.0))
        self.pretraining = Wav2Vec2ForPreTraining(config)
        self.pretraining.wav2vec2 = self.encoder.model  # the exported encoder is the one trained here
        add_mask_embedding(self.encoder.model)
        self.register_buffer("gumbel_temperature", torch.tensor(float(o.gumbel_max)))
        self.code_logits: torch.Tensor | None = None
        self.pretraining.quantizer.weight_proj.register_forward_hook(self.keep_code_logits)

    def keep_code_logits(self, module, inputs, output) -> None:
        self.code_logits = output.detach()

    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        o = self.options
        return {"mask": frame_span_mask(self.output_frames(len(clip)), self.output_frames(valid), o.mask_prob,
                                        o.mask_span, rng)}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        o = self.options
        frames = self.encoder.frame_mask(batch["lengths"], batch["mask"].shape[1])
        mask = batch["mask"] & frames
        self.pretraining.set_gumbel_temperature(float(self.gumbel_temperature))
        out = self.pretraining(batch["inputs"], attention_mask=self.input_mask(batch).long(), mask_time_indices=mask,
                               output_hidden_states=True)
        self.remember(out.hidden_states[-1], frames, batch["labels"])
        logits = contrastive_logits(out.projected_states, out.projected_quantized_states,
                                    sample_negatives(mask, o.num_negatives), o.logit_temperature)[mask]
        target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        contrastive = F.cross_entropy(logits.float(), target) if len(logits) else logits.sum() * 0.0
        diversity = diversity_loss(out.codevector_perplexity, o.codevector_groups * o.codevectors_per_group)
        groups, codes = o.codevector_groups, o.codevectors_per_group
        chosen = self.code_logits.view(*frames.shape, groups, codes).argmax(-1)[frames]
        return {"loss": contrastive + o.diversity_weight * diversity, "contrastive_loss": contrastive.detach(),
                "contrastive_accuracy": (logits.argmax(-1) == 0).float().mean() if len(logits) else torch.zeros(()),
                "diversity_loss": diversity.detach(), "gumbel_temperature": self.gumbel_temperature.clone(),
                "masked_fraction": mask.sum() / frames.sum().clamp_min(1),
                **codebook_health(chosen, codes), "n_seconds": batch["n_seconds"]}

    def on_step_end(self, step: int, max_steps: int) -> None:
        o = self.options
        self.gumbel_temperature.fill_(annealed_temperature(step, o.gumbel_max, o.gumbel_min, o.gumbel_decay))

    def export(self, folder) -> None:
        export_encoder(self.encoder, folder, self.front.to_dict())
