"""AdaIN-VC (Chou, Yeh & Lee 2019, "One-shot Voice Conversion by Separating Speaker and Content Representations
with Instance Normalization").

Predicts: an utterance's log-mel frames from two codes of the same utterance — the content code of an encoder
whose instance normalization (no affine parameters) strips per-channel utterance statistics, and one pooled
speaker vector — through a decoder that applies the speaker vector by adaptive instance normalization. Loss: L1
reconstruction over the real frames plus `kl_weight` x the KL divergence of the content code's Gaussian (mean
and log-variance per frame and channel) from N(0, I), as in the paper; training decodes a sample of the code,
held-out loss and conversion its mean. Converting = the content code of one clip, the speaker vector of another.

The export (`model/`) is `model.safetensors` (the three networks), `config.json` (format, objective, resolved
recipe) and `preprocessing.json` (the front end: frame spec and the normalization to undo before inverting the
mel frames). `load_vc_model(folder)` rebuilds it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from selfsup.backbones.adain_vc import AdainVC
from selfsup.config import bounded
from selfsup.data.audio import AudioFrontEnd
from selfsup.errors import SelfsupError
from selfsup.fileio import selfsup_model_folder
from selfsup.objectives.base import Objective, Prepared
from selfsup.objectives.speech_base import SpeechObjective, lengths_mask
from selfsup.objectives.speech_reconstruction import masked_l1
from selfsup.registry import register_objective

MODEL_FORMAT = "selfsup-voice-conversion"


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real frames (and channels) of KL(N(mu, exp(log_var)) || N(0, 1)) of (B, C, T) codes."""
    kl = 0.5 * (log_var.exp() + mu.pow(2) - 1.0 - log_var)
    m = mask[:, None, :].to(kl.dtype).expand_as(kl)
    return (kl * m).sum() / m.sum().clamp_min(1.0)


@register_objective("adain_vc")
class AdainVCObjective(SpeechObjective):
    modality = "voice"
    default_backbone = "adain-vc"
    inputs = ("logmel",)

    @dataclasses.dataclass
    class Options:
        kl_weight: float = bounded(0.1, ge=0, doc="weight of the content code's KL term (the paper's 1/10 of "
                                                  "the reconstruction weight)")

    @classmethod
    def check_recipe(cls, recipe) -> None:
        if recipe.data.normalize == "utterance":  # its per-clip statistics are not saved: no way back to mels
            raise SelfsupError("data.normalize: adain_vc needs 'global' or 'none' (the converted frames are "
                               "turned back into audio, which per-utterance normalization cannot undo)")

    def __init__(self, recipe, prepared: Prepared):
        # not SpeechObjective.__init__: it builds a transformers encoder; this method owns three small networks
        Objective.__init__(self, recipe, prepared)
        self.front: AudioFrontEnd = prepared.extras["front"]
        self.num_classes = 0
        self.rate = self.front.spec.frame_rate
        crop = recipe.data.crop_seconds
        self.crop = int(round(crop * self.rate)) if crop else None
        self.probe_batch = None
        self.net = AdainVC(recipe.model, self.front.spec.n_mels)

    def callbacks(self) -> list:
        return []

    def codes(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, n_mels) normalized frames -> content mean, log-variance (B, content_dim, T), speaker (B, S)."""
        x = frames.transpose(1, 2)
        mu, log_var = self.net.content(x, mask)
        return mu, log_var, self.net.speaker(x, mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["inputs"]
        mask = lengths_mask(batch["lengths"], x.shape[1])
        mu, log_var, speaker = self.codes(x, mask)
        content = mu + torch.randn_like(mu) * (0.5 * log_var).exp() * mask[:, None] if self.training else mu
        recon = self.net.decoder(content, speaker, mask).transpose(1, 2)
        rec, kl = masked_l1(recon, x, mask), gaussian_kl(mu, log_var, mask)
        return {"loss": rec + self.options.kl_weight * kl, "reconstruction_l1": rec.detach(), "kl": kl.detach(),
                "n_seconds": batch["n_seconds"]}

    @torch.no_grad()
    def convert(self, content: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """Raw log-mel frames (T, n_mels) of the content clip and (T', n_mels) of the speaker clip -> (T, n_mels)
        raw log-mel frames: the first clip's content in the second clip's voice (normalization applied and
        undone with the saved front end)."""
        c, s = (torch.from_numpy(self.front.apply(np.asarray(a, np.float32)))[None] for a in (content, speaker))
        mask_c, mask_s = (torch.ones(1, t.shape[1], dtype=torch.bool) for t in (c, s))
        mu = self.net.content(c.transpose(1, 2), mask_c)[0]
        voice = self.net.speaker(s.transpose(1, 2), mask_s)
        out = self.net.decoder(mu, voice, mask_c).transpose(1, 2)[0].numpy()
        if self.front.normalize == "global" and self.front.mean is not None:
            out = out * np.asarray(self.front.std, np.float32) + np.asarray(self.front.mean, np.float32)
        return out.astype(np.float32)

    def export(self, folder) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / "model.safetensors"))
        config = {"format": MODEL_FORMAT, "objective": self.name, "recipe": self.recipe.to_dict()}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / "preprocessing.json").write_text(json.dumps(self.front.to_dict(), indent=2) + "\n")


def vc_model_folder(path: str | Path) -> Path:
    """A voice-conversion run folder or its `model/` -> the folder holding config.json and the weights."""
    return selfsup_model_folder(path, MODEL_FORMAT, "a voice-conversion model",
                                "train one with `selfsup pretrain adain_vc`")[0]


def load_vc_model(path: str | Path) -> AdainVCObjective:
    """Rebuild a saved AdaIN-VC model (eval mode, on the CPU) with its front end."""
    from safetensors.torch import load_file

    from selfsup.recipes import load_recipe

    folder = vc_model_folder(path)
    try:
        config = json.loads((folder / "config.json").read_text())
        front = AudioFrontEnd.from_dict(json.loads((folder / "preprocessing.json").read_text()))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise SelfsupError(f"{folder}: unreadable model config ({type(e).__name__}: {e})") from None
    model = AdainVCObjective(load_recipe(config["recipe"]), Prepared([], [], {"front": front}))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.eval()
