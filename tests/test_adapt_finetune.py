"""Fine-tuning behaviour on real text and hand-made tagging data: the model learns, --method linear trains
only the head, --init scratch re-initializes, few-label subsets and seeds, the CLI verbs (finetune,
evaluate, predict, benchmark, embed) and their outputs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from adapt_data import write_conll
from conftest import run_cli
from selfsup.adapt.core.run import finetune
from selfsup.data.austen import austen_novels_task
from selfsup.cli import main
from test_adapt_heads import make_checkpoint

FAST = ["threads=1", "max_length=64", "batch_size=16"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory, persuasion):
    torch.set_num_threads(1)
    texts = [t for t in persuasion.read_text().split("\n\n")[:600] if t.strip()]
    return make_checkpoint(tmp_path_factory.mktemp("ck"), "bert", texts)


@pytest.fixture(scope="module")
def novels(tmp_path_factory):
    """The real task, two novels: is this passage from Persuasion or from Emma?"""
    return austen_novels_task(tmp_path_factory.mktemp("novels"), train_per_class=150, eval_per_class=50,
                              novels=["persuasion", "emma"])


@pytest.fixture(scope="module")
def tags(tmp_path_factory):
    d = tmp_path_factory.mktemp("tags")
    return write_conll(d / "train.conll", 120, 1), write_conll(d / "eval.conll", 30, 2)


def test_sequence_classification_learns_the_novel_of_a_passage(bert, novels, tmp_path):
    m = finetune(bert, "sequence-classification", novels["train"], novels["eval"], tmp_path / "run", epochs=4,
                 overrides=FAST + ["lr=2e-3"])
    assert m["eval"]["accuracy"] >= 0.62 and m["eval"]["mcc"] > 0.2  # 100 balanced eval passages: chance 0.5
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4]
    assert all("train_loss" in h and "eval_loss" in h for h in m["history"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["eval"] == m["eval"] and (tmp_path / "run" / "curves.png").is_file()
    task = json.loads((tmp_path / "run" / "model" / "task.json").read_text())
    assert task["labels"] == ["emma", "persuasion"]


def test_token_classification_learns_tags_and_spans(bert, tags, tmp_path):
    train, ev = tags
    m = finetune(bert, "token-classification", str(train), str(ev), tmp_path / "run", epochs=6,
                 overrides=FAST + ["lr=3e-3"])
    assert m["eval"]["token_accuracy"] > 0.9 and m["eval"]["span_f1"] > 0.8
    assert m["history"][-1]["train_loss"] < 0.5 * m["history"][0]["train_loss"]


def test_linear_method_trains_only_the_head(bert, tags, tmp_path):
    train, ev = tags
    m = finetune(bert, "token-classification", str(train), str(ev), tmp_path / "run", epochs=3,
                 method="linear", overrides=FAST + ["lr=1e-2"])
    assert m["trainable_parameters"] == 32 * 5 + 5  # hidden 32 -> 5 tags (B/I-PER, B/I-LOC, O)
    assert m["total_parameters"] > 100 * m["trainable_parameters"]
    before = load_file(str(bert / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    for name, w in after.items():
        if name.startswith("bert.") and name.removeprefix("bert.") in {k.removeprefix("bert.") for k in before}:
            assert torch.equal(w, before["bert." + name.removeprefix("bert.")]), name
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]


def test_scratch_reinitializes_the_same_architecture(bert, tags, tmp_path):
    train, ev = tags
    kw = dict(max_steps=1, overrides=FAST + ["lr=1e-12"])
    pre = finetune(bert, "token-classification", str(train), str(ev), tmp_path / "pre", **kw)
    # (the test checkpoint is itself a torch.manual_seed(0) random init: another seed for the scratch run)
    scr = finetune(bert, "token-classification", str(train), str(ev), tmp_path / "scr", init="scratch", seed=3,
                   **kw)
    assert pre["total_parameters"] == scr["total_parameters"]
    a = load_file(str(tmp_path / "pre" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "scr" / "model" / "model.safetensors"))
    ref = load_file(str(bert / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(a[key], ref[key], atol=1e-6) and not torch.allclose(b[key], ref[key])


def test_shots_and_seeds_report_mean_and_std(bert, novels, tmp_path):
    m = finetune(bert, "sequence-classification", novels["train"], novels["eval"], tmp_path / "run", max_steps=2,
                 shots=8, seeds=2, seed=5, overrides=FAST)
    assert m["train_examples"] == 16 and m["seeds"] == [5, 6]
    assert set(m["eval_std"]) >= {"accuracy", "macro_f1", "mcc"} and "±" in m["eval_mean_std"]["accuracy"]
    for s in (5, 6):
        assert (tmp_path / "run" / f"seed-{s}" / "model" / "config.json").is_file()
    assert (tmp_path / "run" / "curves.png").is_file()  # every seed's curves on one picture
    # the multi-seed run folder itself is usable: its best seed by the main metric, said on stderr
    best = max(m["runs"], key=lambda r: r["eval"]["accuracy"])
    r = run_cli("evaluate", "--model", str(tmp_path / "run"), "--eval", novels["eval"], "--set", "threads=1")
    assert r.returncode == 0 and f"using {best['folder']}" in r.stderr, r.stderr
    assert f"accuracy={best['eval']['accuracy']:.4f}" in r.stdout
    frac = finetune(bert, "sequence-classification", novels["train"], novels["eval"], tmp_path / "frac",
                    max_steps=1, train_fraction=0.1, overrides=FAST)
    assert frac["train_examples"] == 30


def test_cli_finetune_evaluate_predict(bert, tags, tmp_path):
    train, ev = tags
    out = tmp_path / "run"
    r = run_cli("finetune", "--model", str(bert), "--task", "token-classification", "--train", str(train),
                "--eval", str(ev), "--out", str(out), "--max-steps", "2", "--set", "threads=1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "token_accuracy=" in r.stdout and (out / "model" / "task.json").is_file()
    again = run_cli("finetune", "--model", str(bert), "--task", "token-classification", "--train", str(train),
                    "--eval", str(ev), "--out", str(out), "--max-steps", "2")
    assert again.returncode == 2 and "already exists" in again.stderr and len(again.stderr.splitlines()) == 1
    assert main(["evaluate", "--model", str(out), "--eval", str(ev), "--out", str(tmp_path / "ev.json")]) == 0
    saved = json.loads((out / "metrics.json").read_text())["eval"]
    assert json.loads((tmp_path / "ev.json").read_text())["eval"]["token_accuracy"] == saved["token_accuracy"]
    assert main(["predict", "--model", str(out), str(ev), "--out", str(tmp_path / "p.jsonl")]) == 0
    preds = [json.loads(x) for x in open(tmp_path / "p.jsonl")]
    assert len(preds) == 30 and all(len(p["tags"]) == len(p["words"]) == len(p["probabilities"]) for p in preds)
    r = subprocess.run([sys.executable, "-m", "selfsup", "predict", "--model", str(out), "-"], text=True,
                       capture_output=True, timeout=300,
                       input='Anne Elliot walked to Bath .\n{"tokens": ["Mr.", "Darcy", "dined"]}\n')
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [len(x["tags"]) for x in lines] == [6, 3]


def test_benchmark_suite_table_and_plot(bert, tags, novels, tmp_path):
    train, ev = tags
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"""
title: tiny suite
defaults: {{max_steps: 2, set: [threads=1, max_length=48]}}
tasks:
  - {{name: tags, task: token-classification, train: {train}, eval: {ev}}}
  - {{name: novels, task: sequence-classification, train: {novels['train']}, eval: {novels['eval']}}}
