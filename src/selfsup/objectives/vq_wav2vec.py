"""vq-wav2vec (Baevski, Schneider & Auli 2020, "vq-wav2vec: Self-Supervised Learning of Discrete Speech
Representations").

Predicts: the quantized CNN features z^_{t+k}, k = 1..K, from a causal context network over the quantized
features up to t, with one affine map h_k per step and wav2vec's binary contrastive loss
-log sigmoid(z^_{t+k} . h_k(c_t)) - sum_j log sigmoid(-z~_j . h_k(c_t)) against distractors z~ drawn from the
same utterance. The quantizer splits a frame into G groups of V codes each: a Gumbel-softmax quantizer
(transformers' `Wav2Vec2GumbelVectorQuantizer`, hard straight-through, temperature annealed, optional
wav2vec 2.0 diversity penalty) or online k-means (vector_quantize_pytorch's `VectorQuantize` per group: EMA
codebook, k-means initialization, dead-code restarts, commitment loss).

The context network is the project's causal GRU (`backbones/speech_gru.py`; the paper's is a causal CNN):
the backbone's transformer is bidirectional and would see the frames it predicts, so this method trains the
backbone's CNN feature encoder only, and its transformer is exported as built. The export adds the quantizer
(`quantizer.safetensors`, described under `quantizer` in preprocessing.json); `speech_units(model, audio)`
turns clips into space-separated unit ids (a frame's G codes combined, sum_g code_g * V^g) — text for "a BERT
over the codes" (`selfsup pretrain mlm` on those lines).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.backbones.speech import PREPROCESSING
from selfsup.backbones.speech_gru import SpeechGRUConfig, SpeechGRUModel
from selfsup.config import bounded
from selfsup.diagnostics import codebook_health
from selfsup.errors import SelfsupError
from selfsup.objectives.speech_base import SpeechObjective
from selfsup.objectives.speech_quantizers import (annealed_temperature, combine_groups, export_encoder,
                                                  gumbel_code_ids, gumbel_quantizer, sample_negatives)
from selfsup.registry import register_objective

QUANTIZER_FILE = "quantizer.safetensors"


def binary_contrastive_loss(prediction: torch.Tensor, positive: torch.Tensor, distractors: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """wav2vec's loss for N predictions (N, D) of positives (N, D) among distractors (N, K, D):
    mean over n of -log sigmoid(p.z) - sum_k log sigmoid(-p.z~_k). Returns (loss, accuracy: the fraction whose
    positive scores above every distractor)."""
    pos = (prediction.float() * positive.float()).sum(-1)
    neg = torch.einsum("nd,nkd->nk", prediction.float(), distractors.float())
    loss = -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).mean()
    return loss, (pos > neg.max(-1).values).float().mean()


def cnn_features(encoder, inputs: torch.Tensor) -> torch.Tensor:
    """(B, S) waveform -> (B, T, C) the backbone's CNN feature encoder output z."""
    return encoder.model.feature_extractor(inputs).transpose(1, 2)


