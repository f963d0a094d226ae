"""In-context learning (`selfsup incontext`): contextual calibration on a hand-computed example, demonstration
draws, the prompt layout (demonstrations first, one per line, each with its label word), zero- and two-shot runs
on real text with mean ± std over draws, no gradient step and no weight change, and one-line errors."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from selfsup.adapt.core.models import load_tokenizer
from selfsup.adapt.tools.incontext import (batch_prior, content_free_prior, contextual_calibration,
                                           draw_demonstrations, incontext, mean_std)
from selfsup.adapt.shared.prompt_inputs import PromptTokenizer
from selfsup.adapt.shared.prompts import PromptClassifier, build_spec
from selfsup.adapt.core.tasks import TextExample
from selfsup.data.austen import austen_novels_task
from selfsup.errors import SelfsupError
from test_adapt_heads import make_checkpoint

HEROINES = "{persuasion: anne, emma: emma}"
FAST = ["threads=1", "eval_batch_size=20"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, persuasion):
    torch.set_num_threads(1)
    texts = [t for t in persuasion.read_text().split("\n\n")[:300] if t.strip()]
    folder = tmp_path_factory.mktemp("ck")
    return {f: make_checkpoint(folder, f, texts) for f in ("gpt2", "bert")}


@pytest.fixture(scope="module")
def novels(tmp_path_factory):
    return austen_novels_task(tmp_path_factory.mktemp("novels"), passage_words=20, train_per_class=20,
                              eval_per_class=10, novels=["persuasion", "emma"])


def test_contextual_calibration_on_a_hand_computed_example():
    # two content-free inputs give [0.7, 0.3] and [0.8, 0.2]: p_cf = [0.75, 0.25]
    p_cf = content_free_prior(np.array([[0.7, 0.3], [0.8, 0.2]]))
    assert np.allclose(p_cf, [0.75, 0.25])
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.75, 0.25]])
    # row 0: [0.6/0.75, 0.4/0.25] = [0.8, 1.6] -> [1/3, 2/3] (the prediction flips to class 1)
    # row 1: [1.2, 0.4] -> [3/4, 1/4]; row 2 is p_cf itself -> uniform
    assert np.allclose(contextual_calibration(probs, p_cf), [[1 / 3, 2 / 3], [0.75, 0.25], [0.5, 0.5]])


def test_batch_calibration_on_a_hand_computed_example():
    # the evaluation rows themselves give the prior: mean of [0.9, 0.1], [0.7, 0.3], [0.8, 0.2] = [0.8, 0.2]
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.8, 0.2]])
    prior = batch_prior(probs)
    assert np.allclose(prior, [0.8, 0.2])
    # every row said class 0; calibrated: [0.9/0.8, 0.1/0.2] = [1.125, 0.5] -> class 0; [0.875, 1.5] -> class 1
    q = contextual_calibration(probs, prior)
    assert np.allclose(q[1], [0.875 / 2.375, 1.5 / 2.375]) and q.argmax(1).tolist() == [0, 1, 0]


def test_batch_calibrated_run_records_its_prior(ckpts, novels):
    r = incontext(ckpts["gpt2"], "sequence-classification", novels["train"], novels["eval"], shots=1,
                  calibrate="batch", verbalizer=HEROINES, overrides=FAST)
    prior = r["runs"][0]["prior"]
    assert set(prior) == {"emma", "persuasion"} and abs(sum(prior.values()) - 1) < 1e-4
    assert r["content_free"] is None and r["summary"].startswith("incontext 1-shot x 1 draw (batch calibration)")
    with pytest.raises(SelfsupError, match="--calibrate: content-free or batch"):
        incontext(ckpts["gpt2"], "sequence-classification", novels["train"], novels["eval"], calibrate="platt")


def test_demonstration_draws_and_summaries():
    a = draw_demonstrations(40, 4, seed=3)
    assert a == draw_demonstrations(40, 4, seed=3) and len(set(a)) == 4 and all(0 <= i < 40 for i in a)
    assert a != draw_demonstrations(40, 4, seed=4) and draw_demonstrations(40, 0, seed=0) == []
    mean, std = mean_std([{"accuracy": 0.5, "examples": 9}, {"accuracy": 0.7, "examples": 9}])
    assert mean == {"accuracy": pytest.approx(0.6)} and std == {"accuracy": pytest.approx(np.std([0.5, 0.7], ddof=1))}
    assert mean_std([{"accuracy": 0.5}])[1] == {"accuracy": 0.0}


def test_prompt_has_the_demonstrations_first_one_per_line(ckpts):
    tok = load_tokenizer(ckpts["gpt2"])
    spec = build_spec(tok, "causal", "sequence-classification", ["emma", "persuasion"], "Text: {text}\nNovel: {mask}",
                      HEROINES)
    prompts = PromptTokenizer(tok, spec)
    demos = [(TextExample("Emma smiled.", None, "emma", "d1"), 0), (TextExample("Anne wept.", None, "persuasion",
                                                                                "d2"), 1)]
    ids = prompts.encode_prompts([TextExample("Who walked?", None, "emma", "q")], spec.labels, 100,
                                 demonstrations=demos)[0]["input_ids"]
    # exactly how the tokenizer reads the whole text (each part in context, not as the start of a text)
    whole = "Text: Emma smiled.\nNovel: emma\nText: Anne wept.\nNovel: anne\nText: Who walked?\nNovel:"
    assert ids == tok(whole)["input_ids"]
    assert [line.strip() for line in tok.decode(ids).split("\n")] == [
        "text: emma smiled.", "novel: emma", "text: anne wept.", "novel: anne", "text: who walked?", "novel:"]
    # too long: the demonstrations are cut, the query and its "Novel:" stay whole
    short_ids = prompts.encode_prompts([TextExample("Who walked?", None, "emma", "q")], spec.labels, len(ids) - 4,
                                       demonstrations=demos)[0]["input_ids"]
    short = tok.decode(short_ids)
    assert len(short_ids) <= len(ids) - 4 and short.endswith("\ntext: who walked?\nnovel:")
    assert "\nnovel: emma\n" in short and short.endswith("\nnovel: anne\ntext: who walked?\nnovel:")
    assert "emma smiled." not in short and "anne wept." in short  # the longer demonstration's text was cut


def test_an_empty_zero_shot_prompt_is_the_start_token(ckpts, novels):
    """Calibration's content-free input "" in a template with nothing before {mask} leaves no prompt: it is scored
    after the tokenizer's start token (GPT-2's <|endoftext|>), and the calibrated run goes through."""
    tok = load_tokenizer(ckpts["gpt2"])
    spec = build_spec(tok, "causal", "sequence-classification", ["emma", "persuasion"], "{text} {mask}", HEROINES)
    ids = PromptTokenizer(tok, spec).encode_prompts([TextExample("", None, None, "cf")], spec.labels, 64)
    assert ids[0]["input_ids"] == [tok.bos_token_id]
    r = incontext(ckpts["gpt2"], "sequence-classification", novels["train"], novels["eval"], shots=0, calibrate=True,
                  template="{text} {mask}", verbalizer=HEROINES, overrides=FAST)
    assert 0.0 <= r["eval"]["accuracy"] <= 1.0 and "uncalibrated" in r


def test_zero_and_two_shot_runs_report_mean_and_std_over_draws(ckpts, novels, tmp_path, monkeypatch):
    weights = ckpts["gpt2"] / "model.safetensors"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    grad_modes = []
    forward = PromptClassifier.forward

    def spy(self, *args, **kwargs):
        grad_modes.append(torch.is_grad_enabled())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(PromptClassifier, "forward", spy)
    zero = incontext(ckpts["gpt2"], "sequence-classification", novels["train"], novels["eval"], shots=0, draws=3,
                     verbalizer=HEROINES, out=tmp_path / "zero", overrides=FAST)
    assert zero["draws"] == 1 and len(zero["runs"]) == 1 and zero["eval_std"]["accuracy"] == 0.0  # one prompt
    assert zero["runs"][0]["demonstrations"] == [] and 0 <= zero["eval"]["accuracy"] <= 1
    two = incontext(ckpts["gpt2"], "sequence-classification", novels["train"], novels["eval"], shots=2, draws=3,
                    calibrate=True, verbalizer=HEROINES, out=tmp_path / "two", seed=5, overrides=FAST)
    saved = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert saved["draws"] == 3 and [r["seed"] for r in saved["runs"]] == [5, 6, 7]
    assert all(len(r["demonstrations"]) == 2 for r in saved["runs"])
    accs = [r["eval"]["accuracy"] for r in saved["runs"]]
    assert saved["eval"]["accuracy"] == pytest.approx(np.mean(accs))
    assert saved["eval_std"]["accuracy"] == pytest.approx(np.std(accs, ddof=1))
    assert "±" in saved["eval_mean_std"]["macro_f1"] and "uncalibrated" in saved
    for r in saved["runs"]:
        assert sum(r["content_free_probs"].values()) == pytest.approx(1, abs=1e-5)
        assert set(r["uncalibrated_eval"]) == {"accuracy", "macro_f1", "mcc"}
    assert two["summary"].startswith("incontext 2-shot x 3 draws (content-free calibration): accuracy=")
    # 3 draws x (20 eval in 1 batch + 3 content-free) + the zero-shot batch: all without gradient
    assert len(grad_modes) == 7 and not any(grad_modes)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before


def test_incontext_cli_and_its_one_line_errors(ckpts, novels, tmp_path):
    base = ["incontext", "--task", "sequence-classification", "--train", novels["train"], "--eval", novels["eval"],
            "--set", "threads=1"]
    r = run_cli(*base, "--model", str(ckpts["gpt2"]), "--shots", "1", "--verbalizer", HEROINES,
                "--template", "{text} Novel: {mask}", "--out", str(tmp_path / "ok"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stdout.startswith("incontext 1-shot x 1 draw: accuracy=")
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text())["template"] == "{text} Novel: {mask}"
    for extra, expect in [(["--model", str(ckpts["bert"])], "needs a causal LM"),
                          (["--model", str(ckpts["gpt2"]), "--verbalizer", "{emma: emma}"],
                           "verbalizer: label 'persuasion' has no word"),
                          (["--model", str(ckpts["gpt2"]), "--template", "{text} It was {mask}."],
                           "must end the template")]:
        r = run_cli(*base, *extra, "--out", str(tmp_path / "bad"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and expect in r.stderr, r.stderr
        assert not (tmp_path / "bad").exists()
    with pytest.raises(SelfsupError, match="--shots: 99 demonstrations asked for"):
        incontext(ckpts["gpt2"], "sequence-classification", novels["train"], novels["eval"], shots=99)
