"""PET / iPET (`selfsup finetune --method pet --unlabeled FILE`, Schick & Schütze 2021): the ensemble's soft
labels are distributions equal to softmax(weighted mean score / T) on hand-computed cases, PVPs are weighted by
their accuracy before training, the final classifier's loss is KL(soft || softmax(logits)), iPET's selection is
class-balanced and most-confident-first with PET's growth; a real run (which Austen novel is this passage
from?, a tiny BERT) writes pvp-*/, model/, soft_labels.jsonl and metrics.json, its soft labels are exactly the
saved PVP models' ensemble, its final classifier learns them (KL drops) and reloads for evaluate / predict;
an iPET round adds pseudo-labeled examples; bad inputs are one-line errors (exit 2) that leave no --out."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from selfsup.adapt.core.evaluation import predict_logits as teacher_logits
from selfsup.adapt.core.evaluation import evaluate_finetuned, predict
from selfsup.adapt.core.run import finetune
from selfsup.adapt.core.artifacts import load_finetuned
from selfsup.adapt.methods.pet import (ensemble_soft_labels, pseudo_label_count, pvp_weights, select_pseudo_labeled)
from selfsup.data.austen import austen_novels_task
from selfsup.losses import soft_target_kl
from test_adapt_heads import make_checkpoint

FAST = ["threads=1", "max_length=48", "batch_size=8", "lr=3e-3"]
TWO_PVPS = ['patterns=["{text} It was {mask}.", "{mask}: {text}"]',
            "verbalizers=[{persuasion: anne, northangerabbey: catherine}, {persuasion: persuasion, "
            "northangerabbey: abbey}]"]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, persuasion) -> dict:
    """A tiny BERT (tokenizer trained on Persuasion), Persuasion vs Northanger Abbey passages, and 40 unlabeled
    passages (the first training rows, with their labels left in: PET must ignore them)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("pet")
    texts = [t for t in persuasion.read_text().split("\n\n")[:300] if t.strip()]
    ckpt = make_checkpoint(folder, "bert", texts)
    task = austen_novels_task(folder / "task", passage_words=25, train_per_class=30, eval_per_class=20,
                              novels=["persuasion", "northangerabbey"])
    rows = Path(task["train"]).read_text().splitlines()[:40]
    (folder / "unlabeled.jsonl").write_text("\n".join(rows) + "\n")
    return {"ckpt": ckpt, "train": task["train"], "eval": task["eval"], "unlabeled": str(folder / "unlabeled.jsonl"),
            "folder": folder}


@pytest.fixture(scope="module")
def pet_run(setup) -> tuple[Path, dict]:
    out = setup["folder"] / "run"
    m = finetune(setup["ckpt"], "sequence-classification", setup["train"], setup["eval"], out, method="pet",
                 unlabeled=setup["unlabeled"], shots=16, epochs=15,
                 overrides=FAST + TWO_PVPS + ["pet_temperature=0.5", "pet_final_epochs=20"])
    return out, m


# ---------------------------------------------------------------------------- hand-computed formulas

def test_soft_labels_are_distributions_equal_to_the_hand_formula():
    # weights (1, 3), T = 2. Row 0: mean = (0.5, 1.5) -> softmax((0.25, 0.75)) -> p0 = sigmoid(-0.5).
    # Row 1: mean = (0.75, -0.75) -> softmax((0.375, -0.375)) -> p0 = sigmoid(0.75).
    scores = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [1.0, -1.0]]])
    soft = ensemble_soft_labels(scores, [1.0, 3.0], 2.0)
    assert soft[0, 0].item() == pytest.approx(_sigmoid(-0.5), abs=1e-6)
    assert soft[1, 0].item() == pytest.approx(_sigmoid(0.75), abs=1e-6)
    many = ensemble_soft_labels(torch.randn(3, 50, 4) * 5, [0.2, 0.5, 0.9], 2.0)
    assert many.shape == (50, 4) and bool((many >= 0).all())
    assert torch.allclose(many.sum(1), torch.ones(50), atol=1e-6)
    # weights summing to 0 count as uniform; a lower temperature sharpens the same ensemble
    assert torch.allclose(ensemble_soft_labels(scores, [0.0, 0.0], 2.0), ensemble_soft_labels(scores, [1, 1], 2.0))
    assert ensemble_soft_labels(scores, [1, 3], 0.5)[0, 1] > soft[0, 1]


