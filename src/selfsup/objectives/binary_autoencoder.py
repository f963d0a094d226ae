"""Binary-code auto-encoder: a bottleneck of stochastic binary units trained with the straight-through
estimator (Bengio, Léonard & Courville 2013, "Estimating or Propagating Gradients Through Stochastic Neurons
for Conditional Computation"; binary codes of an auto-encoder as in Salakhutdinov & Hinton 2009, "Semantic
Hashing").

Predicts: the table row (image, frame window) from `model.bottleneck` bits. The encoder gives one logit per
bit, p = sigmoid(logit); in training each bit is a sample b ~ Bernoulli(p) whose gradient is passed straight through to p
(d b / d p = 1), in evaluation the code is the deterministic b = [p > 0.5]. The loss is the mean squared
reconstruction error only — no entropy or balance term, as in the straight-through Bernoulli estimator's
paper; the sampling noise itself pushes p towards 0 or 1 (semantic hashing's role for its added noise).
Logs the share of dead bits (the same value on every row of the batch) and the code entropy (mean per-bit
entropy, in bits, of the batch's bit frequencies: 1 = every bit a fair coin over the rows, 0 = a constant
code). Score: the reconstruction error from the deterministic code.
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.objectives.autoencoder_base import TableObjective, row_error
from selfsup.registry import register_objective


def straight_through_bernoulli(p: torch.Tensor) -> torch.Tensor:
    """A sample b ~ Bernoulli(p) whose backward pass is the identity to p (straight-through estimator).

    Written as `sample + (p - p.detach())` rather than `p + (sample - p).detach()`: the same gradient, but the
    forward value is exactly 0 or 1 (p - p is exactly 0, while p + (1 - p) can round off 1 by one ulp).
    torch has no straight-through Bernoulli, hence these two lines by hand."""
    return torch.bernoulli(p.detach()) + (p - p.detach())


def bit_health(bits: torch.Tensor) -> dict[str, torch.Tensor]:
    """How a (N, bits) 0/1 code uses its bits: `dead_bits` = the share of bits equal on every row, and
    `code_entropy` = the mean over bits of the binary entropy (in bits) of each bit's frequency of 1."""
    rate = bits.float().mean(0)
    dead = ((rate == 0) | (rate == 1)).float().mean()
    q = rate.clamp(1e-12, 1 - 1e-12)
    entropy = -(q * torch.log2(q) + (1 - q) * torch.log2(1 - q))
    return {"dead_bits": dead, "code_entropy": torch.where((rate == 0) | (rate == 1), 0.0, entropy).mean()}


@register_objective("binary_autoencoder")
class BinaryAutoEncoder(TableObjective):

    @dataclasses.dataclass
    class Options:
        pass

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bits) probability that each bit is 1."""
        return torch.sigmoid(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bits) deterministic 0/1 code (p > 0.5), the same in training and evaluation."""
        return (self.probabilities(x) > 0.5).float()

    def binarize(self, p: torch.Tensor) -> torch.Tensor:
        """The decoder's input: a straight-through Bernoulli sample in training, the deterministic code else."""
        return straight_through_bernoulli(p) if self.training else (p > 0.5).float()

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.binarize(self.probabilities(x)))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        p = self.probabilities(x)
        loss = row_error(self.decoder(self.binarize(p)), x).mean()
        return {"loss": loss, **bit_health((p.detach() > 0.5).float()), "bit_probability": p.detach().mean(),
                "n_rows": batch["n_rows"]}
