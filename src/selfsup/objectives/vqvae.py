"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning"), with an EMA
codebook (its appendix; Razavi et al. 2019, VQ-VAE-2), k-means initialization and dead-code replacement
(Dhariwal et al. 2020, Jukebox), from `vector-quantize-pytorch`'s `VectorQuantize`.

Predicts: the table row (image, frame window) from a discrete code: the encoder's bottleneck is cut into
`groups` vectors, each replaced by its nearest entry of one shared codebook (straight-through gradient to the encoder), and the
decoder reconstructs the row from the quantized vectors. Loss = mean squared reconstruction error +
commitment cost * ||z - sg[q]||^2; the codebook follows the EMA of its assigned vectors, and a code whose EMA
count falls below `dead_code_threshold` is replaced by a vector of the current batch. Logs
`diagnostics.codebook_health` (perplexity, used / dead codes). Score: the reconstruction error.
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.config import bounded
from selfsup.diagnostics import codebook_health
from selfsup.errors import SelfsupError
from selfsup.objectives.autoencoder_base import TableObjective, row_error
from selfsup.registry import register_objective


def vector_quantizer(dim: int, codebook_size: int, options) -> torch.nn.Module:
    from vector_quantize_pytorch import VectorQuantize

    return VectorQuantize(dim=dim, codebook_size=codebook_size, decay=options.ema_decay,
                          commitment_weight=options.commitment_cost, kmeans_init=options.kmeans_init,
                          kmeans_iters=10, threshold_ema_dead_code=options.dead_code_threshold,
                          rotation_trick=False, sync_codebook=False)  # the paper's straight-through estimator


@register_objective("vqvae")
class VQVAE(TableObjective):

    @dataclasses.dataclass
    class Options:
        codebook_size: int = bounded(32, gt=1)
        groups: int = bounded(4, gt=0, doc="the bottleneck is cut into this many vectors, each quantized")
        commitment_cost: float = bounded(0.25, ge=0, doc="beta of the commitment term")
        ema_decay: float = bounded(0.9, gt=0, lt=1, doc="EMA decay of the codebook")
        kmeans_init: bool = True
        dead_code_threshold: float = bounded(1.0, ge=0, doc="EMA count below which a code is replaced; 0 = never")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        if recipe.model.bottleneck % recipe.objective.groups:
            raise SelfsupError(f"objective.groups: {recipe.objective.groups} does not divide model.bottleneck="
                               f"{recipe.model.bottleneck}")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        o = self.options
        self.code_dim = recipe.model.bottleneck // o.groups
        self.quantizer = vector_quantizer(self.code_dim, o.codebook_size, o)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(quantized (B, bottleneck), codes (B, groups), commitment loss)."""
        z = self.encoder(x)
        q, codes, commit = self.quantizer(z.view(len(z), self.options.groups, self.code_dim))
        return q.reshape(len(z), -1), codes, commit.sum()

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(x)[1]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        q, codes, commit = self.quantize(x)
        recon = row_error(self.decoder(q), x).mean()
        health = codebook_health(codes.reshape(-1), self.options.codebook_size)  # one shared codebook
        return {"loss": recon + commit, "reconstruction": recon, "commitment": commit, **health,
                "n_rows": batch["n_rows"]}

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantize(x)[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(x)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The probes' features: the continuous code before quantization (the quantized one takes at most
        codebook_size ** groups values, a coarser input for a linear head)."""
        return self.encoder(x)
