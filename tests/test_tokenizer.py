"""Trained tokenizers are reproducible: the same text gives the same tokens under the same ids."""
from __future__ import annotations

import pytest

from selfsup.data.tokenizer import SPECIAL_TOKENS, TokenizerConfig, train_tokenizer


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "byte-level-bpe"])
def test_training_twice_gives_the_same_ids(kind, persuasion):
    # tokenizers 0.23 numbers `##x` / `x</w>` tokens in hash-map order (huggingface/tokenizers#1794): before the
    # renumbering, 58 of 500 WordPiece ids differed between two trainings on this text
    texts = [t for t in persuasion.read_text().split("\n\n")[:300] if t.strip()]
    vocabs = [train_tokenizer(TokenizerConfig(kind=kind, vocab_size=500), texts).get_vocab() for _ in range(4)]
    assert all(v == vocabs[0] for v in vocabs[1:])
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=500), texts)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    ids = tok("Anne Elliot walked to Bath.")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "").lower() == "anneelliotwalkedtobath."
