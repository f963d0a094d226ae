"""Small word-level GRU seq2seq pieces (`model.type: word-gru`) for the text-as-code summarizer: a
bidirectional GRU encoder, a GRU decoder with Luong ("general") attention, and a CNN sentence discriminator.

Hand-written (about 80 lines) because every piece must read *embedded* inputs — a straight-through one-hot code
times an embedding matrix — so that gradients reach the code; transformers has no small GRU seq2seq, and its
seq2seq models would be far larger than these few-hundred-document sets need.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F

from selfsup.config import bounded
from selfsup.registry import register_backbone


@register_backbone("word-gru")
class WordGRUBackbone:
    modality = "words"

    @dataclasses.dataclass
    class Config:
        type: Literal["word-gru"] = "word-gru"
        embedding_size: int = bounded(64, gt=0, doc="word embedding width (each of the three models)")
        hidden_size: int = bounded(128, gt=1, doc="GRU width (even: the encoder is two directions of half)")
        discriminator_channels: int = bounded(64, gt=0, doc="the discriminator's convolution channels")
        dropout: float = bounded(0.1, ge=0, lt=1)

        def validate(self) -> None:
            from selfsup.errors import SelfsupError

            if self.hidden_size % 2:
                raise SelfsupError(f"hidden_size: must be even, got {self.hidden_size}")


class Encoder(torch.nn.Module):
    """Embedded words (B, T, E) + mask (B, T) -> states (B, T, H) and a summary (B, H) to start a decoder."""

    def __init__(self, cfg: WordGRUBackbone.Config):
        super().__init__()
        self.gru = torch.nn.GRU(cfg.embedding_size, cfg.hidden_size // 2, batch_first=True, bidirectional=True)
        self.dropout = torch.nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.dropout(x), lengths, batch_first=True,
                                                         enforce_sorted=False)
        out, last = self.gru(packed)
        states, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return states, torch.cat([last[0], last[1]], -1)


class AttentionDecoder(torch.nn.Module):
    """A GRU over embedded inputs (a whole teacher-forced sequence, or one step with the previous state), each
    output attending over the encoder states (Luong et al. 2015, "general" score, no input feeding, so a
    teacher-forced sequence is one GRU call), with a pointer-generator copy (See et al. 2017): the word
    distribution is (1 - g) softmax(vocabulary logits) + g (attention weights @ source one-hots), g a learned
    gate, so a rare word of the source can be written (there are too few documents to learn rare words)."""

    def __init__(self, cfg: WordGRUBackbone.Config, vocab_size: int):
        super().__init__()
        h = cfg.hidden_size
        self.start = torch.nn.Linear(h, h)
        self.gru = torch.nn.GRU(cfg.embedding_size, h, batch_first=True)
        self.score = torch.nn.Linear(h, h, bias=False)
        self.combine = torch.nn.Linear(2 * h, h)
        self.out = torch.nn.Linear(h, vocab_size)
        self.gate = torch.nn.Linear(2 * h, 1)
        self.dropout = torch.nn.Dropout(cfg.dropout)

    def initial(self, summary: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.start(summary)).unsqueeze(0)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, E), hidden (1, B, H), states (B, S, H), mask (B, S), source (B, S, V) one-hot (or
        straight-through) source words -> log-probabilities (B, T, V), last hidden."""
        out, hidden = self.gru(self.dropout(x), hidden)
        scores = out @ self.score(states).transpose(1, 2)  # (B, T, S)
        weights = scores.masked_fill(~mask.bool().unsqueeze(1), float("-inf")).softmax(-1)
        both = torch.cat([out, weights @ states], -1)
        vocab = self.out(self.dropout(torch.tanh(self.combine(both)))).float().softmax(-1)
        g = torch.sigmoid(self.gate(both)).float()
        return torch.log((1 - g) * vocab + g * (weights.float() @ source.float()) + 1e-9), hidden


class Discriminator(torch.nn.Module):
    """(B, K, V) one-hot (or straight-through) word sequences -> (B,) real-sentence logits: embedding,
    one convolution over 3 words, max over time, linear (a SeqGAN-style CNN)."""

    def __init__(self, cfg: WordGRUBackbone.Config, vocab_size: int):
        super().__init__()
        self.embed = torch.nn.Linear(vocab_size, cfg.embedding_size, bias=False)  # one-hot @ E
        self.conv = torch.nn.Conv1d(cfg.embedding_size, cfg.discriminator_channels, 3, padding=1)
        self.head = torch.nn.Linear(cfg.discriminator_channels, 1)

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(self.embed(onehot).transpose(1, 2)))
        return self.head(h.amax(-1)).squeeze(-1)