class GroupQuantizer(torch.nn.Module):
    """z (B, T, C) -> (z^ (B, T, C), codes (B, T, G), auxiliary loss, soft perplexity) with G groups of V codes."""

    def __init__(self, kind: str, dim: int, groups: int, codes: int, commitment: float = 0.25):
        super().__init__()
        self.kind, self.dim, self.groups, self.codes = kind, dim, groups, codes
        if kind == "gumbel":
            self.gumbel = gumbel_quantizer(dim, groups, codes, dim)
        else:  # one VectorQuantize per group: its multi-head mode does not take a padding mask
            from vector_quantize_pytorch import VectorQuantize

            self.kmeans = torch.nn.ModuleList(
                VectorQuantize(dim=dim // groups, codebook_size=codes, decay=0.99, kmeans_init=True, kmeans_iters=10,
                               threshold_ema_dead_code=2, commitment_weight=commitment, rotation_trick=False)
                for _ in range(groups))

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "groups": self.groups, "codes_per_group": self.codes,
                "file": QUANTIZER_FILE}

    def forward(self, z: torch.Tensor, frames: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.kind == "gumbel":
            quantized, perplexity = self.gumbel(z, mask_time_indices=frames)
            return quantized, gumbel_code_ids(self.gumbel, z.detach()), z.new_zeros(()), perplexity
        parts, codes, commit = [], [], []
        for vq, chunk in zip(self.kmeans, z.chunk(self.groups, dim=-1)):
            q, idx, loss = vq(chunk, mask=frames)
            parts.append(q)
            codes.append(idx.clamp_min(0))
            commit.append(loss.reshape(-1).sum())
        return torch.cat(parts, -1), torch.stack(codes, -1), torch.stack(commit).mean(), z.new_zeros(())


@register_objective("vq_wav2vec")
class VQWav2Vec(SpeechObjective):
    inputs = ("waveform",)
    default_backbone = "wav2vec2"

    @dataclasses.dataclass
    class Options:
        quantizer: Literal["gumbel", "kmeans"] = "gumbel"
        groups: int = bounded(2, gt=0, doc="G codebooks (the paper's 2)")
        codes_per_group: int = bounded(64, gt=1, doc="V codes per codebook (the paper's 320)")
        prediction_steps: int = bounded(4, gt=0, doc="K: predict 1..K frames (20 ms each) ahead")
        num_negatives: int = bounded(10, gt=0, doc="distractors per prediction, same utterance (the paper's 10)")
        context_layers: int = bounded(2, gt=0, doc="causal GRU layers of the context network")
        diversity_weight: float = bounded(0.1, ge=0, doc="gumbel: weight of (G*V - perplexity) / (G*V)")
        commitment_weight: float = bounded(0.25, ge=0, doc="kmeans: gamma of the commitment loss")
        gumbel_max: float = bounded(2.0, gt=0)
        gumbel_min: float = bounded(0.5, gt=0)
        gumbel_decay: float = bounded(0.995, gt=0, le=1, doc="per step")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        super().check_recipe(recipe)
        if recipe.model.conv_dim % recipe.objective.groups:
            raise SelfsupError(f"objective.groups: model.conv_dim={recipe.model.conv_dim} is not divisible by "
                               f"{recipe.objective.groups} groups")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        dim = int(self.encoder.model.config.conv_dim[-1])
        if dim % o.groups:
            raise SelfsupError(f"objective.groups: the CNN's {dim} channels are not divisible by {o.groups} groups")
        self.quantizer = GroupQuantizer(o.quantizer, dim, o.groups, o.codes_per_group, o.commitment_weight)
        hidden = self.encoder.feature_dim
        self.context = SpeechGRUModel(SpeechGRUConfig(input_dim=dim, hidden_size=hidden,
                                                      num_hidden_layers=o.context_layers))
        self.step_maps = torch.nn.ModuleList(torch.nn.Linear(hidden, dim) for _ in range(o.prediction_steps))
        self.register_buffer("gumbel_temperature", torch.tensor(float(o.gumbel_max)))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        o = self.options
        z = cnn_features(self.encoder, batch["inputs"])
        frames = self.encoder.frame_mask(batch["lengths"], z.shape[1])
        if o.quantizer == "gumbel":
            self.quantizer.gumbel.temperature = float(self.gumbel_temperature)
        quantized, codes, aux, perplexity = self.quantizer(z, frames)
        context = self.context(input_features=quantized).last_hidden_state
        self.remember(context, frames, batch["labels"])
        b, t, d = quantized.shape
        distractors = quantized.reshape(-1, d)[sample_negatives(frames, o.num_negatives)]  # (B, T, N, D)
        losses, accuracies = [], []
        for k, step_map in enumerate(self.step_maps, start=1):
            if k >= t:
                break
            usable = frames[:, k:]  # the target t + k is a real frame (so is t)
            if not usable.any():
                continue
            loss, accuracy = binary_contrastive_loss(step_map(context[:, :t - k])[usable], quantized[:, k:][usable],
                                                     distractors[:, k:][usable])
            losses.append(loss)
            accuracies.append(accuracy)
        prediction = torch.stack(losses).mean() if losses else quantized.sum() * 0.0
        if o.quantizer == "gumbel":
            diversity = (o.groups * o.codes_per_group - perplexity) / (o.groups * o.codes_per_group)
            aux = o.diversity_weight * diversity
        return {"loss": prediction + aux, "prediction_loss": prediction.detach(), "quantizer_loss": aux.detach(),
                "prediction_accuracy": torch.stack(accuracies).mean() if accuracies else torch.zeros(()),
                **codebook_health(codes[frames], o.codes_per_group),
                "unit_perplexity": codebook_health(combine_groups(codes[frames], o.codes_per_group),
                                                   o.codes_per_group ** o.groups)["codebook_perplexity"],
                "n_seconds": batch["n_seconds"]}

    def on_step_end(self, step: int, max_steps: int) -> None:
        o = self.options
        self.gumbel_temperature.fill_(annealed_temperature(step, o.gumbel_max, o.gumbel_min, o.gumbel_decay))

    def export(self, folder) -> None:
        from safetensors.torch import save_file

        export_encoder(self.encoder, folder, {**self.front.to_dict(), "quantizer": self.quantizer.config()})
        save_file({k: v.detach().cpu().contiguous() for k, v in self.quantizer.state_dict().items()},
                  str(Path(folder) / QUANTIZER_FILE))


def load_quantizer(folder: str | Path):
    """(encoder, front dict, GroupQuantizer in eval mode) of an exported vq-wav2vec model folder or run folder."""
    from safetensors.torch import load_file

    from selfsup.backbones.speech import load_speech_encoder

    encoder, front = load_speech_encoder(folder)
    folder = Path(folder) / "model" if (Path(folder) / "model" / PREPROCESSING).is_file() else Path(folder)
    spec = front.get("quantizer")
    if not spec or not (folder / spec.get("file", QUANTIZER_FILE)).is_file():
        raise SelfsupError(f"{folder}: not a vq-wav2vec model (no quantizer in {PREPROCESSING} or no {QUANTIZER_FILE})")
    quantizer = GroupQuantizer(spec["kind"], int(spec["dim"]), int(spec["groups"]), int(spec["codes_per_group"]))
    quantizer.load_state_dict(load_file(str(folder / spec["file"])))
    return encoder.eval(), front, quantizer.eval()


@torch.no_grad()
def speech_units(model: str | Path, audio: Any, dedup: bool = False) -> list[str]:
    """Each clip of `audio` (an AudioSet, or data sources as for pretraining) as space-separated unit ids of
    the exported quantizer (consecutive repeats merged with `dedup`), in the set's order."""
    from selfsup.data.audio import AudioDataConfig, AudioFrontEnd, AudioSet, load_audio

    encoder, front, quantizer = load_quantizer(model)
    fe = AudioFrontEnd.from_dict(front)
    if isinstance(audio, AudioSet) and audio.kind != "waveform":
        raise SelfsupError(f"speech_units: needs waveform audio, got a {audio.kind!r} set")
    if not isinstance(audio, AudioSet):
        sources: Sequence[str] = [audio] if isinstance(audio, (str, Path)) else audio
        audio = load_audio([str(s) for s in sources], AudioDataConfig(sample_rate=fe.spec.sample_rate,
                                                                       label_column=None), "waveform")
    out = []
    for i in range(len(audio)):
        x = torch.from_numpy(np.ascontiguousarray(fe.apply(audio.raw(i))))[None]
        z = cnn_features(encoder, x)
        _, codes, _, _ = quantizer(z, torch.ones(z.shape[:2], dtype=torch.bool))
        units = combine_groups(codes[0], quantizer.codes).tolist()
        if dedup:
            units = [u for j, u in enumerate(units) if j == 0 or u != units[j - 1]]
        out.append(" ".join(map(str, units)))
    return out
