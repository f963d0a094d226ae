"""One-hot-code auto-encoder: a bottleneck of categorical variables trained with the Gumbel-softmax
(Jang, Gu & Poole 2017, "Categorical Reparameterization with Gumbel-Softmax"; Maddison, Mnih & Teh 2017,
"The Concrete Distribution"), straight-through ("ST Gumbel-Softmax", Jang et al. §2.2).

Predicts: the table row (image, frame window) from `objective.groups` categorical variables of
model.bottleneck / groups values each (a code of groups x log2(values) bits). The encoder gives model.bottleneck logits, one row of `values`
per group; in training each group is a Gumbel-softmax sample (torch's `F.gumbel_softmax`) made one-hot in
the forward pass, with the soft sample's gradient in the backward pass; in evaluation it is the one-hot of
the argmax (deterministic). The temperature decays exponentially (as Jang et al. anneal it) from `tau_start` to
`tau_end` over the run: tau(step) = tau_start * (tau_end / tau_start) ** (step / max_steps). The loss is the
mean squared reconstruction error. Logs `diagnostics.codebook_health` (perplexity, used / dead codes per
group) and the temperature. Score: the reconstruction error from the argmax code.
"""
from __future__ import annotations

import dataclasses

import torch

from selfsup.config import bounded
from selfsup.diagnostics import codebook_health
from selfsup.errors import SelfsupError
from selfsup.objectives.autoencoder_base import TableObjective, row_error
from selfsup.objectives.discrete_codes import annealed_temperature, gumbel_onehot  # noqa: F401 (also exported here)
from selfsup.registry import register_objective


@register_objective("onehot_autoencoder")
class OneHotAutoEncoder(TableObjective):

    @dataclasses.dataclass
    class Options:
        groups: int = bounded(4, gt=0, doc="categorical variables; each has model.bottleneck / groups values")
        tau_start: float = bounded(1.0, gt=0, doc="Gumbel-softmax temperature at the first step")
        tau_end: float = bounded(0.5, gt=0, doc="temperature at the last step (exponential decay between)")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        o, width = recipe.objective, recipe.model.bottleneck
        if width % o.groups or width // o.groups < 2:
            raise SelfsupError(f"objective.groups: {o.groups} must divide model.bottleneck={width} into groups of "
                               "at least 2 values")
        if o.tau_end > o.tau_start:
            raise SelfsupError(f"objective.tau_end: {o.tau_end} is above objective.tau_start={o.tau_start} "
                               "(the temperature is annealed downwards)")

    def __init__(self, recipe, prepared):
        super().__init__(recipe, prepared)
        self.values = recipe.model.bottleneck // self.options.groups
        self.register_buffer("temperature", torch.tensor(float(self.options.tau_start)))  # resume-exact

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, groups, values) logits of each group's categorical variable."""
        return self.encoder(x).view(len(x), self.options.groups, self.values)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, groups) the chosen value of each group (argmax, deterministic)."""
        return self.logits(x).argmax(-1)

    def onehot(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, groups * values) decoder input: a straight-through Gumbel sample in training, the argmax else."""
        if self.training:
            code = gumbel_onehot(logits, self.temperature)  # a tensor: no device sync per step
        else:
            code = torch.nn.functional.one_hot(logits.argmax(-1), self.values).to(logits.dtype)
        return code.reshape(len(logits), -1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, groups * values) the argmax one-hot code, the same in training and evaluation."""
        return torch.nn.functional.one_hot(self.codes(x), self.values).float().reshape(len(x), -1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.onehot(self.logits(x)))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        logits = self.logits(x)
        loss = row_error(self.decoder(self.onehot(logits)), x).mean()
        health = codebook_health(logits.detach().argmax(-1), self.values)  # groups codebooks of `values` codes
        return {"loss": loss, **health, "temperature": self.temperature.clone(), "n_rows": batch["n_rows"]}

    def on_step_end(self, step: int, max_steps: int) -> None:
        o = self.options
        self.temperature.fill_(annealed_temperature(step, max_steps, o.tau_start, o.tau_end))
