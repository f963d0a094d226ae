"""Shared plumbing of the text objectives: tokenizer, cached corpus, examples, HF export."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from selfsup.data.corpus import TextDataConfig, TokenCorpus, build_corpus, get_tokenizer
from selfsup.data.tokenizer import special_ids
from selfsup.errors import SelfsupError
from selfsup.objectives.base import Objective, Prepared, split_indices


class PackedBlocks(Sequence):
    """Fixed-length windows over the token stream, no padding: each is `prefix + tokens[i*w:(i+1)*w] + suffix`
    (documents are separated inside the stream by the separator token)."""

    def __init__(self, corpus: TokenCorpus, window: int, indices: np.ndarray):
        self.corpus, self.window, self.indices = corpus, window, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        start = int(self.indices[i]) * self.window
        end = start + self.window
        return np.asarray(self.corpus.tokens[start:end]), np.asarray(self.corpus.word_start[start:end])


class SentenceChunks(Sequence):
    """Runs of consecutive sentences of one document, greedily filled up to `max_tokens` (BERT's
    `create_instances_from_document`); an example is (its sentences, a random other chunk's sentences)."""

    def __init__(self, corpus: TokenCorpus, chunks: np.ndarray, all_chunks: np.ndarray, max_tokens: int):
        self.corpus, self.chunks, self.all_chunks, self.max_tokens = corpus, chunks, all_chunks, max_tokens

    def __len__(self) -> int:
        return len(self.chunks)

    def sentences(self, chunk: np.ndarray) -> list[np.ndarray]:
        """Each sentence as an (n, 2) array of [token id, word-start flag] rows."""
        s, c = self.corpus.sentences, self.corpus
        return [np.stack([c.tokens[a:b], c.word_start[a:b]], axis=1).astype(np.int64)
                for a, b in ((int(s[j, 0]), min(int(s[j, 1]), int(s[j, 0]) + self.max_tokens))
                             for j in range(int(chunk[0]), int(chunk[1])))]

    def __getitem__(self, i: int) -> Any:
        return i, self.sentences(self.chunks[i])

    def random_other(self, i: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Sentences of a chunk other than chunk i and its neighbours (a "random next sentence")."""
        own = int(self.chunks[i][0])
        for _ in range(10):
            j = int(rng.integers(len(self.all_chunks)))
            if abs(int(self.all_chunks[j][0]) - own) > 1 or len(self.all_chunks) < 4:
                break
        return self.sentences(self.all_chunks[j])


def sentence_chunks(corpus: TokenCorpus, max_tokens: int) -> np.ndarray:
    """(n, 2) [first, last+1) sentence ranges, each within one document and <= max_tokens long (a longer
    sentence is a chunk of its own and gets truncated)."""
    lengths = corpus.sentences[:, 1] - corpus.sentences[:, 0]
    out = []
    for first, stop in corpus.doc_sentence_ranges():
        start, total = int(first), 0
        for j in range(int(first), int(stop)):
            if total and total + lengths[j] > max_tokens:
                out.append((start, j))
                start, total = j, 0
            total += int(lengths[j])
        out.append((start, int(stop)))
    return np.asarray(out, dtype=np.int64)


def pad_stack(rows: list[np.ndarray], fill: int) -> torch.Tensor:
    """Right-pad 1-D int arrays to the longest and stack them into a (batch, width) int64 tensor."""
    out = np.full((len(rows), max(len(r) for r in rows)), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return torch.from_numpy(out)


class TextObjective(Objective):
    modality = "text"
    default_backbone = "bert"
    # how examples are cut: "blocks" (packed, MLM/CLM) or "sentences" (NSP/SOP, BART)
    example_kind = "blocks"
    # special tokens wrapped around a packed block: "cls-sep" (BERT), "none" (GPT)
    block_specials = "cls-sep"

    @classmethod
    def data_config_class(cls) -> type:
        return TextDataConfig

    @classmethod
    def check_recipe(cls, recipe) -> None:
        if recipe.data.block_size > recipe.model.max_length and not recipe.model.from_pretrained:
            raise SelfsupError(f"data.block_size: {recipe.data.block_size} exceeds model.max_length "
                               f"({recipe.model.max_length})")
        if recipe.data.streaming and cls.example_kind_for(recipe) != "blocks":
            raise SelfsupError(f"data.streaming: {recipe.name} reads sentence chunks; streaming packs blocks, for "
                               "mlm (sentence_task: none) and clm only")

    @classmethod
    def example_kind_for(cls, recipe) -> str:
        return cls.example_kind

    @classmethod
    def prepare(cls, recipe, sources: list[str]) -> Prepared:
        data: TextDataConfig = recipe.data
        if data.streaming:
            return cls.prepare_stream(recipe, sources)
        tokenizer = get_tokenizer(data.tokenizer, sources, data.text_column,
                                  add_cls_sep=recipe.model.type != "gpt2")
        corpus = build_corpus(sources, data.text_column, tokenizer)
        n_special = 2 if cls.block_specials == "cls-sep" else 0
        if cls.example_kind_for(recipe) == "blocks":
            window = data.block_size - n_special
            n = corpus.n_tokens // window
            if n < 2:
                raise SelfsupError(f"data: {corpus.n_tokens} tokens is too little for two blocks of "
                                   f"{data.block_size} (lower data.block_size or add text)")
            train, held = split_indices(n, data.holdout_fraction, recipe.train.seed, "block")
            return Prepared(PackedBlocks(corpus, window, train), PackedBlocks(corpus, window, held),
                            {"tokenizer": tokenizer, "corpus": corpus})
        budget = data.block_size - 3  # [CLS] A [SEP] B [SEP]
        chunks = sentence_chunks(corpus, budget)
        train, held = split_indices(len(chunks), data.holdout_fraction, recipe.train.seed, "sentence chunk")
        return Prepared(SentenceChunks(corpus, chunks[train], chunks, budget),
                        SentenceChunks(corpus, chunks[held], chunks, budget),
                        {"tokenizer": tokenizer, "corpus": corpus})

    @classmethod
    def prepare_stream(cls, recipe, sources: list[str]) -> Prepared:
        """data.streaming: the shards and how to read them (nothing tokenized ahead), plus the held-out blocks: the
        first train.eval_batches x train.batch_size of the shards in list order (none when holdout_fraction is 0)."""
        from selfsup.data.streaming import StreamSpec, heldout_blocks, list_shards, shard_sample

        data: TextDataConfig = recipe.data
        shards = list_shards(sources)
        tokenizer = get_tokenizer(data.tokenizer, sources, data.text_column, add_cls_sep=recipe.model.type != "gpt2",
                                  sample=lambda budget: shard_sample(shards, data.text_column, budget))
        separator = special_ids(tokenizer)["sep"]
        if separator is None:
            raise SelfsupError("tokenizer: needs a [SEP] or end-of-sequence token to separate documents")
        window = data.block_size - (2 if cls.block_specials == "cls-sep" else 0)
        spec = StreamSpec(shards, data.text_column, tokenizer, window, separator, recipe.train.seed,
                          data.shuffle_buffer)
        n_held = recipe.train.eval_batches * recipe.train.batch_size if data.holdout_fraction > 0 else 0
        held, spec = heldout_blocks(spec, n_held)
        return Prepared(spec, held, {"tokenizer": tokenizer})

    def __init__(self, recipe, prepared: Prepared):
        super().__init__(recipe, prepared)
        self.tokenizer = prepared.extras["tokenizer"]
        self.ids = special_ids(self.tokenizer)
        self.vocab_size = len(self.tokenizer)
        self.special_id_array = np.asarray(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)

    def wrap_block(self, tokens: np.ndarray) -> np.ndarray:
        if self.block_specials == "cls-sep":
            return np.concatenate([[self.ids["cls"]], tokens, [self.ids["sep"]]]).astype(np.int64)
        return tokens.astype(np.int64)

    def heldout_summary(self, heldout: dict[str, float]) -> dict[str, float]:
        """Perplexity = exp(token cross-entropy); for MLM+NSP/SOP the MLM part only (a pseudo-perplexity over
        the masked positions)."""
        loss = heldout.get("heldout_mlm_loss", heldout.get("heldout_loss"))
        return {} if loss is None else {"heldout_perplexity": float(math.exp(min(loss, 50.0)))}

    def export(self, folder) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model.save_pretrained(str(folder), safe_serialization=True)
        # the tokenizer says how long an input the model takes, so `truncation=True` in plain transformers fits
        config = self.model.config
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if positions:
            if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
                positions -= (config.pad_token_id or 1) + 1  # RoBERTa's positions start after the padding id
            self.tokenizer.model_max_length = int(positions)
        self.tokenizer.save_pretrained(str(folder))
