"""One seam from a trained model to features, for every modality: a selfsup run folder or a Hugging Face folder
-> an `Encoder` that gives a pooled vector per example and every layer's hidden states (s3prl's upstream
contract). The probes (`selfsup evaluate --probe`), `selfsup embed`, image fine-tuning and the demo all load
through `load_encoder`; each modality has its branch here.

- text: `transformers.AutoModel` (the encoder half of an encoder-decoder) + its tokenizer; batches are
  tokenized dicts; pooled = mean over real tokens (or the first / last token);
- image: the exported image encoder (`preprocessing.json`: ResNet / ViT through `load_vision_encoder`, image-GPT
  through its own loader); batches are normalized (B, C, S, S) floats; pooled = the encoder's own pooling;
- speech: the exported speech encoder (`preprocessing.json` with `"modality": "speech"`, through
  `backbones.speech.load_speech_encoder`); batches are {"inputs": (B, L) waveform or (B, L, F) normalized frames,
  "attention_mask": (B, L)}; pooled = the mean over real output frames;
- autoencoder: an auto-encoder export (`config.json` of objectives/autoencoder_base.py, any modality, through
  `ae_encoder.load_ae_encoder`); batches are (B, *shape) inputs preprocessed with the saved preprocessing
  (`ae_encoder.ae_examples`); pooled = the bottleneck code (VAE: the mean; VQ-VAE: the code before
  quantization), hidden states = the input, each hidden layer's activation, the code.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError

PREPROCESSING = "preprocessing.json"
# preprocessing.json's model_type -> "module:function(folder) -> (encoder, preprocessing)" for image exports that
# are not plain HF vision encoders; anything else loads with backbones.vision.load_vision_encoder
IMAGE_LOADERS = {"igpt": "selfsup.backbones.igpt:load_igpt_encoder"}


@dataclasses.dataclass
class Encoder:
    modality: str  # "text" | "image" | "speech" | "autoencoder"
    model: Any  # text: an HF base model; image: a module (B, C, S, S) -> (B, D); speech: a SpeechEncoder
    folder: Path
    tokenizer: Any = None
    preprocessing: dict | None = None

    def hidden_states(self, batch: Any) -> list:
        """Every layer's states: text [B, T, H] per layer (embeddings first); image per stage; speech [B, T, D]
        per layer (the input projection first); autoencoder per encoder layer (the input first)."""
        if self.modality in ("image", "autoencoder"):
            return self.model.stages(batch)
        if self.modality == "speech":
            return self.model.layers(batch["inputs"], batch.get("attention_mask"))
        out = self.model(**batch, output_hidden_states=True)
        return list(out.hidden_states)

    def pooled(self, batch: Any, layer: int = -1, pooling: str = "mean"):
        """(B, D) features: text pooled over real tokens of `layer` (mean, cls = first, last = last real token);
        image the encoder's pooled output; autoencoder the bottleneck code."""
        if self.modality in ("image", "autoencoder"):
            return self.model(batch)
        if self.modality == "speech":
            import torch

            states = self.hidden_states(batch)[layer]
            mask = batch.get("attention_mask")
            lengths = mask.sum(1) if mask is not None else torch.full((len(states),), batch["inputs"].shape[1])
            return pool_tokens(states, self.model.frame_mask(lengths, states.shape[1]), "mean")
        states = self.hidden_states(batch)[layer]
        return pool_tokens(states, batch["attention_mask"], pooling)


def pool_tokens(states, attention_mask, pooling: str = "mean"):
    """[B, T, H] states -> [B, H]: the mean over real tokens, the first token, or the last real one."""
    import torch

    mask = attention_mask.to(states.dtype)
    if pooling == "cls":
        return states[:, 0]
    if pooling == "last":
        last = attention_mask.sum(1).clamp(min=1) - 1
        return states[torch.arange(states.shape[0], device=states.device), last]
    return (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def export_modality(folder: Path) -> str | None:
    """The modality a preprocessing.json in `folder` describes ("image" unless it says otherwise), or None."""
    try:
        prep = json.loads((Path(folder) / PREPROCESSING).read_text())
    except (OSError, ValueError):
        return None
    return str(prep.get("modality", "image")) if isinstance(prep, dict) else None


def _export_folder(model: str | Path, modality: str) -> Path | None:
    from selfsup.adapt.core.ae_encoder import ae_export_folder

    if ae_export_folder(model) is not None:  # an auto-encoder's preprocessing.json also says "image"
        return None
    p = Path(model)
    for folder in (p / "model", p):
        if (folder / PREPROCESSING).is_file():
            return folder if export_modality(folder) == modality else None
    return None


def image_export_folder(model: str | Path) -> Path | None:
    """The folder holding an image export's preprocessing.json (the run folder's `model/` or itself)."""
    return _export_folder(model, "image")


def speech_export_folder(model: str | Path) -> Path | None:
    """The folder holding a speech export's preprocessing.json (`"modality": "speech"`), or None."""
    return _export_folder(model, "speech")


def load_image_encoder(model: str | Path) -> tuple[Any, dict]:
    """(feature encoder, preprocessing) of an exported image model (a run folder or its `model/`)."""
    from selfsup.backbones.vision import load_vision_encoder

    folder = image_export_folder(model)
    kind = json.loads((folder / PREPROCESSING).read_text()).get("model_type") if folder else None
    if kind in IMAGE_LOADERS:
        module, _, function = IMAGE_LOADERS[kind].partition(":")
        return getattr(importlib.import_module(module), function)(folder)
    return load_vision_encoder(model)


def load_text_encoder(model: str | Path) -> tuple[Any, Any]:
    """(HF base model returning hidden states, tokenizer) of a selfsup run, HF folder or fine-tuned folder."""
    from transformers import AutoModel

    from selfsup.adapt.core.models import load_error, load_tokenizer, quiet_transformers, resolve_checkpoint

    quiet_transformers()
    path = resolve_checkpoint(model)
    tok = load_tokenizer(path)
    try:
        net = AutoModel.from_pretrained(str(path))
    except Exception as e:
        raise load_error(path, e) from None
    if getattr(net.config, "is_encoder_decoder", False):
        net = net.get_encoder()
    return net.eval(), tok


def load_encoder(model: str | Path) -> Encoder:
    """The encoder of any selfsup run or HF folder, in eval mode."""
    from selfsup.adapt.core.ae_encoder import ae_export_folder, load_ae_encoder

    folder = ae_export_folder(model)
    if folder is not None:
        ae, prep = load_ae_encoder(folder)
        return Encoder("autoencoder", ae, folder, preprocessing=prep)
    folder = image_export_folder(model)
    if folder is not None:
        encoder, prep = load_image_encoder(folder)
        return Encoder("image", encoder.eval(), folder, preprocessing=prep)
    folder = speech_export_folder(model)
    if folder is not None:
        from selfsup.backbones.speech import load_speech_encoder

        speech, front = load_speech_encoder(folder)
        return Encoder("speech", speech.eval(), folder, preprocessing=front)
    net, tok = load_text_encoder(model)
    return Encoder("text", net, Path(model), tokenizer=tok)
