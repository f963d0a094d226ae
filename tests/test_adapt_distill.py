"""Knowledge distillation (`selfsup distill`): the loss equals Hinton et al.'s formula on hand-computed cases
(T^2 scaling, alpha=0 -> cross-entropy, alpha=1 -> KL, unlabeled rows -> KL only); a 2-layer student made from
layers 0 and 3 of a fine-tuned 4-layer teacher learns a real task (which Austen novel is this passage from?)
from the teacher's soft labels plus unlabeled transfer rows, saves in plain HF format with `compression` in
metrics.json; a student with another vocabulary and bad settings are one-line errors (exit 2)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli
from selfsup.adapt.shared.surgery import evenly_spaced
from selfsup.data.austen import austen_novels_task
from selfsup.errors import SelfsupError
from selfsup.losses import distillation_loss
from test_adapt_heads import make_checkpoint

FAST = ["threads=1", "max_length=48", "batch_size=16"]


def tiny_teacher(folder: Path, persuasion: Path) -> dict:
    """A 4-layer, 4-head BERT (hidden 32; `make_checkpoint`'s tokenizer) fine-tuned to tell Persuasion from
    Emma (150 passages each; eval accuracy about 0.68). Returns the paths."""
    import transformers as tf

    from selfsup.adapt.core.run import finetune

    torch.set_num_threads(1)
    texts = [t for t in persuasion.read_text().split("\n\n")[:300] if t.strip()]
    small = make_checkpoint(folder, "bert", texts)
    config = tf.AutoConfig.from_pretrained(small)
    config.num_hidden_layers, config.num_attention_heads = 4, 4
    torch.manual_seed(0)
    tf.BertForMaskedLM(config).save_pretrained(folder / "bert4")
    tf.AutoTokenizer.from_pretrained(small).save_pretrained(folder / "bert4")
    task = austen_novels_task(folder / "task", train_per_class=150, eval_per_class=50, novels=["persuasion", "emma"])
    finetune(folder / "bert4", "sequence-classification", task["train"], task["eval"], folder / "teacher", epochs=4,
             overrides=FAST + ["lr=2e-3"])
    return {"checkpoint": folder / "bert4", "teacher": folder / "teacher", **task}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, persuasion):
    return tiny_teacher(tmp_path_factory.mktemp("distill"), persuasion)


# ------------------------------------------------------------------------------------------------ the loss

def test_loss_equals_the_formula_on_a_hand_computed_case():
    # s/T = (0.5, 0), t/T = (0, 0.5) at T=2: p_t = (sig(-.5), sig(.5)), p_s = (sig(.5), sig(-.5)), and
    # sig(x)/sig(-x) = e^x, so KL(p_t || p_s) = (sig(.5) - sig(-.5)) * 0.5 = 0.5 tanh(0.25);
    # CE(s = (1, 0), y = 0) = log(1 + e^-1)
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    kl, ce = 0.5 * math.tanh(0.25), math.log(1 + math.exp(-1))
    assert distillation_loss(s, t, y, temperature=2, alpha=0.5).item() == pytest.approx(0.5 * 4 * kl + 0.5 * ce,
                                                                                        rel=1e-6)
    assert distillation_loss(s, t, y, temperature=2, alpha=0.0).item() == pytest.approx(ce, rel=1e-6)
    assert distillation_loss(s, t, y, temperature=2, alpha=1.0).item() == pytest.approx(4 * kl, rel=1e-6)


def test_temperature_squared_scaling_and_alpha_extremes():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    for temperature in (1.0, 2.0, 4.0):
        p_t, p_s = F.softmax(t / temperature, -1), F.softmax(s / temperature, -1)
        kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()  # KL by its definition, mean over rows
        got = distillation_loss(s, t, y, temperature=temperature, alpha=1.0)
        assert got.item() == pytest.approx(temperature ** 2 * kl.item(), rel=1e-5)
        assert distillation_loss(s, t, y, temperature, alpha=0.0).item() == pytest.approx(
            F.cross_entropy(s, y).item(), rel=1e-6)
    assert distillation_loss(t, t, y, 3.0, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)  # same logits


def test_unlabeled_rows_get_only_the_kl_term():
    torch.manual_seed(1)
    s, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    y = torch.tensor([2, -100, 0, -100])
    kl = distillation_loss(s, t, y, 2.0, alpha=1.0)
    expected = 0.3 * kl + 0.7 * F.cross_entropy(s[[0, 2]], y[[0, 2]])  # CE: mean over the labeled rows
    assert distillation_loss(s, t, y, 2.0, alpha=0.3).item() == pytest.approx(expected.item(), rel=1e-6)
    none = torch.full((4,), -100)
    loss = distillation_loss(s, t, none, 2.0, alpha=0.3)
    assert loss.item() == pytest.approx(0.3 * kl.item(), rel=1e-6)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_student_layers_are_spread_like_distilbert():
    assert evenly_spaced(12, 6) == [0, 2, 4, 7, 9, 11]
    assert evenly_spaced(4, 2) == [0, 3]
    assert evenly_spaced(4, 1) == [0]
    assert evenly_spaced(4, 4) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------- a real run

def test_a_two_layer_student_learns_from_the_teacher(teacher, tmp_path):
    import transformers as tf

    from selfsup.adapt.tools.distill import distill
    from selfsup.adapt.core.evaluation import evaluate_finetuned

    extra = austen_novels_task(tmp_path / "extra", train_per_class=60, eval_per_class=1, seed=1,
                               novels=["persuasion", "emma"])  # training-part passages only: never eval text
    out = tmp_path / "student"
    m = distill(teacher["teacher"], None, teacher["train"], teacher["eval"], out, unlabeled=extra["train"],
                epochs=4, overrides=FAST + ["lr=2e-3", "student_layers=2", "temperature=2", "alpha=0.5"])
    losses = [row["train_loss"] for row in m["history"]]
    assert losses[-1] < losses[0] * 0.9, losses
    assert m["eval"]["accuracy"] >= 0.6, m["eval"]  # chance is 0.5 (50 passages per novel)
    assert m["teacher"]["eval"]["accuracy"] >= 0.6
    assert m["student_layers"] == 2 and m["kept_layers"] == [0, 3]
    assert m["teacher"]["layers"] == 4 and m["total_parameters"] < m["teacher"]["parameters"]
    assert m["compression"] == pytest.approx(m["teacher"]["parameters"] / m["total_parameters"], rel=1e-3)
    assert m["unlabeled_examples"] == 120 and m["train_examples"] == 300
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("eval", "trainable_parameters", "total_parameters", "history", "teacher", "compression", "config"):
        assert key in saved
    assert saved["config"]["student_layers"] == 2
    table = (out / "table.md").read_text()
    assert "teacher" in table and "student" in table and "compression" in table
    plain = tf.AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert plain.config.num_hidden_layers == 2 and len(plain.bert.encoder.layer) == 2
    assert evaluate_finetuned(out, teacher["eval"])["eval"]["accuracy"] == pytest.approx(m["eval"]["accuracy"])


# ------------------------------------------------------------------------------------------ bad input

def test_bad_input_is_one_line(teacher, tmp_path, persuasion):
    texts = [t for t in persuasion.read_text().split("\n\n")[:300] if t.strip()]
    other = make_checkpoint(tmp_path, "roberta", texts)  # a byte-level BPE vocabulary
    common = ["distill", "--teacher", str(teacher["teacher"]), "--train", teacher["train"], "--eval",
              teacher["eval"], "--out", str(tmp_path / "out")]
    for extra, words in ((["--student", str(other)], "vocabulary differs"),
                         (["--set", "alpha=1.5"], "alpha"),
                         (["--set", "student_layers=9"], "has 4 layers")):
        r = run_cli(*common, *extra)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
    r = run_cli("distill", "--teacher", str(teacher["checkpoint"]), "--train", teacher["train"], "--eval",
                teacher["eval"], "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "not a fine-tuned model" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_multi_seedteacher_folder_is_found_like_evaluate_finds_it(teacher, tmp_path):
    """`finetune --seeds N` leaves seed-*/model/; distill takes that run folder as evaluate and prune do."""
    import shutil

    from selfsup.adapt.tools.distill import teacher_folder

    run = tmp_path / "multi"
    for s in (0, 1):
        shutil.copytree(teacher["teacher"] / "model", run / f"seed-{s}" / "model")
    assert teacher_folder(run) == run / "seed-0" / "model"  # no metrics.json: the first seed, said on stderr
    assert teacher_folder(teacher["teacher"]) == teacher["teacher"] / "model"
    with pytest.raises(SelfsupError, match="--teacher .*not a fine-tuned model"):
        teacher_folder(teacher["checkpoint"])
