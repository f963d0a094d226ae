"""A causal speech encoder: an input projection, then unidirectional GRU layers with residual connections (the
APC model of Chung et al. 2019; CPC's context network). Hand-written (about 40 lines) because transformers has
no causal encoder of continuous frames; it is a `PreTrainedModel`, so `save_pretrained` output loads with
`transformers.AutoModel` once this module is imported (it registers the `selfsup-gru` type).
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput


class SpeechGRUConfig(PretrainedConfig):
    model_type = "selfsup-gru"

    def __init__(self, input_dim: int = 80, hidden_size: int = 96, num_hidden_layers: int = 3,
                 dropout: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.input_dim, self.hidden_size = input_dim, hidden_size
        self.num_hidden_layers, self.dropout = num_hidden_layers, dropout


class SpeechGRUModel(PreTrainedModel):
    config_class = SpeechGRUConfig
    base_model_prefix = "gru"
    main_input_name = "input_features"

    def __init__(self, config: SpeechGRUConfig):
        super().__init__(config)
        self.input_projection = torch.nn.Linear(config.input_dim, config.hidden_size)
        self.layers = torch.nn.ModuleList(torch.nn.GRU(config.hidden_size, config.hidden_size, batch_first=True)
                                          for _ in range(config.num_hidden_layers))
        self.dropout = torch.nn.Dropout(config.dropout)
        self.post_init()

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False, **kwargs: Any) -> BaseModelOutput:
        h = self.input_projection(input_features)
        states = [h]
        for gru in self.layers:
            h = h + self.dropout(gru(h)[0])  # causal: frame t sees frames <= t only
            states.append(h)
        return BaseModelOutput(last_hidden_state=h, hidden_states=tuple(states) if output_hidden_states else None)


try:
    AutoConfig.register("selfsup-gru", SpeechGRUConfig)
    AutoModel.register(SpeechGRUConfig, SpeechGRUModel)
except ValueError:  # registered already (a reload)
    pass
