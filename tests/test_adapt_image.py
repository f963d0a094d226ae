"""Image fine-tuning (`selfsup finetune --task image-classification`) on real images (scikit-learn's digits):
a SimCLR-pretrained tiny ResNet fine-tunes with 10% of the labels far above chance; --method linear trains
exactly the head and leaves the encoder (BatchNorm statistics included) untouched; --init scratch rebuilds
the same architecture with fresh seeded weights; few-label subsets and seeds; the saved model reloads; bad
inputs are one-line SelfsupErrors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from selfsup import pretrain
from selfsup.adapt.core.run import finetune
from selfsup.adapt.core.images import load_classifier
from selfsup.cli import main
from selfsup.errors import SelfsupError

TINY = ["data.image_size=16", "train.batch_size=64", "train.threads=1", "train.eval_every=1000",
        "train.checkpoint_every=1000", "train.eval_batches=1", "train.warmup_steps=5",
        "model.embedding_size=16", "model.hidden_sizes=[16,32,64]", "model.depths=[1,1,1]"]
FAST = ["threads=1", "batch_size=32"]
TASK = "image-classification"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits (8x8) as two labelled .npz files: 1,200 to fine-tune on, 597 to score."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    for name, idx in (("train", perm[:1200]), ("eval", perm[1200:])):
        np.savez(folder / f"{name}.npz", x=np.rint(d.images[idx] * 255 / 16).astype(np.uint8), y=d.target[idx])
    return str(folder / "train.npz"), str(folder / "eval.npz")


@pytest.fixture(scope="module")
def simclr(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("simclr") / "run"
    pretrain("simclr", ["sklearn:digits"], out, max_steps=40, progress=False, overrides=TINY)
    return out


def test_pretrained_encoder_fine_tunes_with_ten_percent_of_the_labels(simclr, digits, tmp_path):
    train, ev = digits
    out = tmp_path / "run"
    m = finetune(simclr, TASK, train, ev, out, train_fraction=0.1, epochs=12, overrides=FAST + ["eval_every=4"])
    assert m["train_examples"] == 120 and m["eval_examples"] == 597
    assert m["eval"]["accuracy"] > 0.6 and m["eval"]["macro_f1"] > 0.55, m["eval"]  # 10 classes: chance 0.1
    assert m["trainable_parameters"] == m["total_parameters"] > 50_000
    assert [h["epoch"] for h in m["history"]] == list(range(1, 13))
    assert all("train_loss" in h and "train_accuracy" in h for h in m["history"])
    assert [h["epoch"] for h in m["history"] if "accuracy" in h] == [4, 8, 12]
    assert m["history"][-1]["train_loss"] < 0.7 * m["history"][0]["train_loss"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["eval"] == m["eval"] and (out / "curves.png").is_file()
    files = {p.name for p in (out / "model").iterdir()}
    assert {"config.json", "model.safetensors", "preprocessing.json", "head.safetensors", "head.json"} <= files
    # the saved encoder + head reproduce the reported accuracy
    model, prep, info = load_classifier(out)
    assert info["labels"] == [str(i) for i in range(10)]
    z = np.load(ev)
    from selfsup.data.images import ImageDataConfig, load_images

    imgs = load_images([ev], ImageDataConfig(image_size=16, channels=1, holdout_fraction=0.0))
    x = torch.from_numpy(np.array(imgs.images)).float() / 255.0
    x = (x - torch.tensor(prep["mean"]).view(1, -1, 1, 1)) / torch.tensor(prep["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        acc = float((model(x).argmax(-1).numpy() == z["y"]).mean())
    assert acc == pytest.approx(m["eval"]["accuracy"], abs=1e-6)


def test_linear_method_trains_exactly_the_head(simclr, digits, tmp_path):
    train, ev = digits
    m = finetune(simclr, TASK, train, ev, tmp_path / "run", method="linear", train_fraction=0.1, epochs=8,
                 overrides=FAST + ["eval_every=8"])
    assert m["trainable_parameters"] == m["head_parameters"] == 64 * 10 + 10
    assert m["eval"]["accuracy"] > 0.5, m["eval"]
    before = load_file(str(simclr / "model" / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert before.keys() == after.keys()
    for name, w in before.items():  # weights and BatchNorm running statistics
        assert torch.equal(w, after[name]), name


def test_scratch_reinitializes_the_same_architecture(simclr, digits, tmp_path):
    train, ev = digits
    runs = {}
    for tag, init in (("a", "scratch"), ("b", "scratch"), ("p", "pretrained")):
        runs[tag] = finetune(simclr, TASK, train, ev, tmp_path / tag, method="linear", init=init, shots=2,
                             max_steps=2, overrides=FAST)
        assert runs[tag]["init"] == init
    weights = {tag: load_file(str(tmp_path / tag / "model" / "model.safetensors")) for tag in runs}
    pretrained = load_file(str(simclr / "model" / "model.safetensors"))
    assert {k: v.shape for k, v in weights["a"].items()} == {k: v.shape for k, v in pretrained.items()}
    convs = [k for k, v in pretrained.items() if v.ndim == 4]
    assert convs and all(not torch.equal(weights["a"][k], pretrained[k]) for k in convs)
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in pretrained)  # seeded
    assert all(torch.equal(weights["p"][k], pretrained[k]) for k in pretrained)
    assert runs["a"]["total_parameters"] == runs["p"]["total_parameters"]


def test_shots_seeds_and_the_cli(simclr, digits, tmp_path, capsys):
    train, ev = digits
    out = tmp_path / "cli"
    assert main(["finetune", "--model", str(simclr), "--task", TASK, "--train", train, "--eval", ev, "--out",
                 str(out), "--shots", "3", "--seeds", "2", "--max-steps", "3", "--set", "threads=1",
                 "--set", "augment=crop-flip", "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["seeds"] == [0, 1] and m["train_examples"] == 30 and set(m["eval_mean_std"]) >= {"accuracy", "macro_f1"}
    assert (out / "seed-0" / "model" / "head.safetensors").is_file() and (out / "seed-1" / "metrics.json").is_file()
    assert "eval: " in capsys.readouterr().out
    # the fine-tuned folder is itself an exported encoder: it fine-tunes again (and probes)
    again = finetune(out / "seed-0", TASK, train, ev, tmp_path / "again", method="linear", max_steps=1,
                     overrides=FAST)
    assert again["trainable_parameters"] == 650


def test_vit_encoders_fine_tune_from_scratch_and_pretrained(digits, tmp_path):
    train, ev = digits
    run = tmp_path / "vit"
    pretrain("simclr", ["sklearn:digits"], run, max_steps=2, progress=False,
             overrides=TINY + ["model.type=vit", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2"])
    for init in ("pretrained", "scratch"):
        m = finetune(run, TASK, train, ev, tmp_path / init, init=init, shots=1, max_steps=1, overrides=FAST)
        assert m["total_parameters"] == sum(v.numel() for v in load_file(
            str(run / "model" / "model.safetensors")).values()) + 32 * 10 + 10


def test_bad_inputs_are_one_line_errors(simclr, digits, tmp_path, capsys):
    train, ev = digits
    text_model = tmp_path / "bert"
    text_model.mkdir()
    (text_model / "config.json").write_text('{"model_type": "bert"}')
    igpt = tmp_path / "igpt" / "model"
    igpt.mkdir(parents=True)
    (igpt / "preprocessing.json").write_text('{"model_type": "igpt", "image_size": 8, "channels": 1}')
    unlabeled = tmp_path / "unlabeled.npz"
    np.savez(unlabeled, x=np.zeros((4, 8, 8), np.uint8))
    cases = [
        (text_model, TASK, train, "not an exported image encoder"),
        (simclr, "sequence-classification", train, "fine-tune it with --task image-classification"),
        (simclr, TASK, str(tmp_path / "missing.npz"), "no such file or folder"),
        (igpt.parent, TASK, train, "fine-tunes resnet and vit encoders, not 'igpt'"),
        (simclr, TASK, str(unlabeled), "has no label"),
        (tmp_path / "nowhere", TASK, train, "no such folder"),
    ]
    for i, (model, task, data, message) in enumerate(cases):
        with pytest.raises(SelfsupError, match=message.replace("(", r"\(")):
            finetune(model, task, data, ev, tmp_path / f"out{i}", max_steps=1, overrides=FAST)
        assert not (tmp_path / f"out{i}").exists()
    with pytest.raises(SelfsupError, match="--shots 200 but some classes have fewer"):
        finetune(simclr, TASK, train, ev, tmp_path / "shots", shots=200, overrides=FAST)
    with pytest.raises(SelfsupError, match="method"):
        finetune(simclr, TASK, train, ev, tmp_path / "m", method="lora", overrides=FAST)
    assert main(["finetune", "--model", str(text_model), "--task", TASK, "--train", train, "--eval", ev,
                 "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not an exported image encoder" in err


def test_evaluate_and_predict_a_fine_tuned_image_classifier(simclr, digits, tmp_path, capsys):
    """`selfsup evaluate` gives the metrics fine-tuning reported on the same file; `selfsup predict` one row per
    image whose label is its most probable class; stdin and foreign labels are one-line errors."""
    train, ev = digits
    m = finetune(simclr, TASK, train, ev, tmp_path / "run", max_steps=20, overrides=FAST)
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--eval", ev, "--out", str(tmp_path / "ev.json")]) == 0
    got = json.loads((tmp_path / "ev.json").read_text())["eval"]
    assert got["examples"] == 597
    for key in ("accuracy", "macro_f1", "mcc", "loss"):
        assert got[key] == pytest.approx(m["eval"][key], abs=1e-6)
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "run"), ev]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 597 and rows[0]["image"].endswith("image 0")
    for r in rows:
        assert set(r["probabilities"]) == {str(d) for d in range(10)}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    y = np.load(ev)["y"]
    assert np.mean([r["label"] == str(t) for r, t in zip(rows, y)]) == pytest.approx(got["accuracy"], abs=1e-9)
    assert main(["predict", "--model", str(tmp_path / "run"), "-"]) == 2
    np.savez(tmp_path / "odd.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([3, 11]))
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--eval", str(tmp_path / "odd.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "standard input" in err[0] and "11" in err[1] and "odd.npz" in err[1]
    # a reader that stops early (`selfsup predict ... | head -1`): no traceback, the pipe's exit status
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "selfsup", "predict", "--model", str(tmp_path / "run"), ev,
                             "--batch-size", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline())["image"].endswith("image 0")
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in proc.stderr.read()
