"""Early exit (`--method early-exit`, `selfsup early-exit`): PABEE's loss weights and patience rule and
DeeBERT's entropy on hand-computed cases; the hand-written layer loop equals each family's own encoder; an
impossible threshold reproduces the full model exactly with batch > 1 and padding; with a mid threshold each
exited row's logits are its exit head's; DeeBERT's stage 2 leaves the backbone alone; joint training learns
real text; save -> reload gives identical logits; the sweep writes its files; bad inputs are one-line errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli
from selfsup.adapt.shared.exit_heads import build_early_exit, refit_exit_heads, run_stage, save_early_exit
from selfsup.adapt.shared.exit_model import (compact_rows, early_exit_predict, intermediate_loss, joint_loss,
                                             pabee_weights, patience_exit_layers, prediction_entropy)
from selfsup.adapt.tools.exit_sweep import exit_sweep
from selfsup.adapt.core.evaluation import evaluate_finetuned, predict
from selfsup.adapt.core.features import collate, encode
from selfsup.adapt.core.options import parse_overrides
from selfsup.adapt.core.run import finetune
from selfsup.adapt.core.artifacts import load_finetuned
from selfsup.adapt.core.models import load_tokenizer, save_task
from selfsup.adapt.core.kinds import columns_for
from selfsup.adapt.core.tasks import read_task
from selfsup.data.austen import austen_novels_task
from selfsup.errors import SelfsupError
from test_adapt_heads import make_checkpoint

LAYERS = 4
FAST = ["threads=1", "max_length=48", "batch_size=16"]
TEXTS = ["Anne Elliot walked to Bath in the evening with her sister and Lady Russell .",
         "Captain Wentworth wrote", "Persuasion", "Sir Walter Elliot , of Kellynch Hall , in Somersetshire",
         "Mary was not so handsome as Elizabeth", "She had been forced into prudence in her youth ."]


def _encoder(folder: Path, family: str, tok_path: Path) -> Path:
    """A tiny LAYERS-deep masked-LM checkpoint of `family` sharing the WordPiece tokenizer at `tok_path`."""
    import transformers as tf

    tok = load_tokenizer(tok_path)
    common = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=132, pad_token_id=tok.pad_token_id)
    config = {"bert": lambda: tf.BertConfig(**common),
              "roberta": lambda: tf.RobertaConfig(**common, type_vocab_size=1),
              "electra": lambda: tf.ElectraConfig(**common, embedding_size=16),
              "roformer": lambda: tf.RoFormerConfig(**common),
              "albert": lambda: tf.AlbertConfig(**common, embedding_size=16)}[family]()
    torch.manual_seed(0)
    tf.AutoModelForMaskedLM.from_config(config).save_pretrained(folder / family)
    tok.save_pretrained(folder / family)
    return folder / family


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, persuasion):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("ee-ck")
    texts = [t for t in persuasion.read_text().split("\n\n")[:300] if t.strip()]
    base = make_checkpoint(folder / "base", "bert", texts)
    return {f: _encoder(folder, f, base) for f in ("bert", "roberta", "electra", "roformer", "albert")}


@pytest.fixture(scope="module")
def novels(tmp_path_factory):
    return austen_novels_task(tmp_path_factory.mktemp("ee-novels"), train_per_class=150, eval_per_class=40,
                              novels=["persuasion", "northangerabbey"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ckpts, novels):
    """A joint (PABEE) early-exit fine-tune of the 4-layer BERT on which-novel: (run folder, metrics)."""
    out = tmp_path_factory.mktemp("ee-run") / "run"
    m = finetune(ckpts["bert"], "sequence-classification", novels["train"], novels["eval"], out, epochs=8,
                 method="early-exit", overrides=FAST + ["lr=3e-3", "dropout=0"])
    return out, m


def _batch(path: Path, texts=TEXTS) -> dict:
    tok = load_tokenizer(path)
    enc = tok(list(texts), padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


# ------------------------------------------------------------------------------------ formulas and rules

def test_pabee_loss_weights_and_deebert_losses_match_the_formulas():
    assert pabee_weights(3) == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert sum(pabee_weights(12)) == pytest.approx(1.0)
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 5, 4), torch.tensor([0, 1, 2, 3, 1])
    ce = [F.cross_entropy(x, labels) for x in logits]
    assert joint_loss(logits, labels) == pytest.approx(float((1 * ce[0] + 2 * ce[1] + 3 * ce[2]) / 6), abs=1e-6)
    assert intermediate_loss(logits, labels) == pytest.approx(float(ce[0] + ce[1]), abs=1e-6)


def test_entropy_of_the_prediction():
    ent = prediction_entropy(torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)], [0.0, 100.0]]))
    p = torch.tensor([0.25, 0.75])
    assert ent.tolist() == pytest.approx([math.log(2), float(-(p * p.log()).sum()), 0.0], abs=1e-6)


def test_patience_rule_on_hand_made_predictions():
    preds = torch.tensor([[1, 0, 0, 2],   # layer 1 (rows: examples)
                          [1, 1, 1, 2],   # layer 2
                          [1, 0, 1, 0],   # layer 3
                          [1, 1, 1, 0],   # layer 4
                          [1, 0, 0, 0]])  # layer 5
    # patience 2: three equal predictions in a row; row 1 never settles; row 3's streak restarts at layer 3
    assert patience_exit_layers(preds, 2).tolist() == [3, 5, 4, 5]
    assert patience_exit_layers(preds, 1).tolist() == [2, 5, 3, 2]
    assert patience_exit_layers(preds, 5).tolist() == [5, 5, 5, 5]  # impossible: everyone runs to the end


# --------------------------------------------------------------------------------- inference is exact

@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "roformer", "albert"])
def test_impossible_threshold_equals_the_full_model_exactly(family, ckpts):
    path = ckpts[family]
    model = build_early_exit(path, ["a", "b", "c"], load_tokenizer(path)).eval()
    batch = _batch(path)
    assert batch["attention_mask"].min() == 0  # padded rows
    with torch.no_grad():
        full = model(**batch).logits
        own = model.backbone(**batch).last_hidden_state[:, 0]  # the family's own encoder forward
        mine = model.first_token_states(**batch)[-1]
    assert torch.allclose(mine, own, atol=1e-6)  # the hand-written layer loop is the encoder
    for rule, value in (("entropy", 0.0), ("patience", LAYERS)):
        logits, layers = early_exit_predict(model, batch, rule=rule, value=value)
        assert torch.equal(logits, full)
        assert layers.tolist() == [LAYERS] * len(TEXTS)


def test_each_exited_row_gets_its_exit_heads_logits(trained, novels):
    run, _ = trained
    model, tok, info = load_finetuned(run)
    examples = read_task(novels["eval"], "sequence-classification", columns_for("sequence-classification"))[:24]
    feats = encode("sequence-classification", tok, examples, info["labels"], 48, True, parse_overrides([]))
    batch = {k: v for k, v in collate(feats, tok.pad_token_id, "cpu").items() if k != "labels"}
    with torch.no_grad():
        all_logits = model.head_logits(model.first_token_states(**batch))  # [L, B, C], no exits
    ent = prediction_entropy(all_logits)
    # a threshold half-way between two observed entropies (no row sits on the boundary)
    values = sorted(set(ent[:-1].flatten().tolist()))
    threshold = values[len(values) // 2] / 2 + values[len(values) // 2 + 1] / 2
    below = ent < threshold
    below[-1] = True
    expected = below.float().argmax(0) + 1  # first layer under the threshold (or the last)
    logits, layers = early_exit_predict(model, batch, rule="entropy", value=threshold)
    assert torch.equal(layers, expected)
    assert 1 < len(set(layers.tolist())) and layers.min() < LAYERS  # rows left at different layers
    for row, layer in enumerate(layers.tolist()):
        assert torch.allclose(logits[row], all_logits[layer - 1, row], atol=1e-5)
        alone = {k: v[row:row + 1, :int(batch["attention_mask"][row].sum())] for k, v in batch.items()}
        with torch.no_grad():
            single = model.heads[layer - 1](model.first_token_states(**alone)[layer - 1])[0]
        assert torch.allclose(logits[row], single, atol=1e-5)
    # the patience rule agrees with the rule applied to the full pass's per-layer predictions
    _, by_patience = early_exit_predict(model, batch, rule="patience", value=1)
    assert torch.equal(by_patience, patience_exit_layers(all_logits.argmax(-1), 1))


def test_compaction_keeps_row_order_and_slices_the_mask(ckpts):
    model = build_early_exit(ckpts["bert"], ["a", "b"], load_tokenizer(ckpts["bert"])).eval()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    hidden = torch.arange(5 * 5 * 32, dtype=torch.float).reshape(5, 5, 32)
    bias = model.attention_bias(hidden, mask)
    keep = torch.tensor([False, True, True, False, True])
    rows = torch.arange(5)
    kept, new_mask, new_bias = compact_rows(keep, {"rows": rows, "hidden": hidden, "streak": rows * 10}, mask, bias)
    assert kept["rows"].tolist() == [1, 2, 4] and kept["streak"].tolist() == [10, 20, 40]  # order kept
    assert torch.equal(kept["hidden"], hidden[[1, 2, 4], :4])  # column 5 is padding in every kept row
    assert torch.equal(new_mask, mask[[1, 2, 4], :4])
    assert torch.equal(new_bias, model.attention_bias(kept["hidden"], new_mask))  # sliced = rebuilt
    # no padding left: no bias at all (as the backbone itself does for an unpadded batch)
    kept, new_mask, new_bias = compact_rows(torch.tensor([False, False, True, False, True]),
                                            {"hidden": hidden}, mask, bias)
    assert new_mask.shape == (2, 4) and bool(new_mask.all()) and new_bias is None
    assert model.attention_bias(kept["hidden"], new_mask) is None


@pytest.mark.parametrize("rule,value", [("entropy", None), ("patience", 1), ("patience", 2)])
def test_batch_gives_each_row_its_batch_of_one_result(trained, novels, rule, value):
    """Rows of different lengths leave a padded batch at different layers; each gets what it gets alone."""
    run, _ = trained
    model, tok, info = load_finetuned(run)
    examples = read_task(novels["eval"], "sequence-classification", columns_for("sequence-classification"))[:24]
    feats = encode("sequence-classification", tok, examples, info["labels"], 48, True, parse_overrides([]))
    batch = {k: v for k, v in collate(feats, tok.pad_token_id, "cpu").items() if k != "labels"}
    if value is None:  # half-way between two middle entropies of the first layer: no row on the boundary
        with torch.no_grad():
            ent = prediction_entropy(model.heads[0](model.first_token_states(**batch)[0])).sort().values
        value = float(ent[len(ent) // 2 - 1] + ent[len(ent) // 2]) / 2
    logits, layers = early_exit_predict(model, batch, rule=rule, value=value)
    if rule == "entropy":  # the threshold splits the first layer's rows: some leave there, the others go on
        assert len(set(layers.tolist())) > 1
    # (patience: where rows leave depends on how the tiny model's heads agree, which varies by machine)
    for row in range(len(feats)):
        alone = {k: v[row:row + 1, :int(batch["attention_mask"][row].sum())] for k, v in batch.items()}
        one_logits, one_layer = early_exit_predict(model, alone, rule=rule, value=value)
        assert int(one_layer) == int(layers[row])
        assert torch.allclose(logits[row], one_logits[0], atol=1e-5)


# ----------------------------------------------------------------------------------------------- training

def test_deebert_stage_2_trains_only_the_intermediate_heads(ckpts, novels):
    path = ckpts["bert"]
    tok = load_tokenizer(path)
    model = build_early_exit(path, ["northangerabbey", "persuasion"], tok)
    examples = read_task(novels["train"], "sequence-classification", columns_for("sequence-classification"))[:32]
    feats = encode("sequence-classification", tok, examples, ["northangerabbey", "persuasion"], 48, True,
                   parse_overrides([]))
    cfg = parse_overrides(FAST + ["max_steps=2", "lr=1e-2"])
    common = dict(lr=1e-2, seed=0, collate_fn=lambda chunk, dev: collate(chunk, tok.pad_token_id, dev),
                  eval_fn=lambda m: {})

    def snapshot():
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    before = snapshot()
    run_stage(model, "last", feats, cfg, **common)
    after_1 = snapshot()
    last = f"heads.{LAYERS - 1}."
    changed = {n for n in before if not torch.equal(before[n], after_1[n])}
    assert any(n.startswith("backbone.") for n in changed) and any(n.startswith(last) for n in changed)
    assert all(n.startswith(("backbone.", last)) for n in changed)  # stage 1: intermediate heads untouched
    run_stage(model, "intermediate", feats, cfg, **common)
    after_2 = snapshot()
    changed = {n for n in before if not torch.equal(after_1[n], after_2[n])}
    assert changed and all(n.startswith("heads.") and not n.startswith(last) for n in changed)
    assert {n.split(".")[1] for n in changed} == {str(i) for i in range(LAYERS - 1)}


def test_refit_trains_the_intermediate_heads_on_the_frozen_model(trained, novels):
    run, _ = trained
    model, tok, info = load_finetuned(run)
    torch.manual_seed(0)
    for head in model.heads[:-1]:  # the intermediate heads back to a fresh initialisation
        for layer in (head.dense, head.classifier):
            torch.nn.init.normal_(layer.weight, std=0.02)
            torch.nn.init.zeros_(layer.bias)
    examples = read_task(novels["train"], "sequence-classification", columns_for("sequence-classification"))[:64]
    feats = encode("sequence-classification", tok, examples, info["labels"], 48, True, parse_overrides([]))
    batches = [collate(feats[i:i + 16], tok.pad_token_id) for i in range(0, len(feats), 16)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = refit_exit_heads(model, batches, epochs=20, lr=1e-2)
    assert len(losses) == 20 and losses[-1] < 0.7 * losses[0]  # the heads fit their layers' states
    assert not model.training  # the mode it came in with
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert {n.split(".")[1] for n in changed} == {str(i) for i in range(LAYERS - 1)}  # backbone, last head kept
    assert all(n.startswith("heads.") for n in changed)


def test_refit_option_runs_through_finetune(ckpts, novels, tmp_path):
    m = finetune(ckpts["bert"], "sequence-classification", novels["train"], novels["eval"], tmp_path / "run",
                 method="early-exit", max_steps=2, overrides=FAST + ["exit_refit_epochs=2"])
    assert len(m["exit_refit_losses"]) == 2 and len(m["layer_accuracy"]) == LAYERS


def test_joint_training_learns_real_text_and_reloads(trained, novels):
    run, m = trained
    first, last = m["history"][0], m["history"][-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]  # PABEE's weighted loss falls on real passages
    assert m["eval"]["accuracy"] > 0.55 and len(m["layer_accuracy"]) == LAYERS
    assert m["method"] == "early-exit" and m["exit_training"] == "joint"
    saved = run / "model"
    assert (saved / "exit_heads.safetensors").is_file() and (saved / "config.json").is_file()
    assert json.loads((saved / "task.json").read_text())["method"] == "early-exit"
    again = evaluate_finetuned(run, novels["eval"])  # reload -> the same full-depth metrics
    assert again["eval"]["loss"] == pytest.approx(m["eval"]["loss"], abs=1e-6)
    assert again["eval"]["accuracy"] == m["eval"]["accuracy"]
    early = evaluate_finetuned(run, novels["eval"], overrides=["exit_threshold=0.3"])["eval"]
    assert 0 <= early["accuracy"] <= 1
    preds = list(predict(run, novels["eval"], overrides=["exit_patience=1"]))
    assert len(preds) == 80 and set(preds[0]["probabilities"]) == {"northangerabbey", "persuasion"}


def test_save_then_load_gives_identical_logits(ckpts, tmp_path):
    for family in ("roformer", "albert"):
        path = ckpts[family]
        tok = load_tokenizer(path)
        model = build_early_exit(path, ["x", "y"], tok, seed=3).eval()
        folder = tmp_path / family
        save_early_exit(model, folder)
        tok.save_pretrained(str(folder))
        save_task(folder, {"kind": "sequence-classification", "labels": ["x", "y"], "max_length": 48,
                           "method": "early-exit"})
        again, _, info = load_finetuned(folder)
        batch = _batch(path)
        with torch.no_grad():
            a = model.head_logits(model.first_token_states(**batch))
            b = again.head_logits(again.first_token_states(**batch))
        assert torch.equal(a, b) and info["method"] == "early-exit"


def test_two_stage_run_through_finetune(ckpts, novels, tmp_path):
    m = finetune(ckpts["albert"], "sequence-classification", novels["train"], novels["eval"], tmp_path / "run",
                 max_steps=2, method="early-exit", overrides=FAST + ["exit_training=two-stage"])
    assert [h["stage"] for h in m["history"]] == ["last", "intermediate"] and m["steps"] == 4
    assert (tmp_path / "run" / "curves.png").is_file()


# ------------------------------------------------------------------------------------------------ sweep

def test_sweep_writes_its_files(trained, novels, tmp_path):
    run, _ = trained
    r = run_cli("early-exit", "--model", str(run), "--eval", novels["eval"], "--out", str(tmp_path / "sweep"),
                "--thresholds", "0,0.2,0.5,0.7", "--repeats", "1", "--batch-size", "16", "--set", "threads=1")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "sweep"
    result = json.loads((out / "sweep.json").read_text())
    rows = result["rows"]
    assert [row["threshold"] for row in rows] == [0, 0.2, 0.5, 0.7]
    assert rows[0]["avg_exit_layer"] == LAYERS and rows[0]["accuracy"] == result["full"]["accuracy"]
    assert all(a["avg_exit_layer"] >= b["avg_exit_layer"] for a, b in zip(rows, rows[1:]))
    assert rows[-1]["avg_exit_layer"] < LAYERS  # above ln 2 every 2-class prediction may exit at layer 1
    assert all(sum(row["exit_counts"]) == 80 and row["speedup"] > 0 for row in rows)
    assert "| full model |" in (out / "sweep.md").read_text() and "avg exit layer" in r.stdout
    assert (out / "speed_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    patience = exit_sweep(run, novels["eval"], tmp_path / "patience", rule="patience", thresholds=[1, LAYERS],
                          repeats=1)
    assert patience["rows"][1]["avg_exit_layer"] == LAYERS
    assert patience["rows"][1]["accuracy"] == patience["full"]["accuracy"]


# ------------------------------------------------------------------------------------------- bad inputs

def _one_line_error(r, *words):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_inputs_are_one_line_errors(trained, ckpts, novels, tmp_path):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    r = run_cli("finetune", "--model", str(gpt2), "--task", "sequence-classification", "--train", novels["train"],
                "--eval", novels["eval"], "--out", str(tmp_path / "a"), "--method", "early-exit")
    _one_line_error(r, "early-exit", "gpt2")
    assert not (tmp_path / "a").exists()
    run, _ = trained
    r = run_cli("early-exit", "--model", str(run), "--eval", novels["eval"], "--out", str(tmp_path / "b"),
                "--thresholds=0.1,-0.2")
    _one_line_error(r, "--thresholds", "-0.2")
    r = run_cli("early-exit", "--model", str(ckpts["bert"]), "--eval", novels["eval"], "--out", str(tmp_path / "c"))
    _one_line_error(r, "not a fine-tuned model")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    with pytest.raises(SelfsupError, match="sequence-regression"):
        finetune(ckpts["bert"], "sequence-regression", novels["train"], novels["eval"], tmp_path / "d",
                 method="early-exit")
    with pytest.raises(SelfsupError, match="patience must be a whole number"):
        exit_sweep(run, novels["eval"], tmp_path / "e", rule="patience", thresholds="1,1.5")
    with pytest.raises(SelfsupError, match="exit_threshold, exit_patience"):
        evaluate_finetuned(run, novels["eval"], overrides=["exit_threshold=0.1", "exit_patience=2"])
    with pytest.raises(SelfsupError, match="exit_threshold: must be >= 0"):
        evaluate_finetuned(run, novels["eval"], overrides=["exit_threshold=-1"])
    full = tmp_path / "full"
    finetune(ckpts["bert"], "sequence-classification", novels["train"], novels["eval"], full, max_steps=1,
             overrides=FAST)
    with pytest.raises(SelfsupError, match="not an early-exit model"):
        exit_sweep(full, novels["eval"], tmp_path / "f")
    with pytest.raises(SelfsupError, match="only for a model fine-tuned with --method early-exit"):
        evaluate_finetuned(full, novels["eval"], overrides=["exit_patience=2"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    with pytest.raises(SelfsupError, match="not empty"):
        exit_sweep(run, novels["eval"], tmp_path / "busy")
    assert not any(p.exists() for p in (tmp_path / "d", tmp_path / "e", tmp_path / "f"))