models:
  - {{name: tiny, model: {bert}, inits: [pretrained, scratch]}}
""")
    assert main(["benchmark", str(suite), "--out", str(tmp_path / "bench")]) == 0
    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [(r["model"], r["init"]) for r in res["table"]] == [("tiny", "pretrained"), ("tiny", "scratch")]
    row = res["table"][0]
    assert row["average"] == pytest.approx((row["scores"]["tags"] + row["scores"]["novels"]) / 2)
    md = (tmp_path / "bench" / "results.md").read_text()
    assert "| tiny | scratch |" in md and "average" in md
    assert (tmp_path / "bench" / "curves.png").stat().st_size > 1000
    assert main(["benchmark", str(suite), "--out", str(tmp_path / "bench")]) == 0  # finished runs are reused


def test_embed_sentences_tokens_and_word_similarity(bert, tmp_path, capsys):
    src = tmp_path / "s.txt"
    src.write_text("Anne walked to the bank of the river.\nThe bank was closed at noon.\n"
                   "She sat on the bank and read.\nNo mention here.\n")
    assert main(["embed", "--model", str(bert), str(src), "--out", str(tmp_path / "e"), "--word", "bank"]) == 0
    emb = np.load(tmp_path / "e" / "embeddings.npy")
    assert emb.shape == (4, 32) and len((tmp_path / "e" / "index.jsonl").read_text().splitlines()) == 4
    sim = json.loads((tmp_path / "e" / "similarity-bank.json").read_text())
    m = np.array(sim["matrix"])
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1, atol=1e-5) and np.allclose(m, m.T, atol=1e-6)
    assert (tmp_path / "e" / "similarity-bank.png").is_file()
    assert main(["embed", "--model", str(bert), str(src), "--out", str(tmp_path / "t"), "--level", "token"]) == 0
    tok = np.load(tmp_path / "t" / "embeddings.npy")
    index = [json.loads(x) for x in open(tmp_path / "t" / "index.jsonl")]
    assert tok.shape[0] == len(index) > 4 and index[0]["text"].lower() == "anne"


def test_suite_curves_are_the_mean_over_seeds():
    from selfsup.adapt.tools.suite import mean_history

    runs = [{"history": [{"epoch": 1, "train_loss": 1.0, "accuracy": 0.5}, {"epoch": 2, "train_loss": 0.5}]},
            {"history": [{"epoch": 1, "train_loss": 3.0, "accuracy": 0.7}, {"epoch": 2, "train_loss": 1.5}]}]
    assert mean_history({"runs": runs}) == [{"epoch": 1, "train_loss": 2.0, "accuracy": 0.6},
                                            {"epoch": 2, "train_loss": 1.0}]
    single = [{"epoch": 1, "train_loss": 1.0}]
    assert mean_history({"history": single}) == single
