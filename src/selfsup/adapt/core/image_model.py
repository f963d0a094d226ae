"""The image classifier that `finetune --task image-classification` trains: an exported image encoder's pooled
features + a seeded linear head. Imports torch at the top: import it only when a model is built."""
from __future__ import annotations

import torch


class ImageClassifier(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, num_labels: int, seed: int):
        super().__init__()
        self.encoder = encoder
        torch.manual_seed(seed)
        self.head = torch.nn.Linear(encoder.feature_dim, num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(pixel_values))
