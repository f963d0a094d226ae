"""The auto-encoders' encoders as feature extractors (the encoder seam's `autoencoder` branch): a run folder or
`model/` export of objectives/autoencoder_base.py (any of the six methods, on tables, images or audio frames)
-> the bottleneck code per example (`TableObjective.features`: the code; VAE its mean; VQ-VAE the code before
quantization) and the encoder's layer activations. Labelled examples are read and preprocessed with the
model's SAVED `preprocessing.json` (the training data's columns, means and scales; image size and channel
statistics; log-mel spec and band statistics), never refitted on the probe's or the task's data.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from selfsup.errors import SelfsupError

# the activations after which a layer's output counts as one hidden state (backbones/tabular.py's ACTIVATIONS)
ACTIVATION_TYPES = (torch.nn.ReLU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Tanh)


def ae_export_folder(model: str | Path) -> Path | None:
    """The folder (a run folder's `model/` or itself) holding an auto-encoder export, or None."""
    from selfsup.objectives.autoencoder_base import MODEL_FORMAT

    p = Path(model)
    for folder in (p / "model", p):
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get("format") == MODEL_FORMAT:
            return folder
    return None


class AEEncoder(torch.nn.Module):
    """A loaded auto-encoder seen as an encoder: forward(x) -> (B, D) code, stages(x) -> every layer's states
    (the input, each hidden layer after its activation, the encoder's output). Only the encoder is a submodule
    (every method's `features` reads `ae.encoder` alone), so a classifier on it trains and counts the encoder's
    weights, not the decoder's; the whole auto-encoder stays reachable as `.ae` (its export)."""

    def __init__(self, ae: Any):
        super().__init__()
        self.encoder = ae.encoder
        self.__dict__["ae"] = ae  # not a submodule: the decoder and codebooks stay out of parameters()

    @property
    def preprocessor(self) -> Any:
        return self.ae.preprocessor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ae.shape)

    @property
    def width(self) -> int:
        """The code's width (the features' D)."""
        with torch.no_grad():
            return int(self.ae.features(torch.zeros(1, *self.shape)).shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ae.features(x)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        states = [x]
        for layer in self.encoder:
            x = layer(x)
            if isinstance(layer, ACTIVATION_TYPES):
                states.append(x)
        return states + [x]


def load_ae_encoder(model: str | Path) -> tuple[AEEncoder, dict[str, Any]]:
    """(AEEncoder in eval mode, the saved preprocessing.json dict) of an auto-encoder run or export."""
    from selfsup.objectives.autoencoder_base import load_table_model

    folder = ae_export_folder(model)
    if folder is None:
        raise SelfsupError(f"{model}: not an auto-encoder (no config.json of a selfsup auto-encoder there or in "
                           "model/)")
    ae = load_table_model(folder)
    prep = json.loads((folder / "preprocessing.json").read_text())
    return AEEncoder(ae).eval(), prep


def ae_examples(encoder: AEEncoder, sources: Sequence[str], label_column: str | None = None,
                require_labels: bool = True) -> tuple[Any, list[str]]:
    """(inputs, label texts) of `sources` preprocessed with the model's saved preprocessor: inputs is a (N, D)
    float32 array (tables) or a sequence of (array, label) examples (images, frame windows); '' = no label.
    A table lacking a fitted column, or the label column, is a one-line error."""
    from selfsup.data.ae_inputs import load_ae_data
    from selfsup.data.tables import TablePreprocessor, label_in, read_tables

    sources = [str(s) for s in sources]
    pre = encoder.preprocessor
    if isinstance(pre, TablePreprocessor):
        frame, spans = read_tables(sources)
        if label_column and label_column not in frame.columns:
            raise SelfsupError(f"{sources[0]}: --label-column: no column {label_column!r} (the table has "
                               f"{', '.join(map(str, list(frame.columns)[:12]))})")
        column = label_column or label_in(frame, pre.label_column)
        if require_labels and (column is None or column not in frame.columns):
            raise SelfsupError(f"{sources[0]}: no label column {column or 'label'!r}; name it with --label-column")
        x = pre.transform(frame, spans)  # a fitted column missing here -> the column's one-line error
        values = ["" if column is None or column not in frame.columns or v != v or v is None else
                  (str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v))
                  for v in (frame[column] if column in frame.columns else [None] * len(frame))]
        return x, values
    data = load_ae_data(sources, encoder.ae.recipe.data, pre, label_column)
    return data.rows, data.label_values()


@torch.no_grad()
def ae_features(encoder: AEEncoder, inputs: Any, batch_size: int = 512) -> np.ndarray:
    """(N, D) float32 codes of preprocessed inputs (an array of rows or a sequence of (array, label))."""
    encoder.eval()
    out = []
    for i in range(0, len(inputs), batch_size):
        part = inputs[i:i + batch_size] if isinstance(inputs, np.ndarray) else \
            np.stack([inputs[j][0] for j in range(i, min(i + batch_size, len(inputs)))])
        out.append(encoder(torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.width), np.float32)


def label_ids(train: list[str], evaluation: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Label texts -> ids over the training labels' sorted classes (numbers sorted as numbers); an eval label
    the training data lacks gets a further id (it can never be predicted); '' -> -1."""
    def key(v: str) -> tuple[int, float, str]:
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    classes = sorted({v for v in train if v}, key=key)
    classes += sorted({v for v in evaluation if v} - set(classes), key=key)
    index = {c: i for i, c in enumerate(classes)}
    ids = [np.array([index.get(v, -1) for v in values], dtype=np.int64) for values in (train, evaluation)]
    return ids[0], ids[1], classes
