"""Text backbones: ALBERT's factorized embeddings and cross-layer sharing; every family exports to plain
transformers."""
from __future__ import annotations

import pytest
import torch

from selfsup.backbones.text import TextBackbone, build_text_model, masked_lm_parts
from selfsup.data.tokenizer import TokenizerConfig, train_tokenizer

TEXT = ["It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TokenizerConfig(vocab_size=200, min_frequency=1), TEXT)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_albert_factorized_embeddings_and_shared_layers(tokenizer):
    cfg = TextBackbone.Config(type="albert", hidden_size=64, embedding_size=16, num_layers=4, num_heads=2,
                              intermediate_size=128, max_length=32)
    shared = build_text_model(cfg, "masked-lm", tokenizer)
    assert shared.albert.embeddings.word_embeddings.weight.shape == (len(tokenizer), 16)
    assert shared.albert.encoder.embedding_hidden_mapping_in.weight.shape == (64, 16)
    deeper = build_text_model(TextBackbone.Config(**{**cfg.__dict__, "num_layers": 8}), "masked-lm", tokenizer)
    assert _params(deeper) == _params(shared)  # one set of layer weights, reused at every depth
    unshared = build_text_model(TextBackbone.Config(**{**cfg.__dict__, "share_layers": False}), "masked-lm",
                                tokenizer)
    layer = sum(p.numel() for p in shared.albert.encoder.albert_layer_groups[0].parameters())
    assert _params(unshared) - _params(shared) == 3 * layer


@pytest.mark.parametrize("kind, head, auto", [
    ("bert", "pretraining", "AutoModelForMaskedLM"), ("albert", "pretraining", "AutoModelForMaskedLM"),
    ("roberta", "masked-lm", "AutoModelForMaskedLM"), ("roformer", "masked-lm", "AutoModelForMaskedLM"),
    ("gpt2", "causal-lm", "AutoModelForCausalLM"),
    ("bart", "seq2seq-lm", "AutoModelForSeq2SeqLM"),
])
def test_every_family_exports_to_plain_transformers(tmp_path, tokenizer, kind, head, auto):
    import transformers

    cfg = TextBackbone.Config(type=kind, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                              max_length=32, dropout=0.0)
    model = build_text_model(cfg, head, tokenizer).eval()
    model.save_pretrained(tmp_path)
    loaded = getattr(transformers, auto).from_pretrained(tmp_path).eval()
    ids = torch.tensor([tokenizer("a single man in want of a wife")["input_ids"]])
    with torch.no_grad():
        if kind == "bart":
            a, b = model(input_ids=ids, decoder_input_ids=ids).logits, loaded(input_ids=ids, decoder_input_ids=ids).logits
        elif head == "pretraining":
            a, b = model(input_ids=ids).prediction_logits, loaded(input_ids=ids).logits
        else:
            a, b = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "albert", "roberta", "roformer"])
def test_masked_positions_only_head_equals_full_logits(tokenizer, kind):
    cfg = TextBackbone.Config(type=kind, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                              max_length=32, dropout=0.0)
    model = build_text_model(cfg, "masked-lm", tokenizer).eval()
    encoder, head = masked_lm_parts(model)
    ids = torch.tensor([tokenizer("a single man in want of a wife")["input_ids"]])
    chosen = torch.zeros_like(ids, dtype=torch.bool)
    chosen[0, [2, 5]] = True
    with torch.no_grad():
        full = model(input_ids=ids).logits[chosen]
        partial = head(encoder(input_ids=ids).last_hidden_state[chosen])
    assert torch.allclose(full, partial, atol=1e-5)
