"""What the auto-encoders (AE, denoising AE, VAE, VQ-VAE, binary and one-hot codes) share, for tables, images
and windows of log-mel frames alike: the preprocessed rows (data/ae_inputs.py reads the modality `data.modality`
names or the sources' kind implies), batches of rows (plus a per-row pretext corruption), the per-row
reconstruction error, and an export that can be loaded again for scoring.

A batch is `{"x": (B, *shape) float32 standardized inputs, "labels": (B,) (-1 = unknown), "n_rows", **pretext}`
with shape (D,) for a table row, (C, S, S) for an image, (1, n_mels, W) for a window of frames. The encoder and
decoder are `model.type: mlp` (any shape, flattened) or `conv` (images and frames). Each method gives
`forward` (loss and metrics), `encode(x)` (the bottleneck code), `features(x)` (what probes and fine-tuning
see: the code; VAE its mean; VQ-VAE the pre-quantization code) and `score(x)` (one anomaly score per row,
higher = more anomalous; deterministic, so a reloaded model gives identical scores).

The export (`model/`) is `model.safetensors` (every weight and buffer of the objective, codebooks included),
`config.json` (objective name, resolved recipe, input width and shape) and `preprocessing.json` (the fitted
preprocessor: a table's columns, categories, fill values, means and scales; an image's size, channels and
channel statistics; the log-mel spec, band statistics and window of audio frames). `load_table_model(folder)`
rebuilds the objective from them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from selfsup.backbones import conv, tabular
from selfsup.data.ae_inputs import AEDataConfig, AESet, input_shape, load_ae_data, preprocessor_from_dict, value_range
from selfsup.errors import SelfsupError
from selfsup.objectives.base import Objective, Prepared, split_indices

MODEL_FORMAT = "selfsup-table-autoencoder"


def row_error(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared reconstruction error of each row (over every element of an image or frame window)."""
    return (recon.float() - x.float()).pow(2).flatten(1).mean(1)


def row_sse(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) summed squared reconstruction error of each row."""
    return (recon.float() - x.float()).pow(2).flatten(1).sum(1)


class TableObjective(Objective):
    """The auto-encoders' base (named for the tables it first served; images and audio frames too)."""

    modality = "table, image or audio-frame"
    default_backbone = "mlp"
    count_key = "n_rows"
    code_multiplier = 1  # the encoder's output is code_multiplier x bottleneck wide (2 for a VAE)

    @classmethod
    def data_config_class(cls) -> type:
        return AEDataConfig

    @classmethod
    def prepare(cls, recipe, sources: list[str]) -> Prepared:
        data: AESet = load_ae_data(sources, recipe.data)
        shape = input_shape(data.preprocessor)
        if recipe.model.type == "conv" and len(shape) != 3:
            raise SelfsupError(f"model.type: conv needs images or audio frames; {sources[0]} is read as a table "
                               "(use model.type: mlp, or set data.modality)")
        train, held = split_indices(len(data.rows), recipe.data.holdout_fraction, recipe.train.seed, "row")
        low, high = value_range(data.rows, train)
        return Prepared(Subset(data.rows, train), Subset(data.rows, held),
                        {"shape": shape, "preprocessor": data.preprocessor, "low": low, "high": high})

    def __init__(self, recipe, prepared: Prepared):
        super().__init__(recipe, prepared)
        extras = prepared.extras
        self.shape: tuple[int, ...] = tuple(extras["shape"]) if "shape" in extras else (int(extras["dim"]),)
        self.dim = int(np.prod(self.shape))
        self.preprocessor = extras["preprocessor"]
        build = conv.encoder_decoder if recipe.model.type == "conv" else tabular.encoder_decoder
        self.encoder, self.decoder = build(recipe.model, self.shape, recipe.model.bottleneck * self.code_multiplier)

    # ---- batches ----
    def pretext(self, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The method's per-row corruption (arrays are stacked into the batch); none by default."""
        return {}

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        rows = [np.asarray(e[0], dtype=np.float32) for e in examples]
        batch = {"x": torch.from_numpy(np.stack(rows)),
                 "labels": torch.tensor([e[1] for e in examples], dtype=torch.long),
                 "n_rows": torch.tensor(len(examples))}
        if type(self).pretext is TableObjective.pretext:  # no corruption: build no per-row Generator (~0.1 ms each)
            return batch
        extra = [self.pretext(r, rng) for r, rng in zip(rows, rngs)]
        for key in extra[0] if extra else []:
            batch[key] = torch.from_numpy(np.stack([e[key] for e in extra]))
        return batch

    # ---- what every method answers ----
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bottleneck) code of each row (image, frame window)."""
        return self.encoder(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) the code a probe or a fine-tuned head sees: the bottleneck code (`encode`) unless a method
        says otherwise (VQ-VAE: the code before quantization)."""
        return self.encode(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) anomaly score (higher = more anomalous): the mean squared reconstruction error."""
        return row_error(self.reconstruct(x), x)

    def export(self, folder) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        config = {"format": MODEL_FORMAT, "objective": self.name, "input_dim": self.dim,
                  "input_shape": list(self.shape), "recipe": self.recipe.to_dict()}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / "preprocessing.json").write_text(json.dumps(self.preprocessor.to_dict(), indent=2) + "\n")


def model_folder(path: str | Path) -> Path:
    """An auto-encoder run folder or its `model/` folder -> the folder holding config.json."""
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / "config.json").is_file() and (cand / "model.safetensors").is_file():
            return cand
    raise SelfsupError(f"{path}: not an auto-encoder (no model.safetensors + config.json there or in "
                       "model/)")


def load_table_model(path: str | Path) -> TableObjective:
    """Rebuild a saved auto-encoder (any modality; eval mode, on the CPU) with its preprocessor."""
    from safetensors.torch import load_file

    from selfsup.recipes import load_recipe
    from selfsup.registry import get_objective

    folder = model_folder(path)
    try:
        config = json.loads((folder / "config.json").read_text())
        pre = preprocessor_from_dict(json.loads((folder / "preprocessing.json").read_text()))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise SelfsupError(f"{folder}: unreadable model config ({type(e).__name__}: {e})") from None
    if config.get("format") != MODEL_FORMAT:
        raise SelfsupError(f"{folder}: config.json is not a {MODEL_FORMAT} config")
    recipe = load_recipe(config["recipe"])
    cls = get_objective(config["objective"])
    shape = config.get("input_shape") or [config["input_dim"]]
    model = cls(recipe, Prepared([], [], {"shape": tuple(shape), "preprocessor": pre}))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.eval()


load_autoencoder = load_table_model  # the same loader under its modality-free name


class Subset(Sequence):
    """rows[indices]: the training or held-out part of a modality's rows."""

    def __init__(self, rows: Sequence, indices: np.ndarray):
        self.rows, self.indices = rows, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.rows[int(self.indices[i])]
