"""Variational auto-encoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"; Higgins et al. 2017,
"beta-VAE"; KL warm-up of Bowman et al. 2016 / Sønderby et al. 2016; free bits of Kingma et al. 2016,
"Improved Variational Inference with Inverse Autoregressive Flow").

Predicts: the table row (image, window of log-mel frames) from a latent z ~ q(z|x) = N(mu(x), diag sigma^2(x))
sampled with the reparameterization trick, under a unit-variance Gaussian likelihood; the loss is the negative ELBO
0.5 * ||x - x_hat||^2 + beta * w(step) * KL(q(z|x) || N(0, I)), with w rising linearly from 0 to 1 over
`kl_warmup_steps` and each latent dimension's batch-mean KL floored at `free_bits` nats. The score is the
negative ELBO at z = mu (reconstruction at the mean plus the KL; deterministic) or, with
`score: reconstruction`, the mean squared reconstruction error at z = mu.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from selfsup.config import bounded
from selfsup.objectives.autoencoder_base import TableObjective, row_error, row_sse
from selfsup.registry import register_objective


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-dimension KL(N(mu, exp(logvar)) || N(0, 1)) = 0.5 (mu^2 + sigma^2 - log sigma^2 - 1), closed form."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


@register_objective("vae")
class VAE(TableObjective):
    code_multiplier = 2  # mean and log-variance

    @dataclasses.dataclass
    class Options:
        beta: float = bounded(1.0, ge=0, doc="weight of the KL term (beta-VAE)")
        kl_warmup_steps: int = bounded(100, ge=0, doc="steps over which the KL weight rises from 0 to beta")
        free_bits: float = bounded(0.0, ge=0, doc="nats per latent dimension below which KL is not penalized")
        score: Literal["elbo", "reconstruction"] = "elbo"

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        start = 1.0 if self.options.kl_warmup_steps == 0 else 0.0
        self.register_buffer("kl_weight", torch.tensor(start))  # saved with checkpoints: resume-exact

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        recon = 0.5 * row_sse(self.decoder(z), x)
        kl_dims = gaussian_kl(mu, logvar).mean(0)  # (latent,) batch mean per dimension
        kl_penalized = kl_dims.clamp_min(self.options.free_bits).sum()
        loss = recon.mean() + self.options.beta * self.kl_weight * kl_penalized
        return {"loss": loss, "reconstruction": recon.mean(), "kl": kl_dims.sum(), "kl_weight": self.kl_weight,
                "active_dims": (kl_dims > 0.01).float().sum(), "n_rows": batch["n_rows"]}

    def on_step_end(self, step: int, max_steps: int) -> None:
        warm = self.options.kl_warmup_steps
        self.kl_weight.fill_(1.0 if warm == 0 else min(1.0, step / warm))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.posterior(x)
        recon = self.decoder(mu)
        if self.options.score == "reconstruction":
            return row_error(recon, x)
        return 0.5 * row_sse(recon, x) + gaussian_kl(mu, logvar).sum(1)
