"""The audio classifier that `finetune --task audio-classification` trains: transformers' own
`*ForSequenceClassification` of the speech encoder (Wav2Vec2Bert, wav2vec 2.0, HuBERT, data2vec-audio, WavLM:
a linear projection of the last layer's frames, the mean over real frames, a linear classifier), so a
fine-tuned folder loads with plain `transformers.AutoModelForAudioClassification`. selfsup's causal GRU encoder
has no transformers head; `SpeechGRUForSequenceClassification` is the same head on it, registered with the
Auto class (hand-written: transformers has no GRU encoder). Imports torch at the top: import it only when a
model is built."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForAudioClassification, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from selfsup.backbones.speech_gru import SpeechGRUConfig, SpeechGRUModel
from selfsup.errors import SelfsupError

DROPOUT_KEYS = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "final_dropout",
                "dropout")


class SpeechGRUForSequenceClassification(PreTrainedModel):
    """The transformers audio-classification head on selfsup's GRU encoder: project, mean over real frames,
    classify (the GRU is causal, so padding after a clip never changes its frames)."""
    config_class = SpeechGRUConfig
    base_model_prefix = "gru"
    main_input_name = "input_features"

    def __init__(self, config: SpeechGRUConfig):
        super().__init__(config)
        self.gru = SpeechGRUModel(config)
        width = int(getattr(config, "classifier_proj_size", 256) or 256)
        self.projector = torch.nn.Linear(config.hidden_size, width)
        self.classifier = torch.nn.Linear(width, config.num_labels)
        self.post_init()

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        h = self.projector(self.gru(input_features).last_hidden_state)
        if attention_mask is None:
            pooled = h.mean(1)
        else:
            m = attention_mask[..., None].to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        logits = self.classifier(pooled)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def register() -> None:
    """Make `AutoModelForAudioClassification` build the GRU head (idempotent)."""
    try:
        AutoModelForAudioClassification.register(SpeechGRUConfig, SpeechGRUForSequenceClassification)
    except ValueError:  # registered already
        pass


register()


def build_audio_classifier(path: Path, labels: list[str], init: str = "pretrained", seed: int = 0,
                           dropout: float | None = None) -> tuple[Any, set[str]]:
    """(classifier, names of the parameters the head adds) on the speech encoder at `path` (its HF config and
    weights); `init="scratch"`: the same architecture, freshly initialized with the seed."""
    from transformers import AutoConfig

    extra = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
             "label2id": {lab: i for i, lab in enumerate(labels)}, "problem_type": "single_label_classification"}
    try:
        config = AutoConfig.from_pretrained(str(path), **extra)
    except Exception as e:
        raise SelfsupError(f"{path}: cannot read the model config ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if dropout is not None:
        for name in DROPOUT_KEYS:
            if hasattr(config, name):
                setattr(config, name, dropout)
    torch.manual_seed(seed)
    try:
        if init == "scratch":
            model, new = AutoModelForAudioClassification.from_config(config), set()
        else:
            model, info = AutoModelForAudioClassification.from_pretrained(str(path), config=config,
                                                                          output_loading_info=True)
            new = set(info.get("missing_keys") or ())
    except (ValueError, KeyError) as e:  # an architecture without an audio-classification head
        raise SelfsupError(f"{path}: model type {config.model_type!r} has no audio-classification head "
                           f"({str(e).splitlines()[0][:160]})") from None
    prefix = model.base_model_prefix
    head = {n for n, _ in model.named_parameters() if not n.startswith(prefix + ".")}
    return model.train(), head | new
