"""Text as the code: unsupervised summarization by an auto-encoder whose code is a word sequence (Wang & Lee
2018, "Learning to Encode Text as Human-Readable Summaries using Generative Adversarial Networks").

Predicts: the document from a K-word code that a generator wrote from the document, while a discriminator,
trained to tell the code from real sentences, keeps the code readable. Generator = GRU encoder over the document
+ attention decoder that writes `objective.code_words` words; reconstructor = GRU encoder over the code +
attention decoder that rewrites the document (teacher-forced cross-entropy, the reconstruction loss);
discriminator = a CNN over word sequences (backbones/word_gru.py). Both decoders can copy a word of their
source (pointer-generator, See et al. 2017): with a few hundred documents most words are too rare to learn.
Each code word is a straight-through Gumbel-softmax sample over the vocabulary (Jang et al. 2017): exactly
one-hot forward, the soft sample's gradient backward — the simplest differentiable discrete code (the paper
uses REINFORCE / WGAN variants instead); it is fed to the next step, so gradients run through the whole code.
Evaluation and `summarize` take the argmax word (deterministic). The temperature is annealed from tau_start
to tau_end. Adversarial loss: the non-saturating GAN loss; `adversarial_weight: 0` is the ablation.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.backbones.word_gru import AttentionDecoder, Discriminator, Encoder
from selfsup.config import bounded
from selfsup.data.summaries import BOS, EOS, PAD, SPECIALS, SummaryDataConfig, WordVocab, read_pairs, \
    real_sentences, words
from selfsup.errors import SelfsupError
from selfsup.fileio import selfsup_model_folder
from selfsup.objectives.base import Objective, Prepared, split_indices
from selfsup.objectives.discrete_codes import annealed_temperature, gumbel_onehot
from selfsup.registry import register_objective

MODEL_FORMAT = "selfsup-text-as-code"


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()  # -log D(real) - log(1 - D(fake))


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()  # -log D(fake): the non-saturating generator loss


@register_objective("text_as_code")
class TextAsCode(Objective):
    modality = "words"
    default_backbone = "word-gru"
    count_key = "n_tokens"

    @dataclasses.dataclass
    class Options:
        code_words: int = bounded(6, gt=0, doc="words of the code (the summary length)")
        adversarial_weight: float = bounded(0.3, ge=0, doc="weight of the generator's adversarial term (0: none)")
        tau_start: float = bounded(1.0, gt=0, doc="Gumbel-softmax temperature at the first step")
        tau_end: float = bounded(0.5, gt=0, doc="temperature at the last step (exponential decay between)")

    @classmethod
    def data_config_class(cls) -> type:
        return SummaryDataConfig

    @classmethod
    def prepare(cls, recipe, sources: list[str]) -> Prepared:
        d, k = recipe.data, recipe.objective.code_words
        pairs = read_pairs(sources, d.document_key, d.summary_key)
        train, held = split_indices(len(pairs), d.holdout_fraction, recipe.train.seed, "document")
        real = real_sentences(d.real_sentences, [pairs[i] for i in train], k)  # never a held-out one
        vocab = WordVocab.build([pairs[i].document for i in train] + real, d.vocab_size, d.min_frequency)
        docs = [vocab.encode(p.document[:d.max_document_words]) for p in pairs]
        return Prepared([docs[i] for i in train], [docs[i] for i in held],
                        {"vocab": vocab, "real": np.stack([vocab.encode(s) for s in real])})

    def __init__(self, recipe, prepared: Prepared):
        super().__init__(recipe, prepared)
        cfg, self.vocab = recipe.model, prepared.extras["vocab"]
        v = len(self.vocab)
        self.real = prepared.extras.get("real")
        self.gen_embed, self.rec_embed = (torch.nn.Embedding(v, cfg.embedding_size) for _ in range(2))
        self.gen_encoder, self.gen_decoder = Encoder(cfg), AttentionDecoder(cfg, v)
        self.rec_encoder, self.rec_decoder = Encoder(cfg), AttentionDecoder(cfg, v)
        self.discriminator = Discriminator(cfg, v)
        never = torch.zeros(v, dtype=torch.bool)
        never[:len(SPECIALS)] = True  # a code is words only: no padding, unknown, begin or end
        self.register_buffer("never", never, persistent=False)
        self.register_buffer("temperature", torch.tensor(float(self.options.tau_start)))  # resume-exact

    def make_batch(self, examples: list[Any], rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        width = max(len(e) for e in examples) + 1
        doc = np.full((len(examples), width), PAD, dtype=np.int64)
        for i, e in enumerate(examples):
            doc[i, :len(e)], doc[i, len(e)] = e, EOS
        batch = {"document": torch.from_numpy(doc)}
        if self.real is not None and len(self.real):  # one unpaired real sentence per example
            batch["real"] = torch.from_numpy(self.real[[int(r.integers(len(self.real))) for r in rngs]])
        return batch

    def code(self, document: torch.Tensor) -> torch.Tensor:
        """(B, T) word ids ([EOS]-terminated, [PAD]-padded) -> (B, K, V) one-hot code: straight-through Gumbel
        samples in training, argmax words in evaluation."""
        mask, source = document != PAD, F.one_hot(document, len(self.vocab)).float()
        states, summary = self.gen_encoder(self.gen_embed(document), mask)
        hidden = self.gen_decoder.initial(summary)
        x = self.gen_embed(torch.full_like(document[:, :1], BOS))
        out = []
        for _ in range(self.options.code_words):
            logits, hidden = self.gen_decoder(x, hidden, states, mask, source)  # log-probabilities
            logits = logits[:, 0].masked_fill(self.never, float("-inf"))
            if self.training:
                word = gumbel_onehot(logits, self.temperature)
            else:
                word = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
            out.append(word)
            x = (word @ self.gen_embed.weight).unsqueeze(1)  # the written word's embedding: gradients flow
        return torch.stack(out, 1)

    def reconstruction_logits(self, code: torch.Tensor, document: torch.Tensor) -> torch.Tensor:
        """(B, T, V) log-probabilities of each document word (targets `document`) from the code,
        teacher-forced (a code word can be copied: the gradient reaches the code through the copy too)."""
        mask = torch.ones(code.shape[:2], dtype=torch.bool, device=code.device)
        states, summary = self.rec_encoder(code @ self.rec_embed.weight, mask)
        inputs = torch.cat([torch.full_like(document[:, :1], BOS), document[:, :-1]], 1)
        logits, _ = self.rec_decoder(self.rec_embed(inputs), self.rec_decoder.initial(summary), states, mask, code)
        return logits

    def reconstruction(self, code: torch.Tensor, document: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy and token accuracy of the document's words (and [EOS]) given the code."""
        logits, real = self.reconstruction_logits(code, document), document != PAD
        loss = F.nll_loss(logits.flatten(0, 1), document.flatten(), ignore_index=PAD)
        return loss, ((logits.argmax(-1) == document) & real).sum() / real.sum()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        document = batch["document"]
        code = self.code(document)
        recon, accuracy = self.reconstruction(code, document)
        # One optimizer trains all three models, so each term reaches only its own model's parameters. The
        # discriminator's term sees the codes detached (no gradient reaches the generator through it); the
        # generator's adversarial term runs the discriminator with detached copies of its parameters
        # (torch.func.functional_call), so it moves the generator and never the discriminator.
        real = F.one_hot(batch["real"], len(self.vocab)).float()
        d_real, d_fake = self.discriminator(real), self.discriminator(code.detach())
        d_loss = discriminator_loss(d_real, d_fake)
        frozen = {k: p.detach() for k, p in self.discriminator.named_parameters()}
        g_adv = generator_adversarial_loss(torch.func.functional_call(self.discriminator, frozen, (code,)))
        loss = recon + self.options.adversarial_weight * g_adv + d_loss
        d_accuracy = ((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2  # on real and on codes
        return {"loss": loss, "recon_loss": recon.detach(), "recon_accuracy": accuracy.detach(),
                "d_loss": d_loss.detach(), "g_adversarial": g_adv.detach(), "d_accuracy": d_accuracy.detach(),
                "temperature": self.temperature.clone(), "n_tokens": (document != PAD).sum()}

    def on_step_end(self, step: int, max_steps: int) -> None:
        o = self.options
        self.temperature.fill_(annealed_temperature(step, max_steps, o.tau_start, o.tau_end))

    def export(self, folder) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"format": MODEL_FORMAT, "objective": self.name, "recipe":
                                                        self.recipe.to_dict(), "vocab": self.vocab.itos}) + "\n")


def load_text_as_code(path: str | Path) -> TextAsCode:
    """A run folder or its model/ -> the trained summarizer (eval mode, CPU)."""
    from safetensors.torch import load_file

    from selfsup.recipes import load_recipe

    folder, config = selfsup_model_folder(path, MODEL_FORMAT, "a text-as-code model",
                                          "train one with `selfsup pretrain text_as_code`")
    model = TextAsCode(load_recipe(config["recipe"]), Prepared([], [], {"vocab": WordVocab(config["vocab"])}))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.eval()


@torch.no_grad()
def summarize(model: TextAsCode, documents: list[str], batch_size: int = 64) -> list[str]:
    """Each document's code (argmax words), as text."""
    model.eval()
    limit, out = model.recipe.data.max_document_words, []
    for start in range(0, len(documents), batch_size):
        ids = [model.vocab.encode(words(d)[:limit]) for d in documents[start:start + batch_size]]
        if any(len(i) == 0 for i in ids):
            raise SelfsupError("summarize: a document has no word")
        batch = model.make_batch(ids, [])
        out += [model.vocab.decode(c) for c in model.code(batch["document"]).argmax(-1)]
    return out
