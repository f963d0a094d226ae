"""Image views: the SimCLR augmentation pipeline (kornia, batched, on the model's device), rotations by
multiples of 90 degrees, and context-prediction patch pairs.

Training views do not depend on how the global batch is split across processes: the augmentation parameters
are drawn for the whole global micro-batch from a generator seeded by (seed, micro step, view)
(`draw_view_params`), and each rank applies its rows (`slice_view_params`, `apply_view_params`), so W
processes augment exactly as one process with the same global batch, and a resumed run as the uninterrupted
one. Context pairs are drawn with the example's numpy Generator in `make_batch`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from selfsup.config import bounded
from selfsup.seeding import seed_torch

# context prediction: the 8 neighbours of the centre cell of a 3x3 grid, row-major, labels 0..7
NEIGHBOURS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))


@dataclasses.dataclass
class ViewConfig:
    """SimCLR's augmentations, scaled for small images (the recipe's `objective.views`)."""

    crop_scale_min: float = bounded(0.2, gt=0, le=1, doc="random resized crop: smallest area fraction")
    flip: bool = True
    jitter: float = bounded(0.4, ge=0, le=1, doc="colour jitter strength (brightness, contrast, saturation)")
    jitter_prob: float = bounded(0.8, ge=0, le=1)
    grayscale_prob: float = bounded(0.2, ge=0, le=1, doc="RGB only")
    blur_prob: float = bounded(0.5, ge=0, le=1)


def simclr_pipeline(size: int, channels: int, cfg: ViewConfig | None = None) -> torch.nn.Module:
    """Random resized crop, flip, colour jitter, grayscale (RGB) and Gaussian blur on (B, C, S, S) floats in
    [0, 1]. The blur kernel is ~10% of the side (odd, >= 3) as in the paper; sigma scales with it."""
    import kornia.augmentation as K

    cfg = cfg or ViewConfig()
    steps: list[torch.nn.Module] = [K.RandomResizedCrop((size, size), scale=(cfg.crop_scale_min, 1.0))]
    if cfg.flip:
        steps.append(K.RandomHorizontalFlip())
    if cfg.jitter > 0 and cfg.jitter_prob > 0:
        s = cfg.jitter
        steps.append(K.ColorJitter(s, s, s, s / 4, p=cfg.jitter_prob) if channels == 3
                     else K.ColorJitter(s, s, 0.0, 0.0, p=cfg.jitter_prob))
    if channels == 3 and cfg.grayscale_prob > 0:
        steps.append(K.RandomGrayscale(p=cfg.grayscale_prob))
    if cfg.blur_prob > 0:
        k = max(3, int(round(size * 0.1)) | 1)
        steps.append(K.RandomGaussianBlur((k, k), (0.1, k / 3.0), p=cfg.blur_prob))
    return torch.nn.Sequential(*steps)


# kornia parameters shared by the whole batch (ColorJitter's order of its four adjustments), not per image
SHARED_PARAMS = frozenset({"order"})


def view_seed(seed: int, micro_step: int, view: int) -> int:
    """The torch seed of one view of one global micro-batch (independent of rank and world size)."""
    return int(np.random.SeedSequence([seed, 3, micro_step, view]).generate_state(1)[0])


def draw_view_params(pipeline: Sequence[torch.nn.Module], batch_shape: tuple[int, ...], seed: int,
                     device: torch.device | None = None) -> list[dict[str, torch.Tensor]]:
    """Each kornia augmentation's parameters for a batch of `batch_shape`, drawn with torch seeded by `seed`
    (the global generators are forked, so their state is untouched)."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        seed_torch(seed)
        return [aug.forward_parameters(torch.Size(batch_shape)) for aug in pipeline]


def slice_view_params(params: list[dict[str, torch.Tensor]], start: int, stop: int
                      ) -> list[dict[str, torch.Tensor]]:
    """The parameters of rows start..stop-1 of a batch, for applying to those rows alone."""
    sliced = []
    for step in params:
        n = int(step["batch_prob"].shape[0])
        out = {}
        for key, value in step.items():
            if key == "forward_input_shape":
                out[key] = torch.cat([value.new_tensor([stop - start]), value[1:]])
            elif key in SHARED_PARAMS:
                out[key] = value
            elif value.ndim and value.shape[0] == n:
                out[key] = value[start:stop]
            else:
                raise ValueError(f"kornia parameter {key!r} of shape {tuple(value.shape)} is neither per image "
                                 "nor known to be shared")
        sliced.append(out)
    return sliced


def apply_view_params(pipeline: Sequence[torch.nn.Module], x: torch.Tensor, params: list[dict[str, torch.Tensor]]
                      ) -> torch.Tensor:
    """Run the pipeline on x with the given parameters (one dict per augmentation)."""
    for aug, step in zip(pipeline, params):
        x = aug(x, params=dict(step))
    return x


def rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of each image (RotNet): (4B, C, H, W) stacked by angle, and labels 0..3 meaning
    0, 90, 180, 270 degrees counter-clockwise (`torch.rot90(x, k)` with k = label)."""
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


def context_geometry(size: int, gap: int) -> tuple[int, int]:
    """(cell, patch) sides for a 3x3 grid over a size x size image with `gap` pixels between patches."""
    cell = size // 3
    return cell, max(1, cell - gap)


def context_pair(image: np.ndarray, rng: np.random.Generator, gap: int, jitter: int
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """(centre patch, neighbour patch, label 0..7) from one (C, S, S) image (Doersch et al. 2015).

    The image is cut into a 3x3 grid of cells; each patch is `cell - gap` pixels and sits at a random offset
    within its cell (0..gap) plus up to `jitter` pixels either way (clipped to the image), so that edge
    continuity and exact alignment give no trivial cue. The label is the neighbour's index in NEIGHBOURS.
    """
    size = image.shape[-1]
    cell, patch = context_geometry(size, gap)
    label = int(rng.integers(8))

    def cut(row: int, col: int) -> np.ndarray:
        y0 = row * cell + int(rng.integers(0, cell - patch + 1))
        x0 = col * cell + int(rng.integers(0, cell - patch + 1))
        if jitter:
            y0 += int(rng.integers(-jitter, jitter + 1))
            x0 += int(rng.integers(-jitter, jitter + 1))
        y0, x0 = min(max(y0, 0), size - patch), min(max(x0, 0), size - patch)
        return image[:, y0:y0 + patch, x0:x0 + patch]

    return cut(1, 1), cut(*NEIGHBOURS[label]), label
