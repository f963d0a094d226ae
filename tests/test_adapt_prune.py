"""Structured pruning (`selfsup prune`) of a fine-tuned 4-layer, 4-head BERT: head importance is the gate
gradient of Michel et al. 2019 (checked against finite differences), a zero gate equals a sliced-out head,
pruning nothing changes nothing, head-pruned and layer-dropped models reload in plain transformers (a fresh
process without selfsup) with the in-memory pruned model's logits, the sweep writes its table and plot, and
bad input is a one-line error (exit 2)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import run_cli
from selfsup.adapt.core.evaluation import evaluate_finetuned
from selfsup.adapt.core.features import collate, encode
from selfsup.adapt.core.options import FinetuneConfig
from selfsup.adapt.core.artifacts import load_finetuned
from selfsup.adapt.core.models import count_parameters
from selfsup.adapt.shared.surgery import (gated_heads, head_counts, head_importance, heads_to_prune, keep_layers,
                                          layers_to_keep, load_pruned, per_example_loss, remove_heads)
from selfsup.adapt.tools.prune import prune
from selfsup.adapt.core.kinds import Columns
from selfsup.adapt.core.tasks import read_task
from selfsup.errors import SelfsupError
from test_adapt_distill import tiny_teacher
from test_adapt_heads import make_checkpoint

SENTENCES = ["Anne walked to Bath in the evening .", "Captain Wentworth wrote a letter to her ."]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, persuasion):
    return tiny_teacher(tmp_path_factory.mktemp("prune"), persuasion)


@pytest.fixture(scope="module")
def loaded(teacher):
    model, tok, info = load_finetuned(teacher["teacher"])
    examples = read_task(teacher["eval"], "sequence-classification", Columns("text", None, "label"))[:24]
    feats = encode("sequence-classification", tok, examples, info["labels"], 48, True, FinetuneConfig())
    return model, tok, feats


def _logits(model, tok):
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


# ------------------------------------------------------------------------------------------- importance

def test_head_importance_is_the_mean_absolute_gate_gradient(loaded):
    model, tok, feats = loaded
    raw, normalised = head_importance(model, feats, "sequence-classification", 8, tok.pad_token_id, "cpu")
    assert raw.shape == normalised.shape == (4, 4)
    assert np.isfinite(raw).all() and (raw > 0).all()
    assert np.allclose(np.linalg.norm(normalised, axis=1), 1.0)  # Michel et al.'s layer-wise L2 normalisation
    # one example in float64: |dL/d gate| equals a central finite difference of the loss in that gate
    exact = model.double()
    try:
        one, _ = head_importance(exact, feats[:1], "sequence-classification", 1, tok.pad_token_id, "cpu")
        batch = collate(feats[:1], tok.pad_token_id, "cpu")
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        eps = 1e-4
        for layer, head in ((0, 0), (2, 3), (3, 1)):
            losses = []
            for sign in (1, -1):
                gates = torch.ones(4, 4, dtype=torch.float64)
                gates[layer, head] += sign * eps
                with torch.no_grad(), gated_heads(exact, gates):
                    losses.append(per_example_loss(exact(**inputs).logits, batch["labels"],
                                                   "sequence-classification").item())
            assert one[layer, head] == pytest.approx(abs(losses[0] - losses[1]) / (2 * eps), rel=1e-4, abs=1e-9)
    finally:
        model.float()


def test_heads_to_prune_ranks_globally_and_keeps_one_head_per_layer():
    importance = np.array([[0.1, 0.9, 0.5], [0.2, 0.3, 0.05]])
    assert heads_to_prune(importance, 2) == {0: [0], 1: [2]}
    assert heads_to_prune(importance, 3) == {0: [0], 1: [0, 2]}
    assert heads_to_prune(importance, 6) == {0: [0, 2], 1: [0, 2]}  # never a layer's last head
    assert heads_to_prune(importance, 0) == {}


def test_layers_to_keep():
    assert layers_to_keep([0.3, 0.1, 0.2, 0.05], 2, "importance") == [0, 2]
    assert layers_to_keep([0.3, 0.1, 0.2, 0.05], 2, "top") == [0, 1]


# ------------------------------------------------------------------------------------------------ surgery

def test_zero_gate_equals_removed_head_and_pruning_nothing_changes_nothing(loaded):
    model, tok, _ = loaded
    before = _logits(model, tok)
    assert torch.equal(_logits(remove_heads(model, {}), tok), before)
    gates = torch.ones(4, 4)
    gates[1, 2] = gates[3, 0] = gates[3, 3] = 0.0
    with gated_heads(model, gates):
        gated = _logits(model, tok)
    sliced = remove_heads(model, {1: [2], 3: [0, 3]})
    assert head_counts(sliced) == [4, 3, 4, 2] and head_counts(model) == [4, 4, 4, 4]
    assert torch.allclose(_logits(sliced, tok), gated, atol=1e-6)
    assert not torch.allclose(gated, before, atol=1e-4)
    d = 32 // 4  # (q, k, v: d x 32 + d each; output: 32 x d) per removed head
    assert count_parameters(model)[1] - count_parameters(sliced)[1] == 3 * (3 * (d * 32 + d) + 32 * d)
    with pytest.raises(SelfsupError, match="cannot remove all"):
        remove_heads(model, {0: [0, 1, 2, 3]})


def test_keep_layers_copies_the_chosen_blocks(loaded):
    model, tok, _ = loaded
    smaller = keep_layers(model, [0, 3])
    assert smaller.config.num_hidden_layers == 2 and model.config.num_hidden_layers == 4
    assert torch.equal(smaller.bert.encoder.layer[1].attention.self.query.weight,
                       model.bert.encoder.layer[3].attention.self.query.weight)
    assert len(model.bert.encoder.layer) == 4  # the original is untouched


# ------------------------------------------------------------------------------------- saved, reloaded

_PLAIN = r"""
import json, sys, torch, transformers as tf
result = []
for folder in sys.argv[2:]:
    model = tf.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = tf.AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tok(json.loads(sys.argv[1]), padding=True, return_tensors="pt")).logits
    result.append({"logits": logits.tolist(), "layers": len(model.bert.encoder.layer)})
