"""Name -> implementation registries for objectives (a recipe's `objective.name`) and backbones (`model.type`).

Built-in entries are listed by module so that nothing heavy is imported until a name is used; a plug-in
registers with the decorators below (copy a neighbouring file in `selfsup/objectives/` to add a method).
"""
from __future__ import annotations

import importlib
from typing import Callable, TypeVar

from selfsup.errors import SelfsupError

T = TypeVar("T")

_OBJECTIVE_MODULES = {
    "mlm": "selfsup.objectives.mlm",
    "clm": "selfsup.objectives.clm",
    "denoising": "selfsup.objectives.denoising",
    **{name: f"selfsup.objectives.{name}" for name in (
        "rotation", "context", "simclr", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "deepcluster",
        "igpt")},
    **{name: f"selfsup.objectives.{name}" for name in (  # speech
        "mockingjay", "tera", "apc", "temporal_gap", "cpc", "wav2vec2", "vq_wav2vec", "hubert", "data2vec",
        "best_rq", "delores", "speech_simclr")},
    **{name: f"selfsup.objectives.{name}" for name in (  # tables
        "autoencoder", "denoising_autoencoder", "vae", "vqvae", "binary_autoencoder", "onehot_autoencoder")},
    "text_as_code": "selfsup.objectives.text_as_code",  # word-sequence code (unsupervised summarization)
    "adain_vc": "selfsup.objectives.voice_conversion",  # voice conversion
}
_BACKBONE_MODULES = {
    "bert": "selfsup.backbones.text",
    "albert": "selfsup.backbones.text",
    "roberta": "selfsup.backbones.text",
    "roformer": "selfsup.backbones.text",
    "gpt2": "selfsup.backbones.text",
    "bart": "selfsup.backbones.text",
    "resnet": "selfsup.backbones.vision",
    "vit": "selfsup.backbones.vision",
    "igpt": "selfsup.backbones.igpt",
    **{name: "selfsup.backbones.speech" for name in ("wav2vec2", "hubert", "data2vec-audio", "conformer", "gru")},
    "mlp": "selfsup.backbones.tabular",
    "word-gru": "selfsup.backbones.word_gru",
    "conv": "selfsup.backbones.conv",
    "adain-vc": "selfsup.backbones.adain_vc",
}
OBJECTIVES: dict[str, type] = {}
BACKBONES: dict[str, type] = {}


def register_objective(name: str) -> Callable[[T], T]:
    def wrap(cls: T) -> T:
        OBJECTIVES[name] = cls  # type: ignore[assignment]
        cls.name = name  # type: ignore[attr-defined]
        return cls
    return wrap


def register_backbone(*names: str) -> Callable[[T], T]:
    def wrap(cls: T) -> T:
        for n in names:
            BACKBONES[n] = cls  # type: ignore[assignment]
        return cls
    return wrap


def _lookup(kind: str, name: str, table: dict[str, type], modules: dict[str, str], key: str) -> type:
    if name not in table and name in modules:
        importlib.import_module(modules[name])
    if name not in table:
        known = ", ".join(sorted(set(modules) | set(table)))
        raise SelfsupError(f"{key}: unknown {kind} {name!r} (known: {known})")
    return table[name]


def get_objective(name: str) -> type:
    return _lookup("objective", name, OBJECTIVES, _OBJECTIVE_MODULES, "objective.name")


def get_backbone(name: str) -> type:
    return _lookup("backbone", name, BACKBONES, _BACKBONE_MODULES, "model.type")


def objective_names() -> list[str]:
    return sorted(set(_OBJECTIVE_MODULES) | set(OBJECTIVES))


def backbone_names() -> list[str]:
    return sorted(set(_BACKBONE_MODULES) | set(BACKBONES))
