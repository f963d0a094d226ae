"""Every exported model folder has a model card (README.md, Hugging Face layout): what was trained, on what, its
numbers (those of metrics.json), the command that made it, and a loading snippet that — run as written from
where the command ran — loads the folder in plain transformers / peft with the weights selfsup saved."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY
from selfsup import pretrain
from selfsup.report.cards import invocation, model_card


def _snippet(card: Path) -> str:
    return re.search(r"```python\n(.*?)```", card.read_text(), re.S).group(1)


def _run_snippet(card: Path, cwd: Path) -> dict:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        scope: dict = {}
        exec(_snippet(card), scope)  # the card's own code, as a reader would paste it
        return scope
    finally:
        os.chdir(here)


def test_pretrained_model_and_exports_have_cards_that_load(persuasion, tmp_path):
    out = tmp_path / "mlm"
    metrics = pretrain("mlm", [str(persuasion)], out, max_steps=4, progress=False,
                       overrides=TINY + ["train.export_every=2"])
    card = (out / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and "# mlm, pretrained with selfsup" in card
    assert "Masked language modelling (BERT, Devlin et al. 2019)" in card  # the method's paper
    assert str(persuasion) in card and "| optimizer steps | 4 |" in card
    assert f"| heldout_loss | {metrics['heldout_loss']:.4g} |" in card
    assert "made with the selfsup Python API" in card
    model = _run_snippet(out / "model" / "README.md", tmp_path)["model"]
    assert type(model).__name__ == "BertForMaskedLM"
    from safetensors.torch import load_file

    saved = load_file(out / "model" / "model.safetensors")
    name = next(k for k in saved if k.endswith("word_embeddings.weight"))
    assert torch.equal(model.state_dict()[name], saved[name])
    for step in ("step-0000002", "step-0000004"):
        assert "| optimizer steps | %d |" % int(step[-1]) in (out / "exports" / step / "README.md").read_text()


@pytest.mark.parametrize("method,cls", [("full", "BertForSequenceClassification"),
                                        ("lora", "PeftModelForSequenceClassification")])
def test_finetuned_models_have_cards_with_the_command_and_their_evaluation(tiny_bert, two_novels, tmp_path, method,
                                                                          cls, capfd):
    from selfsup.cli import main

    out = tmp_path / "run"
    code = main(["finetune", "--model", str(tiny_bert), "--task", "sequence-classification", "--train",
                 two_novels["train"], "--eval", two_novels["eval"], "--out", str(out), "--max-steps", "3",
                 "--method", method, "--no-progress", "--set", "threads=1", "--set", "max_length=32"])
    assert code == 0, capfd.readouterr().err
    card_path = out / "model" / "README.md"
    card = card_path.read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"selfsup finetune --model {tiny_bert}" in card and f"--method {method}" in card
    assert f"| eval accuracy | {metrics['eval']['accuracy']:.4g} |" in card
    assert "| labels | " + ", ".join(metrics["labels"]) + " |" in card
    model = _run_snippet(card_path, Path.cwd())["model"]  # the command ran where the tests run
    assert type(model).__name__ == cls
    assert [model.config.id2label[i] for i in range(len(metrics["labels"]))] == metrics["labels"]
    if method == "lora":  # the base path is absolute: the artifact loads from anywhere
        assert Path(json.loads((out / "model" / "adapter_config.json").read_text())["base_model_name_or_path"]
                    ).is_absolute()


def test_card_is_pure_and_tells_when_the_folder_is_not_transformers(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden": [8, 2]}))  # a selfsup table model's config
    card = model_card(tmp_path, title="t", summary="s", facts={"a": 1, "none": None}, metrics={"x": 0.5, "n": "no"},
                      command="selfsup pretrain vae --data t.csv --out r")
    assert "| a | 1 |" in card and "none" not in card and "| x | 0.5 |" in card and "| n |" not in card
    assert "selfsup format (model.safetensors + config.json)" in card
    assert "selfsup pretrain vae --data t.csv --out r" in card
    assert invocation() is None  # pytest is not the selfsup CLI
