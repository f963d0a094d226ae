"""BERT embryology: `train.export_every` keeps an HF export every N steps (and the last step), each loads in
plain transformers, the last equals model/, a resumed run keeps the earlier exports and removes half-written
ones; a suite with `model: RUN/exports/*` probes every export and plots the metric against the step."""
from __future__ import annotations

import json

import pytest
import torch

from adapt_data import write_conll
from conftest import TINY, run_cli
from selfsup import pretrain


@pytest.fixture(scope="module")
def embryo(tmp_path_factory, persuasion):
    out = tmp_path_factory.mktemp("embryo") / "mlm"
    pretrain("mlm", [str(persuasion)], out, max_steps=6, progress=False, overrides=TINY + ["train.export_every=4"])
    return out


def test_exports_every_n_steps_and_at_the_end_load_in_plain_transformers(embryo):
    from transformers import AutoModel, AutoTokenizer

    assert sorted(p.name for p in (embryo / "exports").iterdir()) == ["step-0000004", "step-0000006"]
    tok = AutoTokenizer.from_pretrained(embryo / "model")
    batch = tok(["Anne Elliot walked to the sea."], return_tensors="pt")
    states = {}
    for folder in (embryo / "exports" / "step-0000004", embryo / "exports" / "step-0000006", embryo / "model"):
        with torch.no_grad():
            states[folder.name] = AutoModel.from_pretrained(folder).eval()(**batch).last_hidden_state
    assert torch.equal(states["step-0000006"], states["model"])
    assert not torch.allclose(states["step-0000004"], states["model"])  # two more steps changed the weights


def test_resume_keeps_earlier_exports_and_removes_half_written_ones(embryo, persuasion, tmp_path):
    import shutil

    run = tmp_path / "mlm"
    shutil.copytree(embryo, run)
    first = (run / "exports" / "step-0000004" / "model.safetensors").stat().st_mtime_ns
    (run / "exports" / ".step-0000008.tmp.abc").mkdir()  # a kill during an export
    pretrain("mlm", [str(persuasion)], run, max_steps=8, resume=True, progress=False,
             overrides=TINY + ["train.export_every=4"])
    assert sorted(p.name for p in (run / "exports").iterdir()) == ["step-0000004", "step-0000006", "step-0000008"]
    assert (run / "exports" / "step-0000004" / "model.safetensors").stat().st_mtime_ns == first


def test_a_suite_over_the_exports_plots_the_metric_against_the_step(embryo, tmp_path):
    train, ev = write_conll(tmp_path / "train.conll", 60, 1), write_conll(tmp_path / "eval.conll", 20, 2)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"""
title: embryology
defaults: {{max_steps: 2, set: [threads=1, max_length=48]}}
tasks:
  - {{name: tags, task: token-classification, train: {train}, eval: {ev}}}
models:
  - {{name: tiny, model: {embryo}/exports/*, inits: [pretrained]}}
""")
    res = run_cli("benchmark", str(suite), "--out", str(tmp_path / "bench"))
    assert res.returncode == 0, res.stderr[-2000:]
    table = json.loads((tmp_path / "bench" / "results.json").read_text())["table"]
    assert [r["model"] for r in table] == ["tiny@step-0000004", "tiny@step-0000006"]
    assert (tmp_path / "bench" / "steps.png").stat().st_size > 5000
    suite.write_text(suite.read_text().replace("exports/*", "exports/nothing-*"))
    res = run_cli("benchmark", str(suite), "--out", str(tmp_path / "bench2"))
    assert res.returncode == 2 and "models: tiny: no folder matches" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "bench2").exists()