def test_patterns_are_weighted_by_their_accuracy_before_training():
    assert pvp_weights([0.5, 0.25, 0.25], "accuracy") == [0.5, 0.25, 0.25]
    assert pvp_weights([0.5, 0.25, 0.25], "uniform") == [1.0, 1.0, 1.0]
    assert pvp_weights([0.0, 0.0], "accuracy") == [1.0, 1.0]  # no information: uniform
    # pattern 0 (accuracy 0.5) favours class 0, patterns 1 and 2 (0.25 each) class 1: by accuracy they balance
    # out, (0.5 * 1 + 0.5 * 0) = 0.5 for both classes; uniformly class 1 wins: mean (1/3, 2/3)
    scores = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 1.0]]])
    by_accuracy = ensemble_soft_labels(scores, pvp_weights([0.5, 0.25, 0.25], "accuracy"), 1.0)
    uniform = ensemble_soft_labels(scores, pvp_weights([0.5, 0.25, 0.25], "uniform"), 1.0)
    assert by_accuracy[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    assert uniform[0, 0].item() == pytest.approx(_sigmoid(-1 / 3), abs=1e-6)


def test_final_classifier_loss_is_kl_to_the_soft_labels():
    logits = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    soft = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    # row 0: p = (sigmoid(1), sigmoid(-1)); row 1: p = (1/2, 1/2), q = (1, 0): 1 * ln(1 / 0.5), 0 ln 0 = 0
    row0 = 0.25 * math.log(0.25 / _sigmoid(1)) + 0.75 * math.log(0.75 / _sigmoid(-1))
    assert soft_target_kl(logits, soft).item() == pytest.approx((row0 + math.log(2)) / 2, rel=1e-6)
    assert soft_target_kl(logits, torch.softmax(logits, -1)).item() == pytest.approx(0.0, abs=1e-7)


def test_ipet_selection_is_class_balanced_most_confident_first():
    probs = [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.55, 0.45], [0.1, 0.9]]
    # 2 per class: class 0 predicted for 0 (.9), 1 (.6), 4 (.55); class 1 for 5 (.9), 2 (.8), 3 (.7)
    assert select_pseudo_labeled(probs, 4, [5, 5]) == [(0, 0), (1, 0), (2, 1), (5, 1)]
    # shares follow the labeled set (2:1 -> 4 and 2); class 0 has only 3 predicted examples: capped
    assert select_pseudo_labeled(probs, 6, [2, 1]) == [(0, 0), (1, 0), (2, 1), (4, 0), (5, 1)]
    assert len(select_pseudo_labeled(probs, 5, [1, 1])) == 5  # 2.5 / 2.5: the remainder goes to class 0
    # PET's growth d = 5: round r trains on labeled * 5^r, so labeled * (5^r - 1) are added, capped by the pool
    assert pseudo_label_count(8, 1, 5, 100) == 32 and pseudo_label_count(8, 2, 5, 100) == 100
    assert pseudo_label_count(8, 1, 5, 20) == 20


# ----------------------------------------------------------------------------------------- a real run

def test_pet_run_writes_its_parts_and_the_final_classifier_learns_the_soft_labels(setup, pet_run):
    out, m = pet_run
    for part in ("pvp-0/model/config.json", "pvp-1/model/task.json", "pvp-0/metrics.json", "model/config.json",
                 "model/task.json", "metrics.json", "soft_labels.jsonl", "curves.png"):
        assert (out / part).is_file(), part
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= {"eval", "pvps", "ensemble", "unlabeled_examples", "trainable_parameters",
                          "total_parameters", "history", "config"}
    assert saved["method"] == "pet" and saved["unlabeled_examples"] == 40 and saved["labeled_examples"] == 32
    assert saved["trainable_parameters"] == saved["total_parameters"]  # full fine-tuning of the final classifier
    assert [p["pattern"] for p in saved["pvps"]] == ["{text} It was {mask}.", "{mask}: {text}"]
    assert saved["pvps"][0]["verbalizer"] == {"northangerabbey": ["catherine"], "persuasion": ["anne"]}
    for p in saved["pvps"]:
        assert 0 <= p["eval"]["accuracy"] <= 1 and p["eval"]["examples"] == 40 and p["train_examples"] == 32
        assert p["weight"] == p["pretrain_accuracy"] and (p["pretrain_accuracy"] * 32).is_integer()
    assert 0 <= saved["ensemble"]["accuracy"] <= 1 and saved["ensemble"]["examples"] == 40

    # soft labels: distributions, exactly the weighted ensemble of the saved PVP models at T = 0.5
    rows = [json.loads(line) for line in (out / "soft_labels.jsonl").read_text().splitlines()]
    soft = torch.tensor([[r["probabilities"][lab] for lab in m["labels"]] for r in rows])
    assert soft.shape == (40, 2) and bool((soft >= 0).all())
    assert torch.allclose(soft.sum(1), torch.ones(40), atol=1e-5)
    # the trained PVPs are not indifferent (0.5): there is something to learn (0.89 here; it varied from 0.50 to
    # 0.72 from one process to the next while the tokenizer's ids did: tests/test_tokenizer.py)
    assert soft.max(1).values.mean() > 0.6
    from selfsup.adapt.core.kinds import Columns
    from selfsup.adapt.core.tasks import read_task

    pool = read_task(setup["unlabeled"], "sequence-classification", Columns(), labeled=False)
    scores = []
    for i in range(2):
        model, prompts, info = load_finetuned(out / f"pvp-{i}")
        feats = prompts.encode_prompts(pool, None, info["max_length"])
        scores.append(torch.tensor(teacher_logits(model, feats, 64, prompts.pad_token_id, torch.device("cpu"))))
    again = ensemble_soft_labels(torch.stack(scores), [p["weight"] for p in saved["pvps"]], 0.5)
    assert torch.allclose(again, soft, atol=2e-5)

    # the final classifier, trained on KL(soft || softmax(logits)) only, fits them
    losses = [h["train_loss"] for h in m["history"]]
    assert len(losses) == 20 and losses[-1] < 0.3 * losses[0], losses


