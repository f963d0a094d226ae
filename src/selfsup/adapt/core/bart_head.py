"""BART token classification: transformers has no such head; written here (encoder states + dropout + linear)
and registered with `AutoModelForTokenClassification`, so a fine-tuned BART tagger reloads through the Auto
class. This module imports torch and transformers at the top: import it only when a model is built."""
from __future__ import annotations

import math

import torch
from transformers import AutoModelForTokenClassification, BartConfig
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.bart import modeling_bart as mb


class BartForTokenClassification(mb.BartPreTrainedModel):
    # hand-written: transformers ships BART sequence classification and QA heads, not token classification
    _tied_weights_keys = {"model.encoder.embed_tokens.weight": "model.shared.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = torch.nn.Module()  # the encoder half of BartModel, same weight names
        scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.model.shared = mb.BartScaledWordEmbedding(config.vocab_size, config.d_model,
                                                       config.pad_token_id, embed_scale=scale)
        self.model.encoder = mb.BartEncoder(config)
        self.dropout = torch.nn.Dropout(config.classifier_dropout or config.dropout)
        self.classifier = torch.nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.shared

    def set_input_embeddings(self, value):
        self.model.shared = value
        self.model.encoder.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        hidden = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.classifier(self.dropout(hidden))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1),
                                                     ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits)


def register() -> None:
    """Make `AutoModelForTokenClassification` build and load BART taggers (idempotent)."""
    AutoModelForTokenClassification.register(BartConfig, BartForTokenClassification, exist_ok=True)
