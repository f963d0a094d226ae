"""Shared plumbing of the speech objectives: cached clips, fixed-length crops, the encoder, the online probe,
the HF export.

A batch is `{"inputs": (B, L) waveform or (B, L, F) frames, "lengths": (B,) real values per clip, "labels":
(B,) (-1 = unknown), "n_seconds", **pretext}` where `pretext(clip, valid, rng)` — the method's corruption,
drawn from the example's own generator — adds per-example arrays (masks, corrupted copies) that are padded
and stacked. Methods that read frames set `inputs = ("logmel",)`, waveform methods `("waveform",)`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from selfsup.backbones.speech import build_speech_encoder, input_kind
from selfsup.data.audio import AudioDataConfig, AudioExamples, AudioFrontEnd, AudioSet, crop_or_pad, load_audio
from selfsup.errors import SelfsupError
from selfsup.objectives.base import Objective, Prepared, split_indices


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) mean over the True frames of (B, T) mask."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def lengths_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    return torch.arange(n, device=lengths.device)[None] < lengths[:, None]


def stack_padded(arrays: list[np.ndarray], length: int | None = None) -> np.ndarray:
    """Zero-pad a list of arrays along the first axis to one length and stack them."""
    n = length or max(len(a) for a in arrays)
    out = np.zeros((len(arrays), n, *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a[:n]
    return out


class SpeechObjective(Objective):
    modality = "speech"
    default_backbone = "conformer"
    count_key = "n_seconds"
    inputs: tuple[str, ...] = ("logmel", "waveform")  # the backbone input kinds this method works on

    @classmethod
    def data_config_class(cls) -> type:
        return AudioDataConfig

    @classmethod
    def input_kind(cls, recipe) -> str:
        kind = input_kind(recipe.model.type)
        if kind not in cls.inputs:
            wanted = "a waveform backbone (wav2vec2, hubert, data2vec-audio)" if cls.inputs == ("waveform",) else \
                "a log-mel backbone (conformer, gru)"
            raise SelfsupError(f"model.type: {cls.name} needs {wanted}, got {recipe.model.type!r}")
        return kind

    @classmethod
    def check_recipe(cls, recipe) -> None:
        cls.input_kind(recipe)

    @classmethod
    def prepare(cls, recipe, sources: list[str]) -> Prepared:
        d: AudioDataConfig = recipe.data
        data = load_audio(sources, d, cls.input_kind(recipe))
        front = AudioFrontEnd.fit(data, d.normalize)
        labels, classes = (data.labels(d.label_column) if d.label_column and d.label_column in data.columns
                           else (np.full(len(data), -1, np.int64), []))
        train, held = split_indices(len(data), d.holdout_fraction, recipe.train.seed, "clip")
        return Prepared(AudioExamples(data, train, front, labels), AudioExamples(data, held, front, labels),
                        {"audio": data, "front": front, "classes": classes})

    def __init__(self, recipe, prepared: Prepared):
        super().__init__(recipe, prepared)
        data: AudioSet = prepared.extras["audio"]
        self.front: AudioFrontEnd = prepared.extras["front"]
        self.num_classes = len(prepared.extras["classes"])
        self.encoder = build_speech_encoder(recipe.model, data.dims)
        self.rate = data.rate
        crop = recipe.data.crop_seconds
        self.crop = int(round(crop * data.rate)) if crop else None
        self.probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    # ---- batches ----
    def pretext(self, clip: np.ndarray, valid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The method's per-example corruption of a (cropped, padded) clip; arrays are padded and stacked."""
        return {}

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        length = max(len(e[0]) for e in examples)
        length = min(length, self.crop) if self.crop else length
        clips, lengths, extra = [], [], []
        for (x, _), rng in zip(examples, rngs):
            window, valid = crop_or_pad(x, length, rng)
            clips.append(window)
            lengths.append(valid)
            extra.append(self.pretext(window, valid, rng))
        batch = {"inputs": torch.from_numpy(np.stack(clips)), "lengths": torch.tensor(lengths, dtype=torch.long),
                 "labels": torch.tensor([e[1] for e in examples], dtype=torch.long),
                 "n_seconds": torch.tensor(sum(lengths) / self.rate)}
        for key in extra[0]:
            batch[key] = torch.from_numpy(stack_padded([e[key] for e in extra]))
        return batch

    # ---- the encoder ----
    def input_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return lengths_mask(batch["lengths"], batch["inputs"].shape[1])

    def encode(self, inputs: torch.Tensor, batch: dict[str, torch.Tensor],
               mask_time_indices: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every layer's hidden states and the (B, T_out) mask of real output frames."""
        layers = self.encoder.layers(inputs, self.input_mask(batch), mask_time_indices)
        return layers, self.encoder.frame_mask(batch["lengths"], layers[-1].shape[1])

    def output_frames(self, valid: int) -> int:
        return int(self.encoder.output_lengths(torch.tensor([valid]))[0])

    def remember(self, hidden: torch.Tensor, frames: torch.Tensor, labels: torch.Tensor) -> None:
        """Leave mean-pooled features for the online probe and the collapse diagnostics."""
        self.probe_batch = (masked_mean(hidden.detach(), frames), labels)

    def callbacks(self) -> list:
        from selfsup.objectives.probe import OnlineLinearProbe

        return [OnlineLinearProbe(self.encoder.feature_dim, self.num_classes)] if self.num_classes > 1 else []

    def export(self, folder) -> None:
        self.encoder.export(folder, self.front.to_dict())
