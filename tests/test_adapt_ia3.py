"""(IA)^3 (`--method ia3`, Liu et al. 2022, through peft's IA3Config): the learned vectors start at one (the
adapted model equals its base), the trainable count is one vector per key, value and feed-forward projection
plus the head, a short run learns a real task, and the artifact is small and reloads in plain peft with
selfsup's predictions."""
from __future__ import annotations

import pytest
import torch

from selfsup.adapt.core.evaluation import evaluate_finetuned, predict
from selfsup.adapt.core.models import build_model, count_parameters, load_tokenizer
from selfsup.adapt.core.run import finetune
from selfsup.adapt.registry import get_method
from selfsup.errors import SelfsupError
from test_adapt_heads import make_checkpoint

FAST = ["threads=1", "max_length=48", "batch_size=16"]
H, LAYERS, FFN = 32, 2, 64  # the tiny checkpoints of make_checkpoint
HEAD = (H * H + H) + (H * 2 + 2)  # BERT's pooler (absent from a masked-LM checkpoint) + 2-label classifier


def test_ia3_starts_as_its_base_with_the_expected_trainable_count(tiny_bert):
    bert = tiny_bert
    tok = load_tokenizer(bert)
    model, head = build_model(bert, "sequence-classification", ["a", "b"], tok)
    model.eval()
    batch = tok(["Anne walked to Bath in the evening .", "Captain Wentworth wrote"], padding=True,
                return_tensors="pt")
    with torch.no_grad():
        ref = model(**batch).logits
    wrapped, backbone = get_method("ia3").prepare(model, head, "sequence-classification", None, bert)
    wrapped.eval()
    with torch.no_grad():
        assert torch.allclose(wrapped(**batch).logits, ref, atol=1e-6)
    trainable, _ = count_parameters(wrapped)
    # per layer: key and value rescale their H outputs; the two output.dense (attention, feed-forward) rescale
    # their inputs: H for the attention output, FFN for the feed-forward output (peft's feedforward_modules)
    assert trainable == LAYERS * (H + H + H + FFN) + HEAD


def test_ia3_learns_saves_a_small_artifact_and_reloads_in_plain_peft(tuned_bert, two_novels, tmp_path):
    import transformers as tf
    from peft import PeftModel

    bert = tuned_bert  # a backbone with features: rescaling random features teaches little
    m = finetune(bert, "sequence-classification", two_novels["train"], two_novels["eval"], tmp_path / "run", epochs=6,
                 method="ia3", overrides=FAST + ["lr=3e-2"])
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"] - 0.02
    saved = tmp_path / "run" / "model"
    assert (saved / "adapter_config.json").is_file() and not (saved / "model.safetensors").exists()
    assert m["artifact_bytes"] * 3 < (bert / "model.safetensors").stat().st_size
    assert evaluate_finetuned(tmp_path / "run", two_novels["eval"])["eval"]["accuracy"] == m["eval"]["accuracy"]
    base = tf.AutoModelForSequenceClassification.from_pretrained(bert, num_labels=2)  # the artifact's backbone
    plain = PeftModel.from_pretrained(base, str(saved)).eval()  # base path resolvable from any folder
    import json

    rows = [json.loads(line) for line in open(two_novels["eval"])][:4]
    tok = load_tokenizer(saved)
    enc = tok([r["text"] for r in rows], truncation=True, max_length=48, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(plain(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits,
                              -1)
    labels = m["labels"]
    for p, q in zip(list(predict(tmp_path / "run", two_novels["eval"]))[:4], probs):
        assert [p["probabilities"][lab] for lab in labels] == pytest.approx(q.tolist(), abs=1e-5)


def test_ia3_on_an_unsupported_family_is_a_one_line_error(tmp_path, persuasion, two_novels):
    texts = [t for t in persuasion.read_text().split("\n\n")[:100] if t.strip()]
    albert = make_checkpoint(tmp_path, "albert", texts)
    with pytest.raises(SelfsupError) as e:
        finetune(albert, "sequence-classification", two_novels["train"], two_novels["eval"], tmp_path / "run", max_steps=1,
                 method="ia3", overrides=FAST)
    assert "ia3" in str(e.value) and "albert" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()
