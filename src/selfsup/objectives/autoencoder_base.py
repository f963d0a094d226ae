"""What the table auto-encoders (AE, denoising AE, VAE, VQ-VAE) share: the preprocessed table, batches of
feature rows (plus a per-row pretext corruption), the per-row reconstruction error, and an export that can be
loaded again for scoring.

A batch is `{"x": (B, D) float32 standardized features, "labels": (B,) (-1 = unknown), "n_rows", **pretext}`.
Each method gives `forward` (loss and metrics), `encode(x)` (the bottleneck code) and `score(x)` (one anomaly
score per row, higher = more anomalous; deterministic, so a reloaded model gives identical scores).

The export (`model/`) is `model.safetensors` (every weight and buffer of the objective, codebooks included),
`config.json` (objective name, resolved recipe, input width) and `preprocessing.json` (the fitted
`TablePreprocessor`: columns, categories, fill values, means and scales). `load_table_model(folder)` rebuilds
the objective from them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.backbones.tabular import encoder_decoder
from selfsup.data.tables import TableDataConfig, TableExamples, TablePreprocessor, TableSet, load_table
from selfsup.errors import SelfsupError
from selfsup.objectives.base import Objective, Prepared, split_indices

MODEL_FORMAT = "selfsup-table-autoencoder"


def row_error(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared reconstruction error of each row."""
    return (recon.float() - x.float()).pow(2).mean(1)


class TableObjective(Objective):
    modality = "table"
    default_backbone = "mlp"
    count_key = "n_rows"
    code_multiplier = 1  # the encoder's output is code_multiplier x bottleneck wide (2 for a VAE)

    @classmethod
    def data_config_class(cls) -> type:
        return TableDataConfig

    @classmethod
    def prepare(cls, recipe, sources: list[str]) -> Prepared:
        data: TableSet = load_table(sources, recipe.data)
        train, held = split_indices(len(data.x), recipe.data.holdout_fraction, recipe.train.seed, "row")
        fitted = data.x[train]
        return Prepared(TableExamples(data, train), TableExamples(data, held),
                        {"dim": data.preprocessor.dim, "preprocessor": data.preprocessor,
                         "low": fitted.min(0), "high": fitted.max(0)})

    def __init__(self, recipe, prepared: Prepared):
        super().__init__(recipe, prepared)
        self.dim = int(prepared.extras["dim"])
        self.preprocessor: TablePreprocessor = prepared.extras["preprocessor"]
        self.encoder, self.decoder = encoder_decoder(recipe.model, self.dim,
                                                     recipe.model.bottleneck * self.code_multiplier)

    # ---- batches ----
    def pretext(self, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The method's per-row corruption (arrays are stacked into the batch); none by default."""
        return {}

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        rows = [np.asarray(e[0], dtype=np.float32) for e in examples]
        batch = {"x": torch.from_numpy(np.stack(rows)),
                 "labels": torch.tensor([e[1] for e in examples], dtype=torch.long),
                 "n_rows": torch.tensor(len(examples))}
        extra = [self.pretext(r, rng) for r, rng in zip(rows, rngs)]
        for key in extra[0] if extra else []:
            batch[key] = torch.from_numpy(np.stack([e[key] for e in extra]))
        return batch

    # ---- what every method answers ----
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bottleneck) code of each row."""
        return self.encoder(x)

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
                  "recipe": self.recipe.to_dict()}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / "preprocessing.json").write_text(json.dumps(self.preprocessor.to_dict(), indent=2) + "\n")


def model_folder(path: str | Path) -> Path:
    """A table run folder or its `model/` folder -> the folder holding config.json."""
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / "config.json").is_file() and (cand / "model.safetensors").is_file():
            return cand
    raise SelfsupError(f"{path}: not a table auto-encoder (no model.safetensors + config.json there or in "
                       "model/)")


def load_table_model(path: str | Path) -> TableObjective:
    """Rebuild a saved table auto-encoder (eval mode, on the CPU) with its preprocessor."""
    from safetensors.torch import load_file

    from selfsup.recipes import load_recipe
    from selfsup.registry import get_objective

    folder = model_folder(path)
    try:
        config = json.loads((folder / "config.json").read_text())
        pre = TablePreprocessor.from_dict(json.loads((folder / "preprocessing.json").read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise SelfsupError(f"{folder}: unreadable model config ({type(e).__name__}: {e})") from None
    if config.get("format") != MODEL_FORMAT:
        raise SelfsupError(f"{folder}: config.json is not a {MODEL_FORMAT} config")
    recipe = load_recipe(config["recipe"])
    cls = get_objective(config["objective"])
    model = cls(recipe, Prepared([], [], {"dim": config["input_dim"], "preprocessor": pre}))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.eval()
