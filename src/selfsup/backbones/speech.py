"""Speech backbones that return every layer's hidden states, built from `transformers` configs at tiny sizes
so the export loads with plain `transformers.AutoModel`:

* waveform: `wav2vec2`, `hubert`, `data2vec-audio` — a 7-layer convolutional feature encoder (320x down-
  sampling, 50 frames/s at 16 kHz) + a transformer (also `wavlm` when loaded from a folder);
* log-mel frames (100 frames/s): `conformer` — transformers' `Wav2Vec2Bert` (feature projection + conformer
  layers with relative attention), the transformer of the Mockingjay/TERA/BEST-RQ family;
* log-mel frames, causal: `gru` — unidirectional GRUs with residual connections (APC, CPC), in
  `speech_gru.py`: transformers has no causal encoder of continuous frames.

`SpeechEncoder.layers(inputs, mask)` gives [layer 0 (the input projection / CNN output), layer 1, ...], each
(B, T, D); `export` writes the HF folder plus `preprocessing.json` (the front end: input kind, frame spec,
normalization statistics) that evaluation reads.
"""
from __future__ import annotations

import importlib

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import torch

from selfsup.config import bounded
from selfsup.errors import SelfsupError
from selfsup.registry import register_backbone

PREPROCESSING = "preprocessing.json"
WAVEFORM_TYPES = ("wav2vec2", "hubert", "data2vec-audio", "wavlm")
FRAME_TYPES = ("conformer", "gru")
_HF_NAMES = {"wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"), "hubert": ("HubertConfig", "HubertModel"),
             "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"), "wavlm": ("WavLMConfig", "WavLMModel"),
             "conformer": ("Wav2Vec2BertConfig", "Wav2Vec2BertModel")}
_TYPE_OF_MODEL = {"wav2vec2": "wav2vec2", "hubert": "hubert", "data2vec-audio": "data2vec-audio", "wavlm": "wavlm",
                  "wav2vec2-bert": "conformer", "selfsup-gru": "gru"}


@register_backbone("wav2vec2", "hubert", "data2vec-audio", "conformer", "gru")
class SpeechBackbone:
    modality = "speech"

    @dataclasses.dataclass
    class Config:
        type: Literal["wav2vec2", "hubert", "data2vec-audio", "conformer", "gru"] = "conformer"
        hidden_size: int = bounded(96, gt=0)
        num_layers: int = bounded(3, gt=0)
        num_heads: int = bounded(4, gt=0)
        intermediate_size: int | None = bounded(None, gt=0, doc="feed-forward width (default 2 x hidden_size)")
        conv_dim: int = bounded(64, gt=0, doc="waveform types: channels of each CNN feature-encoder layer")
        conv_kernel: int = bounded(15, gt=0, doc="conformer: depthwise convolution width")
        dropout: float = bounded(0.0, ge=0, lt=1)
        from_pretrained: str | None = None  # continue from a local HF speech model folder

        def validate(self) -> None:
            if self.type != "gru" and self.hidden_size % self.num_heads:
                raise SelfsupError(f"hidden_size: {self.hidden_size} is not divisible by num_heads={self.num_heads}")


def input_kind(model_type: str) -> str:
    """What a backbone type reads: the waveform, or log-mel frames."""
    return "waveform" if model_type in WAVEFORM_TYPES else "logmel"


# ---- building and loading ---------------------------------------------------------------------------------

