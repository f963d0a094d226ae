"""`selfsup multitask` (T0-style multitask prompted training, then zero-shot): prompts are drawn uniformly per
example, the mixed-batch loss is the mean of each example's own prompt cross-entropy, a run on real Austen tasks
lowers the training loss, never reads the held-out task for training, and its "after" numbers are those of the
saved model reloaded in plain transformers (its "before" those of the source checkpoint); the YAML reads yes /
no as words; bad mixtures are one-line errors (exit 2) that leave --out untouched."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from selfsup.adapt.core.evaluation import run_eval
from selfsup.adapt.core.models import load_tokenizer
from selfsup.adapt.core.options import parse_overrides
from selfsup.adapt.core.tasks import read_task
from selfsup.adapt.core.kinds import columns_for
from selfsup.adapt.shared.prompt_inputs import PromptTokenizer
from selfsup.adapt.shared.prompts import PromptClassifier, build_spec, load_lm
from selfsup.adapt.tools.multitask import MultitaskPrompts, assign_prompts, load_mixture, multitask
from selfsup.config import yaml_load
from selfsup.data.austen import austen_mark_task
from selfsup.errors import SelfsupError
from test_adapt_heads import make_checkpoint

FAST = ["threads=1", "max_length=48", "batch_size=16", "epochs=2"]
QUESTION = "{text} Is it a question? {mask}."
MIXTURE = """train:
  - name: question
    train: q/train.jsonl
    eval: q/eval.jsonl
    prompts:
      - {template: "%s", verbalizer: {question: yes, statement: no}}
      - {template: "Asked? {mask}. {text}", verbalizer: {question: yes, statement: no}}
zero_shot:
  - name: exclamation
    eval: e/eval.jsonl
    template: "{text} Is it an exclamation? {mask}."
    verbalizer: {exclamation: yes, statement: no}
