"""Collapse diagnostics for learned features: per-dimension standard deviation of the L2-normalized features
(SimSiam, Chen & He 2021, sec. 4.1) and the effective rank (Roy & Vetterli 2007) of the centred features.

`feature_std` is scaled by sqrt(d): about 1 for well-spread features, 0 for a constant encoder (complete
collapse). `effective_rank` = exp(entropy of the normalized singular values): d for isotropic features,
1 when the features lie on a line, 0 for constant ones (dimensional collapse shows as a low rank).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

COLLAPSE_STD = 0.05
COLLAPSE_RANK = 1.5


@dataclasses.dataclass
class Diagnosis:
    feature_std: float
    effective_rank: float
    dim: int

    @property
    def collapsed(self) -> bool:
        return self.feature_std < COLLAPSE_STD or self.effective_rank < COLLAPSE_RANK

    def as_dict(self) -> dict[str, float | bool]:
        return {"feature_std": self.feature_std, "effective_rank": self.effective_rank, "dim": self.dim,
                "collapsed": self.collapsed}


@torch.no_grad()
def feature_std(z: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension std of the L2-normalized features, times sqrt(d)."""
    z = F.normalize(z.detach().float(), dim=1)
    if z.shape[0] < 2:
        return torch.zeros((), device=z.device)
    return z.std(dim=0).mean() * z.shape[1] ** 0.5


@torch.no_grad()
def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """exp(H(p)), p = singular values of the centred features / their sum; 0 for constant features."""
    z = z.detach().float()
    z = z - z.mean(dim=0)
    s = torch.linalg.svdvals(z)
    total = s.sum()
    if total <= eps * max(1.0, float(z.abs().max()) if z.numel() else 1.0):
        return torch.zeros((), device=z.device)
    p = s / total
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


def diagnose(z: torch.Tensor) -> Diagnosis:
    return Diagnosis(float(feature_std(z)), float(effective_rank(z)), int(z.shape[1]))


def codebook_health(codes: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """How a quantizer uses its codebook, the same numbers for every quantizer (wav2vec 2.0, vq-wav2vec,
    HuBERT's k-means, BEST-RQ, VQ-VAE): `codebook_perplexity` = exp(entropy of the code histogram) (= the
    codebook size when codes are used uniformly, 1 when one code takes everything), `used_codes`,
    `dead_codes` (never chosen in this batch) and `code_usage` (used / size). `codes` is (N,) or (N, groups)
    of code ids; with groups, each group is a codebook of `codebook_size` codes and the numbers are their mean."""
    codes = codes.reshape(codes.shape[0], -1) if codes.ndim > 1 else codes.reshape(-1, 1)
    counts = torch.stack([torch.bincount(codes[:, g].long(), minlength=codebook_size)[:codebook_size]
                          for g in range(codes.shape[1])]).float()
    p = counts / counts.sum(1, keepdim=True).clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1)
    used = (counts > 0).float().sum(1)
    return {"codebook_perplexity": entropy.exp().mean(), "used_codes": used.mean(),
            "dead_codes": (codebook_size - used).mean(), "code_usage": (used / codebook_size).mean()}