assert not any(name.startswith("selfsup") for name in sys.modules)
print(json.dumps(result))
"""


def _plain_logits(*folders):
    """Logits of each saved model, loaded in a fresh process by plain transformers (selfsup never imported)."""
    r = subprocess.run([sys.executable, "-c", _PLAIN, json.dumps(SENTENCES), *map(str, folders)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return [(torch.tensor(o["logits"]), o["layers"]) for o in json.loads(r.stdout.strip().splitlines()[-1])]


def test_pruned_models_reload_in_plain_transformers(teacher, loaded, tmp_path):
    model, tok, _ = loaded
    fast = ["threads=1"]
    heads = prune(teacher["teacher"], teacher["eval"], tmp_path / "heads", heads=0.5,
                  importance_data=teacher["train"], overrides=fast)
    layers = prune(teacher["teacher"], teacher["eval"], tmp_path / "layers", layers=2, overrides=fast)
    (head_logits, head_depth), (layer_logits, layer_depth) = _plain_logits(tmp_path / "heads" / "model",
                                                                           tmp_path / "layers" / "model")

    pruned = {int(k): v for k, v in heads["pruned"]["pruned_heads"].items()}
    assert sum(len(v) for v in pruned.values()) == 8 and heads["pruned"]["heads"] == 8
    in_memory = remove_heads(model, pruned)
    assert head_depth == 4 and torch.allclose(head_logits, _logits(in_memory, tok), atol=1e-5)
    sliced, _, _ = load_pruned(tmp_path / "heads")
    assert head_counts(sliced) == head_counts(in_memory)
    assert count_parameters(sliced)[1] == heads["pruned"]["parameters"] < heads["original"]["parameters"]
    assert heads["compression"] > 1

    kept = layers["pruned"]["kept_layers"]
    assert len(kept) == 2 and kept == sorted(kept) and len(layers["layer_importance"]) == 4
    assert layer_depth == 2 and torch.allclose(layer_logits, _logits(keep_layers(model, kept), tok), atol=1e-5)
    again = evaluate_finetuned(tmp_path / "layers", teacher["eval"])["eval"]
    assert again["accuracy"] == pytest.approx(layers["pruned"]["accuracy"])
    for name in ("table.md", "table.json", "size_accuracy.png", "metrics.json"):
        assert (tmp_path / "layers" / name).is_file()


def test_sweep_writes_the_table_and_the_plot(teacher, tmp_path):
    m = prune(teacher["teacher"], teacher["eval"], tmp_path / "sweep", sweep=True,
              importance_data=teacher["train"], overrides=["threads=1"])
    rows = m["rows"]
    assert [r["method"] for r in rows] == ["none"] + ["heads"] * 3 + ["layers"] * 3
    assert [r["heads"] for r in rows] == [16, 12, 8, 4, 12, 8, 4]
    assert [r["layers"] for r in rows] == [4, 4, 4, 4, 3, 2, 1]
    for method in ("heads", "layers"):
        sizes = [rows[0]["parameters"]] + [r["parameters"] for r in rows if r["method"] == method]
        assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    assert all(0 <= r["accuracy"] <= 1 and r["eval_seconds"] > 0 for r in rows)
    table = (tmp_path / "sweep" / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(rows) and "accuracy" in table[0]
    assert json.loads((tmp_path / "sweep" / "table.json").read_text())[3]["heads"] == 4
    assert (tmp_path / "sweep" / "size_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "sweep" / "model").exists()


# ------------------------------------------------------------------------------------------ bad input

def test_bad_input_is_one_line(teacher, tmp_path):
    common = ["prune", "--model", str(teacher["teacher"]), "--eval", teacher["eval"], "--out", str(tmp_path / "o")]
    for args, words in ((common + ["--heads", "1.5"], "--heads"), (common + ["--layers", "0"], "--layers"),
                        (common + ["--layers", "9"], "has 4 layers"),
                        (["prune", "--model", str(teacher["checkpoint"]), "--eval", teacher["eval"], "--out",
                          str(tmp_path / "o"), "--layers", "1"], "not a fine-tuned model")):
        r = run_cli(*args)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(SelfsupError, match="not empty"):
        prune(teacher["teacher"], teacher["eval"], tmp_path / "full", layers=1)


def test_albert_is_refused(tmp_path, persuasion):
    from selfsup.adapt.core.models import build_model, load_tokenizer, save_task

    texts = [t for t in persuasion.read_text().split("\n\n")[:100] if t.strip()]
    path = make_checkpoint(tmp_path, "albert", texts)
    tok = load_tokenizer(path)
    model, _ = build_model(path, "sequence-classification", ["a", "b"], tok)
    model.save_pretrained(tmp_path / "tuned")
    save_task(tmp_path / "tuned", {"kind": "sequence-classification", "labels": ["a", "b"], "max_length": 48})
    with pytest.raises(SelfsupError, match="albert shares one set of weights"):
        prune(tmp_path / "tuned", "unused.jsonl", tmp_path / "o", layers=1)