""" % QUESTION


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("multitask")
    q = austen_mark_task(d / "q", "?", train_per_class=80, eval_per_class=30)
    e = austen_mark_task(d / "e", "!", train_per_class=10, eval_per_class=30)
    texts = [json.loads(line)["text"] for f in (q["train"], e["train"]) for line in open(f)]
    (d / "mix.yaml").write_text(MIXTURE)
    return {"dir": d, "ckpt": make_checkpoint(d, "bert", texts), "mix": d / "mix.yaml", "e_eval": e["eval"]}


def test_prompts_are_drawn_uniformly_and_reproducibly():
    draws = assign_prompts(30000, 3, seed=7)
    counts = Counter(draws)
    assert set(counts) == {0, 1, 2}
    assert all(abs(c / 30000 - 1 / 3) < 0.01 for c in counts.values())
    assert draws == assign_prompts(30000, 3, seed=7) and draws != assign_prompts(30000, 3, seed=8)


def test_yes_and_no_stay_words():
    assert yaml_load("{a: yes, b: no, c: on, d: true}") == {"a": "yes", "b": "no", "c": "on", "d": True}


def test_mixed_batch_loss_is_the_mean_of_each_examples_own_prompt_loss(world):
    tok = load_tokenizer(world["ckpt"])
    lm = load_lm(world["ckpt"], "mlm", tok).eval()
    labels = ["question", "statement"]
    specs = [build_spec(tok, "mlm", "sequence-classification", labels, QUESTION, {"question": "yes", "statement": "no"}),
             build_spec(tok, "mlm", "sequence-classification", labels, "Asked? {mask}. {text}",
                        {"question": ["yes", "indeed"], "statement": "no"})]
    heads = [PromptClassifier(lm, s, tok.mask_token_id, tok.pad_token_id) for s in specs]
    examples = read_task(str(world["dir"] / "q" / "train.jsonl"), "sequence-classification",
                         columns_for("sequence-classification"))[:6]
    feats = [dict(f, task=i % 2) for i, ex in enumerate(examples)
             for f in PromptTokenizer(tok, specs[i % 2]).encode_prompts([ex], labels, 48)]
    from selfsup.adapt.core.features import collate

    batch = collate(feats, tok.pad_token_id)
    batch["task"] = torch.tensor([f["task"] for f in feats])
    with torch.no_grad():
        mixed = MultitaskPrompts(lm, heads)(**batch)
        one_by_one = [heads[f["task"]](**collate([f], tok.pad_token_id)).loss for f in feats]
    assert mixed.item() == pytest.approx(torch.stack(one_by_one).mean().item(), rel=1e-5)
    assert sum(p.numel() for p in MultitaskPrompts(lm, heads).parameters()) == sum(p.numel() for p in lm.parameters())


def test_run_trains_on_the_mixture_only_and_reports_the_saved_model(world, tmp_path):
    out = tmp_path / "mt"
    m = multitask(world["mix"], world["ckpt"], out, overrides=FAST)
    assert m["train_examples"] == 160 and m["train_tasks"] == [{"name": "question", "examples": 160, "prompts": 2}]
    losses = [row["train_loss"] for row in m["history"]]
    assert losses[-1] < losses[0]
    assert (out / "zero_shot.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["zero_shot"][0]["after"] == m["zero_shot"][0]["after"]

    tok = load_tokenizer(out / "model")
    import transformers as tf

    labels = ["exclamation", "statement"]
    spec = build_spec(tok, "mlm", "sequence-classification", labels, "{text} Is it an exclamation? {mask}.",
                      {"exclamation": "yes", "statement": "no"})
    examples = read_task(world["e_eval"], "sequence-classification", columns_for("sequence-classification"))
    feats = PromptTokenizer(tok, spec).encode_prompts(examples, labels, 48)
    cfg = parse_overrides(FAST)
    for folder, when in ((out / "model", "after"), (world["ckpt"], "before")):
        lm = tf.AutoModelForMaskedLM.from_pretrained(str(folder)).eval()
        got = run_eval(PromptClassifier(lm, spec, tok.mask_token_id, tok.pad_token_id), feats, examples,
                       "sequence-classification", labels, cfg, tok.pad_token_id, torch.device("cpu"))
        assert got["accuracy"] == m["zero_shot"][0][when]["accuracy"]
        assert got["loss"] == pytest.approx(m["zero_shot"][0]["prompts"][0][when]["loss"], rel=1e-5)


def test_cli_prints_before_and_after(world, tmp_path, capfd):
    from selfsup.cli import main

    code = main(["multitask", str(world["mix"]), "--model", str(world["ckpt"]), "--out", str(tmp_path / "o"),
                 "--no-progress", "--set", "threads=1", "--set", "max_steps=2", "--set", "max_length=48"])
    out = capfd.readouterr().out
    assert code == 0 and "exclamation: zero-shot accuracy" in out and (tmp_path / "o" / "model" / "config.json").is_file()


BAD = {
    "no-zero-shot": ("train: [{name: a, train: q/train.jsonl, template: '{text} {mask}.'}]\n", "zero_shot"),
    "trained-held-out": (MIXTURE.replace("    eval: e/eval.jsonl", "    eval: e/eval.jsonl\n    train: e/train.jsonl"),
                         "never trained on"),
    "same-file": (MIXTURE.replace("e/eval.jsonl", "q/eval.jsonl"), "also a training task's file"),
    "duplicate-names": (MIXTURE.replace("name: exclamation", "name: question"), "unique name"),
    "unknown-key": (MIXTURE.replace("    template: \"{text} Is it an", "    tempate: x\n    template: \"{text} Is it an"),
                    "tempate"),
    "bad-kind": (MIXTURE.replace("  - name: question\n", "  - name: question\n    task: token-classification\n"),
                 "task"),
    "missing-file": (MIXTURE.replace("q/train.jsonl", "q/nope.jsonl"), "nope.jsonl"),
    "label-without-word": (MIXTURE.replace("{exclamation: yes, statement: no}", "{exclamation: yes}"),
                           "'statement' has no word"),
    "not-yaml": ("train: [\n", "invalid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_mixture_is_one_line_exit_2(world, tmp_path, case, capfd):
    from selfsup.cli import main

    text, needle = BAD[case]
    for sub in ("q", "e"):
        (tmp_path / sub).symlink_to(world["dir"] / sub)
    mix = tmp_path / "bad.yaml"
    mix.write_text(text)
    capfd.readouterr()
    code = main(["multitask", str(mix), "--model", str(world["ckpt"]), "--out", str(tmp_path / "o"), "--no-progress",
                 "--set", "threads=1", "--set", "max_steps=1"])
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_load_mixture_resolves_paths_against_the_file(world):
    mix = load_mixture(world["mix"])
    assert Path(mix.train[0].train) == world["dir"] / "q" / "train.jsonl"
    assert [len(t.all_prompts()) for t in mix.train + mix.zero_shot] == [2, 1]
    with pytest.raises(SelfsupError, match="no such mixture file"):
        load_mixture(world["dir"] / "absent.yaml")


def test_the_help_example_is_a_valid_mixture(tmp_path):
    from selfsup.adapt.multitask_cli import EXAMPLE

    (tmp_path / "m.yaml").write_text(EXAMPLE.split("\n", 1)[1])
    mix = load_mixture(tmp_path / "m.yaml")
    assert [t.name for t in mix.train] == ["speech"] and mix.train[0].max_examples == 800
    assert mix.train[0].prompts[0].verbalizer == {"speech": "yes", "narration": "no"}
    assert mix.zero_shot[0].eval == str(tmp_path / "question" / "eval.jsonl")
