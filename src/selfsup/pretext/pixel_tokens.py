"""Pixel tokens for image-GPT: a colour palette by k-means over pixel values, images -> palette ids in raster
order, and back.

Pure functions. A palette is a (K, C) float32 array of colours in 0..255 units (C = 1 grey, 3 RGB), sorted
by brightness (the sum over channels) so that token ids are stable and, for grey images, ordered by intensity.
An image (C, H, W) becomes H * W tokens, row by row, left to right: token r * W + c is pixel (r, c)'s nearest
palette colour (squared Euclidean distance over the channels; ties go to the lower id).
"""
from __future__ import annotations

import numpy as np
import torch


def fit_palette(images: np.ndarray, clusters: int, seed: int = 0, max_pixels: int = 200_000) -> np.ndarray:
    """K-means (scikit-learn, fixed seed) over the pixel colours of (N, C, H, W) uint8 images -> (K, C) palette.

    At most `max_pixels` pixels (a seeded sample) are clustered. If the images hold no more than `clusters`
    distinct colours, the palette is exactly those colours (quantization is then lossless), so K may be
    smaller than `clusters`."""
    images = np.asarray(images)
    if images.ndim != 4 or images.size == 0:
        raise ValueError(f"fit_palette: expected (N, C, H, W) images, got shape {images.shape}")
    pixels = images.transpose(0, 2, 3, 1).reshape(-1, images.shape[1])
    rng = np.random.default_rng([seed, 3571])
    if len(pixels) > max_pixels:
        pixels = pixels[rng.choice(len(pixels), max_pixels, replace=False)]
    distinct, counts = np.unique(pixels, axis=0, return_counts=True)
    if len(distinct) <= clusters:
        palette = distinct.astype(np.float32)
    else:  # k-means over the distinct colours weighted by their counts: the same objective, fewer points
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=clusters, n_init=3, random_state=seed)
        palette = km.fit(distinct.astype(np.float32), sample_weight=counts).cluster_centers_.astype(np.float32)
    order = np.lexsort((*palette.T[::-1], palette.sum(1)))  # brightness, then channel by channel
    return np.ascontiguousarray(palette[order])


def nearest_colour(pixels: torch.Tensor, palette: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(..., C) pixel values (0..255 floats) -> (...) id of the nearest palette colour."""
    flat = pixels.reshape(-1, pixels.shape[-1]).float()
    pal = torch.as_tensor(palette).to(flat.device, torch.float32)
    d = (flat[:, None, :] - pal[None]).pow(2).sum(-1)  # exact squared distances, (P, K)
    return d.argmin(1).reshape(pixels.shape[:-1])


def images_to_tokens(images: np.ndarray | torch.Tensor, palette: np.ndarray | torch.Tensor,
                     chunk: int = 256) -> torch.Tensor:
    """(N, C, H, W) images (0..255) -> (N, H * W) long palette ids in raster order (row-major)."""
    pal = torch.as_tensor(palette)
    out = []
    for i in range(0, len(images), chunk):  # numpy chunks are copied: a memory-mapped cache is read-only
        x = images[i:i + chunk]
        x = torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else x
        out.append(nearest_colour(x.permute(0, 2, 3, 1).float(), pal).flatten(1))
    return torch.cat(out) if out else torch.zeros((0, images.shape[2] * images.shape[3]), dtype=torch.long)


def tokens_to_images(tokens: np.ndarray | torch.Tensor, palette: np.ndarray | torch.Tensor,
                     size: int) -> np.ndarray:
    """(N, size * size) palette ids -> (N, C, size, size) uint8 images (each pixel its palette colour)."""
    t = np.asarray(torch.as_tensor(tokens).cpu(), dtype=np.int64)
    pal = np.asarray(torch.as_tensor(palette).cpu(), dtype=np.float32)
    colours = pal[t].reshape(len(t), size, size, pal.shape[1])
    return np.clip(np.rint(colours), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
