"""BitFit (`--method bitfit`, Ben Zaken et al. 2022): exactly the backbone's biases and the task head train, the
other weights stay bit-for-bit the checkpoint's, a short run learns a real task, and the saved model reloads in
plain transformers with selfsup's predictions."""
from __future__ import annotations

import pytest
import torch

from selfsup.adapt.core.evaluation import evaluate_finetuned, predict
from selfsup.adapt.core.models import build_model, count_parameters, load_tokenizer
from selfsup.adapt.core.run import finetune
from selfsup.adapt.registry import get_method

FAST = ["threads=1", "max_length=48", "batch_size=16"]


def test_only_biases_and_the_head_train(tiny_bert):
    bert = tiny_bert
    tok = load_tokenizer(bert)
    model, head = build_model(bert, "sequence-classification", ["a", "b"], tok)
    model, backbone = get_method("bitfit").prepare(model, head, "sequence-classification", None, bert)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias") and n not in head}
    assert trainable == biases | head and biases  # every bias of the backbone, nothing else of it
    n_trainable, total = count_parameters(model)
    assert n_trainable == sum(p.numel() for n, p in model.named_parameters() if n in biases | head)
    assert backbone == total - sum(p.numel() for n, p in model.named_parameters() if n in head)
    assert n_trainable < 0.1 * total


def test_bitfit_learns_keeps_the_weights_and_reloads_in_plain_transformers(tuned_bert, two_novels, tmp_path):
    import transformers as tf

    bert = tuned_bert
    m = finetune(bert, "sequence-classification", two_novels["train"], two_novels["eval"], tmp_path / "run", epochs=6,
                 method="bitfit", overrides=FAST + ["lr=1e-2"])
    assert m["method"] == "bitfit" and m["history"][-1]["train_loss"] < m["history"][0]["train_loss"] - 0.02
    assert m["trainable_percent"] < 10
    saved = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    base = tf.AutoModel.from_pretrained(bert)
    base_weights = {n: p for n, p in base.named_parameters()}
    for name, p in saved.bert.named_parameters():  # non-bias backbone weights: untouched
        if name in base_weights and not name.endswith(".bias"):
            assert torch.equal(p, base_weights[name]), name
    changed = [n for n, p in saved.bert.named_parameters() if n.endswith(".bias") and n in base_weights
               and not torch.equal(p, base_weights[n])]
    assert changed
    again = evaluate_finetuned(tmp_path / "run", two_novels["eval"])
    assert again["eval"]["accuracy"] == m["eval"]["accuracy"]
    preds = list(predict(tmp_path / "run", two_novels["eval"]))
    tok = load_tokenizer(tmp_path / "run" / "model")
    first = preds[:4]
    import json

    rows = [json.loads(line) for line in open(two_novels["eval"])][:4]
    enc = tok([r["text"] for r in rows], truncation=True, max_length=48, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(saved(**enc).logits, -1)
    labels = [saved.config.id2label[i] for i in range(2)]
    for p, q in zip(first, probs):
        assert [p["probabilities"][lab] for lab in labels] == pytest.approx(q.tolist(), abs=1e-5)
