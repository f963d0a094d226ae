"""Task heads: shapes and losses for each kind, and a tiny HF checkpoint of each backbone family (created
here with `save_pretrained`) loads, fine-tunes a few steps, saves, and reloads with the same predictions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adapt_data import write_conll, write_pairs, write_squad
from selfsup.adapt.core.evaluation import evaluate_finetuned
from selfsup.adapt.core.features import collate, encode
from selfsup.adapt.core.options import FinetuneConfig
from selfsup.adapt.core.run import finetune
from selfsup.adapt.core.artifacts import load_finetuned
from selfsup.adapt.core.models import build_model, count_parameters, freeze_backbone, load_tokenizer
from selfsup.adapt.core.kinds import columns_for
from selfsup.adapt.core.tasks import label_set, read_task

FAMILIES = ["bert", "minilm", "albert", "roberta", "gpt2", "llama", "bart"]


def make_checkpoint(folder: Path, family: str, texts: list[str]) -> Path:
    """A tiny model of `family` with a tokenizer trained on `texts`, saved as an HF folder."""
    import transformers as tf

    from selfsup.data.tokenizer import TokenizerConfig, train_tokenizer

    wordpiece = family in ("bert", "minilm", "albert", "roformer")
    tok = train_tokenizer(TokenizerConfig(kind="wordpiece" if wordpiece else "byte-level-bpe", vocab_size=500),
                          texts, add_cls_sep=family not in ("gpt2", "llama"))
    if family in ("gpt2", "llama"):  # decoders usually ship without a padding token
        tok = type(tok)(tokenizer_object=tok.backend_tokenizer, bos_token="[CLS]", eos_token="[SEP]",
                        unk_token="[UNK]")
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=128, **ids)
    config = {
        "bert": lambda: tf.BertConfig(**small),
        "minilm": lambda: tf.BertConfig(**{**small, "hidden_size": 24, "num_hidden_layers": 3,
                                           "num_attention_heads": 3}),
        "albert": lambda: tf.AlbertConfig(embedding_size=16, **small),
        "roformer": lambda: tf.RoFormerConfig(**small),
        "roberta": lambda: tf.RobertaConfig(**{**small, "max_position_embeddings": 132}, type_vocab_size=1),
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, **ids),
        "llama": lambda: tf.LlamaConfig(**small, num_key_value_heads=1),
        "bart": lambda: tf.BartConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                      decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                      max_position_embeddings=128, decoder_start_token_id=tok.eos_token_id,
                                      **ids),
    }[family]()
    auto = {"gpt2": tf.AutoModelForCausalLM, "llama": tf.AutoModelForCausalLM,
            "bart": tf.AutoModelForSeq2SeqLM}.get(family, tf.AutoModelForMaskedLM)
    torch.manual_seed(0)
    auto.from_config(config).save_pretrained(folder / family)
    tok.save_pretrained(folder / family)
    return folder / family


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("adapt-data")
    rows = [{"premise": f"Anne Elliot walked to Bath {i} .", "label": "ab"[i % 2]} for i in range(40)]
    (d / "seq.jsonl").write_text("".join(json.dumps({"text": r["premise"], "label": r["label"]}) + "\n"
                                         for r in rows))
    (d / "reg.jsonl").write_text("".join(json.dumps({"text": r["premise"], "label": i / 10}) + "\n"
                                         for i, r in enumerate(rows)))
    return {"seq": d / "seq.jsonl", "reg": d / "reg.jsonl", "pair": write_pairs(d / "pair.jsonl", 24, 0),
            "tag": write_conll(d / "tag.conll", 16, 0), "qa": write_squad(d / "qa.json", 12, 0)}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, persuasion):
    torch.set_num_threads(1)
    texts = [t for t in persuasion.read_text().split("\n\n")[:600] if t.strip()]
    folder = tmp_path_factory.mktemp("ckpts")
    return {f: make_checkpoint(folder, f, texts) for f in FAMILIES}


KIND_FILES = {"sequence-classification": "seq", "sequence-regression": "reg", "pair-classification": "pair",
              "token-classification": "tag", "extractive-qa": "qa"}


@pytest.mark.parametrize("kind", list(KIND_FILES))
def test_head_shapes_and_losses(kind, files, checkpoints):
    path = checkpoints["bert"]
    tok = load_tokenizer(path)
    ex = read_task(str(files[KIND_FILES[kind]]), kind, columns_for(kind))[:6]
    labels = label_set(ex, "x") if kind in ("sequence-classification", "pair-classification",
                                            "token-classification") else None
    model, head = build_model(path, kind, labels, tok)
    model.eval()
    feats = encode(kind, tok, ex, labels, 64, True, FinetuneConfig(doc_stride=16))
    batch = collate(feats, tok.pad_token_id, "cpu")
    out = model(**batch)
    b, t = batch["input_ids"].shape
    assert "token_type_ids" in batch  # BERT: segment ids (pairs: 0 then 1)
    if kind == "pair-classification":
        assert batch["token_type_ids"][0].max() == 1
    if kind == "extractive-qa":
        assert out.start_logits.shape == out.end_logits.shape == (b, t)
        ref = (F.cross_entropy(out.start_logits, batch["start_positions"])
               + F.cross_entropy(out.end_logits, batch["end_positions"])) / 2
    elif kind == "token-classification":
        assert out.logits.shape == (b, t, len(labels))
        ref = F.cross_entropy(out.logits.reshape(-1, len(labels)), batch["labels"].reshape(-1), ignore_index=-100)
    elif kind == "sequence-regression":
        assert out.logits.shape == (b, 1)
        ref = F.mse_loss(out.logits[:, 0], batch["labels"])
    else:
        assert out.logits.shape == (b, len(labels))
        ref = F.cross_entropy(out.logits, batch["labels"])
    assert torch.allclose(out.loss, ref, atol=1e-5)
    assert head and all(not n.startswith("bert.encoder") for n in head)  # the head: new weights only
    freeze_backbone(model, head)
    trainable, total = count_parameters(model)
    assert 0 < trainable < total / 4


@pytest.mark.parametrize("family", FAMILIES)
def test_each_backbone_family_loads_finetunes_and_reloads(family, files, checkpoints, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    m = finetune(checkpoints[family], "sequence-classification", str(files["seq"]), str(files["seq"]), out,
                 max_steps=3, overrides=["batch_size=8", "max_length=32", "threads=1"])
    assert m["trainable_parameters"] == m["total_parameters"] > 0 and len(m["history"]) == 1
    assert m["eval"]["examples"] == 40 and 0 <= m["eval"]["accuracy"] <= 1
    reloaded = AutoModelForSequenceClassification.from_pretrained(out / "model")  # plain transformers
    assert reloaded.config.id2label == {0: "a", 1: "b"}
    again = evaluate_finetuned(out, str(files["seq"]))
    assert again["eval"]["loss"] == pytest.approx(m["eval"]["loss"], abs=1e-5)


@pytest.mark.parametrize("family,kind", [("bart", "token-classification"), ("gpt2", "token-classification"),
                                         ("roberta", "extractive-qa"), ("bart", "extractive-qa"),
                                         ("llama", "pair-classification"), ("albert", "sequence-regression")])
def test_other_heads_on_other_families(family, kind, files, checkpoints, tmp_path):
    f = str(files[KIND_FILES[kind]])
    m = finetune(checkpoints[family], kind, f, f, tmp_path / "run", max_steps=2,
                 overrides=["batch_size=8", "max_length=48", "doc_stride=16", "threads=1"])
    model, tok, info = load_finetuned(tmp_path / "run")
    assert info["kind"] == kind and m["eval"]["examples"] > 0
    again = evaluate_finetuned(tmp_path / "run", f)
    assert again["eval"]["loss"] == pytest.approx(m["eval"]["loss"], abs=1e-5)