def test_pet_model_reloads_for_evaluate_and_predict(setup, pet_run):
    out, m = pet_run
    model, tok, info = load_finetuned(out)
    assert info["method"] == "pet" and info["labels"] == m["labels"] and not model.training
    again = evaluate_finetuned(out, setup["eval"], overrides=["threads=1"])
    assert again["eval"]["loss"] == pytest.approx(m["eval"]["loss"], abs=1e-5)
    assert again["eval"]["accuracy"] == m["eval"]["accuracy"]
    preds = list(predict(out, setup["unlabeled"], overrides=["threads=1"]))
    assert len(preds) == 40 and set(preds[0]["probabilities"]) == set(m["labels"])


def test_ipet_round_adds_pseudo_labeled_examples(setup, tmp_path):
    m = finetune(setup["ckpt"], "sequence-classification", setup["train"], setup["eval"], tmp_path / "run",
                 method="pet", unlabeled=setup["unlabeled"], shots=4, epochs=6,
                 overrides=FAST + TWO_PVPS + ["ipet_rounds=1", "ipet_factor=3", "pet_final_epochs=1"])
    zero, one = m["ipet"]
    assert zero["round"] == 0 and zero["train_examples"] == [8, 8] and zero["added"] == [0, 0]
    assert one["round"] == 1 and one["target_added"] == 16  # 8 labeled * (3^1 - 1), the pool has 40
    for i in range(2):
        per_class = one["added_per_class"][i]
        assert sum(per_class.values()) == one["added"][i] <= 16
        assert all(n <= 8 for n in per_class.values())  # balanced as the labeled set: at most 16 / 2 each
        assert one["train_examples"][i] == m["pvps"][i]["train_examples"] == 8 + one["added"][i]
        rows = [json.loads(line) for line in (tmp_path / "run" / f"pvp-{i}" / "pseudo_labeled.jsonl")
                .read_text().splitlines()]
        assert len(rows) == one["added"][i] > 0
        assert {lab: sum(r["label"] == lab for r in rows) for lab in per_class} == per_class
        confidence = {lab: [r["confidence"] for r in rows if r["label"] == lab] for lab in per_class}
        assert all(c >= 0.5 for cs in confidence.values() for c in cs)  # each is its class's argmax
    assert m["ipet_rounds"] == 1 and "ensemble" in one and len(one["pvps"]) == 2


def test_several_seeds_report_the_ensemble_mean(setup, tmp_path):
    m = finetune(setup["ckpt"], "sequence-classification", setup["train"], setup["eval"], tmp_path / "run",
                 method="pet", unlabeled=setup["unlabeled"], shots=2, max_steps=1, seeds=2,
                 overrides=FAST + TWO_PVPS + ["pet_weighting=uniform"])
    assert m["seeds"] == [0, 1] and set(m["ensemble"]) >= {"accuracy", "loss"} and "accuracy" in m["ensemble_std"]
    assert len(m["pvps"]) == 2 and m["pvps"][0]["weights"] == [1.0, 1.0]
    for s in (0, 1):
        assert (tmp_path / "run" / f"seed-{s}" / "pvp-1" / "model" / "task.json").is_file()
        assert (tmp_path / "run" / f"seed-{s}" / "model" / "task.json").is_file()


# ---------------------------------------------------------------------------------------- bad inputs

def test_bad_pet_inputs_are_one_line_errors(setup, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    base = ["finetune", "--model", str(setup["ckpt"]), "--train", setup["train"], "--eval", setup["eval"],
            "--method", "pet", "--max-steps", "1", "--set", "threads=1", "--out", str(tmp_path / "run")]
    cases = [(["--task", "sequence-classification"], "--unlabeled: --method pet needs unlabeled examples"),
             (["--task", "sequence-classification", "--unlabeled", str(tmp_path / "empty.jsonl")], "empty"),
             (["--task", "sequence-regression", "--unlabeled", setup["unlabeled"]],
              "--method pet: supports sequence-classification, pair-classification only"),
             (["--task", "sequence-classification", "--unlabeled", setup["unlabeled"], "--set",
               "verbalizers=[{persuasion: anne, northangerabbey: catherine}]"], "verbalizers: 1 verbalizers for 3 "
                                                                                "patterns"),
             (["--task", "sequence-classification", "--unlabeled", setup["unlabeled"], "--set",
               'patterns=["{text} It was {mask}.", "{text} no blank"]'], "patterns[1]: needs exactly one {mask}")]
    for extra, expect in cases:
        r = run_cli(*base, *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and expect in r.stderr, r.stderr
        assert not (tmp_path / "run").exists()
