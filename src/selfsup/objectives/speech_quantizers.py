"""What wav2vec 2.0, vq-wav2vec and HuBERT share: per-example span masks over a clip's real output frames, the
learned mask embedding the waveform backbones need for `mask_time_indices`, distractors drawn with torch (per
step seeded by the engine; transformers' `_sample_negative_indices` draws from numpy's global generator), the
Gumbel temperature schedule, a standalone Gumbel product quantizer (transformers'), and nearest-centroid
assignment for k-means targets.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from selfsup.pretext.speech_masking import span_mask


def frame_span_mask(n_frames: int, n_valid: int, mask_prob: float, span: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(n_frames,) bool: `span_mask` over the first n_valid (real) frames, never over padding."""
    mask = np.zeros(n_frames, dtype=bool)
    mask[:n_valid] = span_mask(n_valid, mask_prob, span, rng)
    return mask


def add_mask_embedding(model: torch.nn.Module) -> None:
    """Give an HF waveform model the learned mask vector `mask_time_indices` writes (transformers creates it
    only when the config's own mask_time_prob > 0, and the backbones set 0: objectives draw their masks)."""
    if not hasattr(model, "masked_spec_embed"):
        model.masked_spec_embed = torch.nn.Parameter(torch.empty(model.config.hidden_size).uniform_())


@contextlib.contextmanager
def mask_embedding_removed(model: torch.nn.Module) -> Iterator[None]:
    """Export without the mask vector, so the folder matches its config (mask_time_prob 0) and loads in plain
    `AutoModel` without an unexpected-weight report; pretraining puts a fresh one back when it continues."""
    vector = model._parameters.pop("masked_spec_embed", None)
    try:
        yield
    finally:
        if vector is not None:
            model.masked_spec_embed = vector


def export_encoder(encoder, folder: Path, front: dict[str, Any]) -> None:
    with mask_embedding_removed(encoder.model):
        encoder.export(folder, front)


def sample_negatives(candidates: torch.Tensor, num: int) -> torch.Tensor:
    """(B, T) bool -> (B, T, num) indices into the flattened (B*T) frames: for every frame, `num` draws (with
    replacement) uniform over the candidate frames of its own utterance other than itself; a lone candidate
    gets itself (callers mask distractors equal to the positive), an utterance without candidates frame 0."""
    batch, steps = candidates.shape
    device = candidates.device
    out = torch.zeros(batch, steps, num, dtype=torch.long, device=device)
    for b in range(batch):
        pool = torch.nonzero(candidates[b], as_tuple=True)[0]
        m = len(pool)
        if m <= 1:
            out[b] = b * steps + (pool[0] if m else 0)
            continue
        rank = torch.full((steps,), m, dtype=torch.long, device=device)
        rank[pool] = torch.arange(m, device=device)
        own = candidates[b].long()[:, None]  # a candidate draws from the m - 1 others
        draw = (torch.rand(steps, num, device=device) * (m - own)).long()
        draw = draw + (draw >= rank[:, None]).long()
        out[b] = b * steps + pool[draw.clamp_max(m - 1)]
    return out


def annealed_temperature(step: int, start: float, end: float, decay: float) -> float:
    """wav2vec 2.0's Gumbel schedule: max(start * decay^step, end)."""
    return max(start * decay ** step, end)


def gumbel_quantizer(input_dim: int, groups: int, codes_per_group: int, output_dim: int) -> torch.nn.Module:
    """transformers' `Wav2Vec2GumbelVectorQuantizer` on `input_dim` features: G groups of V codes, hard
    Gumbel-softmax with straight-through gradients in training, argmax in eval; initialized as in
    transformers' `_init_weights` (it is not a PreTrainedModel here)."""
    from transformers import Wav2Vec2Config
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

    config = Wav2Vec2Config(conv_dim=(input_dim,), conv_stride=(1,), conv_kernel=(1,), num_codevector_groups=groups,
                            num_codevectors_per_group=codes_per_group, codevector_dim=output_dim)
    quantizer = Wav2Vec2GumbelVectorQuantizer(config)
    with torch.no_grad():
        quantizer.weight_proj.weight.normal_(0.0, 1.0)
        quantizer.weight_proj.bias.zero_()
        quantizer.codevectors.uniform_()
    return quantizer


def gumbel_code_ids(quantizer: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, T, G) the codes a Gumbel quantizer picks at evaluation (argmax of its logits)."""
    logits = quantizer.weight_proj(features)
    return logits.view(*features.shape[:-1], quantizer.num_groups, quantizer.num_vars).argmax(-1)


def combine_groups(codes: torch.Tensor, codes_per_group: int) -> torch.Tensor:
    """(..., G) group codes -> (...) one unit id, sum_g code_g * V^g (vq-wav2vec's BERT reads these)."""
    weights = codes_per_group ** torch.arange(codes.shape[-1], device=codes.device)
    return (codes.long() * weights).sum(-1)


def nearest_centroid(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(..., D) features -> (...) index of the nearest centroid in Euclidean distance (k-means assignment)."""
    flat = features.reshape(-1, features.shape[-1]).float()
    return torch.cdist(flat, centroids.float()).argmin(-1).view(features.shape[:-1])