def _hf_model(cfg: SpeechBackbone.Config, input_dim: int) -> torch.nn.Module:
    import transformers as tf

    ffn = cfg.intermediate_size or 2 * cfg.hidden_size
    if cfg.type == "gru":
        from selfsup.backbones.speech_gru import SpeechGRUConfig, SpeechGRUModel

        return SpeechGRUModel(SpeechGRUConfig(input_dim=input_dim, hidden_size=cfg.hidden_size,
                                              num_hidden_layers=cfg.num_layers, dropout=cfg.dropout))
    config_name, model_name = _HF_NAMES[cfg.type]
    common = dict(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                  intermediate_size=ffn, hidden_dropout=cfg.dropout, attention_dropout=cfg.dropout,
                  activation_dropout=cfg.dropout, feat_proj_dropout=cfg.dropout, layerdrop=0.0,
                  mask_time_prob=0.0, mask_feature_prob=0.0)  # objectives draw their own masks
    if cfg.type == "conformer":
        hf = tf.Wav2Vec2BertConfig(feature_projection_input_dim=input_dim, conv_depthwise_kernel_size=cfg.conv_kernel,
                                   **common)
    else:
        hf = getattr(tf, config_name)(conv_dim=(cfg.conv_dim,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
                                      conv_kernel=(10, 3, 3, 3, 3, 2, 2), feat_extract_norm="layer",
                                      do_stable_layer_norm=True, num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=4, **common)
    return getattr(tf, model_name)(hf)


class SpeechEncoder(torch.nn.Module):
    """An HF speech model with a layer-wise interface: inputs (B, S) waveform or (B, T, F) frames -> hidden states."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        model_type = model.config.model_type
        if model_type not in _TYPE_OF_MODEL:
            raise SelfsupError(f"model type {model_type!r} is not a supported speech encoder "
                               f"(known: {', '.join(sorted(_TYPE_OF_MODEL))})")
        self.type = _TYPE_OF_MODEL[model_type]
        self.input_kind = input_kind(self.type)
        self.feature_dim = int(model.config.hidden_size)
        self.num_layers = int(model.config.num_hidden_layers) + 1

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames the model produces for inputs of `lengths` values (samples or frames)."""
        if self.input_kind == "waveform":
            return self.model._get_feat_extract_output_lengths(lengths).long()
        return lengths.long()

    def frame_mask(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(B, n_frames) bool, True on real (not padded) output frames."""
        out = self.output_lengths(lengths).to(torch.long)
        return torch.arange(n_frames, device=out.device)[None] < out[:, None]

    def layers(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
               mask_time_indices: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every layer's hidden states; `mask_time_indices` (B, T_out) replaces those frames by the model's
        learned mask embedding after the input projection (wav2vec 2.0 / HuBERT / data2vec masking)."""
        key = "input_values" if self.input_kind == "waveform" else "input_features"
        kwargs: dict[str, Any] = {key: inputs, "output_hidden_states": True}
        if attention_mask is not None and self.type != "gru":
            kwargs["attention_mask"] = attention_mask.long()
        if mask_time_indices is not None:
            kwargs["mask_time_indices"] = mask_time_indices
        return list(self.model(**kwargs).hidden_states)

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.layers(inputs, attention_mask)[-1]

    def export(self, folder: Path, front: dict[str, Any]) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model.save_pretrained(str(folder), safe_serialization=True)
        (Path(folder) / PREPROCESSING).write_text(json.dumps(
            {"modality": "speech", "model_type": self.type, **front}, indent=2) + "\n")


def build_speech_encoder(cfg: SpeechBackbone.Config, input_dim: int) -> SpeechEncoder:
    if cfg.from_pretrained:
        encoder, _ = load_speech_encoder(cfg.from_pretrained)
        return encoder
    return SpeechEncoder(_hf_model(cfg, input_dim))


def _front_of_hf_folder(folder: Path, model_type: str) -> dict[str, Any]:
    """The front end of a Hugging Face waveform model folder without preprocessing.json (its feature extractor:
    16 kHz, per-utterance normalization when `do_normalize`)."""
    if input_kind(model_type) != "waveform":
        raise SelfsupError(f"{folder}: no {PREPROCESSING}; only waveform models (wav2vec2, HuBERT, data2vec, WavLM) "
                           "can be read without it")
    prep = {}
    if (folder / "preprocessor_config.json").is_file():
        prep = json.loads((folder / "preprocessor_config.json").read_text())
    return {"input": "waveform", "sample_rate": int(prep.get("sampling_rate", 16000)),
            "normalize": "utterance" if prep.get("do_normalize", True) else "none", "mean": None, "std": None}


def load_speech_encoder(folder: str | Path) -> tuple[SpeechEncoder, dict[str, Any]]:
    """An exported selfsup speech encoder (run folder or its model/), or a Hugging Face wav2vec2 / HuBERT /
    data2vec-audio / WavLM folder, with its front end."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    importlib.import_module("selfsup.backbones.speech_gru")  # registers the selfsup-gru type with AutoModel

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    if (folder / "model" / "config.json").is_file():  # a run folder
        folder = folder / "model"
    if not (folder / "config.json").is_file():
        raise SelfsupError(f"{folder}: not a speech model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as e:
        raise SelfsupError(f"{folder}: cannot read config.json ({type(e).__name__}: {str(e).splitlines()[0][:160]})") \
            from None
    if config.model_type not in _TYPE_OF_MODEL:
        raise SelfsupError(f"{folder}: a {config.model_type!r} model is not a speech encoder "
                           f"(known: {', '.join(sorted(_TYPE_OF_MODEL))})")
    model_type = _TYPE_OF_MODEL[config.model_type]
    if (folder / PREPROCESSING).is_file():
        front = json.loads((folder / PREPROCESSING).read_text())
    else:
        front = _front_of_hf_folder(folder, model_type)
    try:
        model = AutoModel.from_pretrained(str(folder))
    except Exception as e:
        raise SelfsupError(f"{folder}: cannot load model ({type(e).__name__}: {str(e).splitlines()[0][:160]})") \
            from None
    return SpeechEncoder(model), front


@torch.no_grad()
def encode_clips(encoder: SpeechEncoder, clips: list, layer: int | None = None, batch_size: int = 16,
                 device: str | torch.device = "cpu") -> list:
    """Frozen hidden states of normalized clips (each (S,) or (T, F) numpy), batched by similar length:
    per clip a list of every layer's (T_out, D) float32 arrays, or one layer's array when `layer` is given."""
    import numpy as np

    encoder = encoder.to(device).eval()
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
    out: list = [None] * len(clips)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        longest = max(len(clips[i]) for i in chunk)
        batch = np.zeros((len(chunk), longest, *np.shape(clips[chunk[0]])[1:]), np.float32)
        for row, i in enumerate(chunk):
            batch[row, :len(clips[i])] = clips[i]
        lengths = torch.tensor([len(clips[i]) for i in chunk])
        mask = torch.arange(longest)[None] < lengths[:, None]
        states = encoder.layers(torch.from_numpy(batch).to(device), mask.to(device))
        frames = encoder.output_lengths(lengths).tolist()
        for row, i in enumerate(chunk):
            per_layer = [h[row, :frames[row]].float().cpu().numpy() for h in states]
            out[i] = per_layer if layer is None else per_layer[layer]
    return out
