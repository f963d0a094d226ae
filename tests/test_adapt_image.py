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
from selfsup.adapt.core.evaluation import evaluate_finetuned
from selfsup.adapt.core.image_model import ImageClassifier, to_transformers
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


def _encoder_weights(run) -> dict:
    """The encoder's weights inside a fine-tuned ResNetForImageClassification (keys as in the encoder export)."""
    saved = load_file(str(run / "model" / "model.safetensors"))
    assert {k for k in saved if not k.startswith("resnet.")} == {"classifier.1.weight", "classifier.1.bias"}
    return {k[len("resnet."):]: v for k, v in saved.items() if k.startswith("resnet.")}


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
    assert {"config.json", "model.safetensors", "preprocessing.json", "preprocessor_config.json", "task.json",
            "README.md"} <= files and "head.safetensors" not in files
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
    after = _encoder_weights(tmp_path / "run")
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
    weights = {tag: _encoder_weights(tmp_path / tag) for tag in runs}
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
    assert (out / "seed-0" / "model" / "model.safetensors").is_file() and (out / "seed-1" / "metrics.json").is_file()
    assert "eval: " in capsys.readouterr().out
    # the fine-tuned folder is itself an exported encoder: it fine-tunes again (and probes)
    again = finetune(out / "seed-0", TASK, train, ev, tmp_path / "again", method="linear", max_steps=1,
                     overrides=FAST)
    assert again["trainable_parameters"] == 650


def test_vit_encoders_fine_tune_from_scratch_and_pretrained(digits, tmp_path):
    """A ViT fine-tunes (pretrained and scratch); the [CLS]-pooled one saves as ViTForImageClassification, the
    mean-pooled one (the default) as Dinov2ForImageClassification (ViT's class reads [CLS] only), both with
    selfsup's logits in plain transformers; the DINOv2 folder fine-tunes again."""
    train, ev = digits
    vit = TINY + ["model.type=vit", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2"]
    for pooling, cls in (("mean", "Dinov2ForImageClassification"), ("cls", "ViTForImageClassification")):
        run = tmp_path / f"vit-{pooling}"
        pretrain("simclr", ["sklearn:digits"], run, max_steps=2, progress=False,
                 overrides=vit + [f"model.pooling={pooling}"])
        for init in ("pretrained", "scratch") if pooling == "mean" else ("pretrained",):
            out = tmp_path / f"{pooling}-{init}"
            m = finetune(run, TASK, train, ev, out, init=init, shots=1, max_steps=1, overrides=FAST)
            assert m["total_parameters"] == sum(v.numel() for v in load_file(
                str(run / "model" / "model.safetensors")).values()) + 32 * 10 + 10
            if init == "pretrained":  # the saved transformers model scores as the trained selfsup classifier did
                got = evaluate_finetuned(out, ev)["eval"]
                assert got["loss"] == pytest.approx(m["eval"]["loss"], abs=1e-5), (got, m["eval"])
        _loads_in_plain_transformers(tmp_path / f"{pooling}-pretrained", ev, m["labels"], cls)
    again = finetune(tmp_path / "mean-pretrained", TASK, train, ev, tmp_path / "again", shots=1, max_steps=1,
                     overrides=FAST)
    _loads_in_plain_transformers(tmp_path / "again", ev, again["labels"], "Dinov2ForImageClassification")


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
    _loads_in_plain_transformers(tmp_path / "run", ev, m["labels"], "ResNetForImageClassification")
    assert main(["predict", "--model", str(tmp_path / "run"), "-"]) == 2
    np.savez(tmp_path / "odd.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([3, 11]))
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--eval", str(tmp_path / "odd.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "standard input" in err[0] and "11" in err[1] and "odd.npz" in err[1]
    # verbs for text models refuse it in one line (its task.json names an image kind)
    assert main(["prune", "--model", str(tmp_path / "run"), "--eval", ev, "--out", str(tmp_path / "pr"),
                 "--layers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a fine-tuned image classifier" in err[0] and not (tmp_path / "pr").exists()
    # a reader that stops early (`selfsup predict ... | head -1`): no traceback, the pipe's exit status
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "selfsup", "predict", "--model", str(tmp_path / "run"), ev,
                             "--batch-size", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline())["image"].endswith("image 0")
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in proc.stderr.read()


def _loads_in_plain_transformers(run, ev: str, labels: list[str], cls: str) -> None:
    """The fine-tuned folder in plain transformers (AutoImageProcessor + AutoModelForImageClassification) gives
    selfsup's logits on uint8 arrays, PIL images and images at another size, and `predict`'s labels; its model
    card's loading snippet runs as written."""
    import re

    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from selfsup.adapt.core.evaluation import predict
    from selfsup.data.images import ImageDataConfig, load_images

    folder = run / "model"
    rows = list(predict(run, ev))
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    assert model.config.id2label == dict(enumerate(labels)) and model.config.label2id == {l: i for i, l in
                                                                                            enumerate(labels)}
    ours, prep, _ = load_classifier(run)
    size = prep["image_size"]
    imgs = np.array(load_images([ev], ImageDataConfig(image_size=size, channels=prep["channels"],
                                                      holdout_fraction=0.0)).images)  # (N, 1, 16, 16) uint8
    x = torch.from_numpy(imgs).float() / 255.0
    x = (x - torch.tensor(prep["mean"]).view(1, -1, 1, 1)) / torch.tensor(prep["std"]).view(1, -1, 1, 1)
    raw = np.load(ev)["x"]  # the 8x8 originals: the processor resizes them as selfsup's reader does
    with torch.no_grad():
        expected = ours(x)
        for images in (list(imgs), [Image.fromarray(a[0]) for a in imgs], [Image.fromarray(a) for a in raw]):
            inputs = processor(images, return_tensors="pt")
            assert inputs["pixel_values"].shape == (len(imgs), 1, size, size)
            logits = model(**inputs).logits
            torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert [labels[i] for i in logits.argmax(-1).tolist()] == [r["label"] for r in rows]
    card = (folder / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert type(model).__name__ == cls and cls in snippet and "AutoImageProcessor" in snippet
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the card's own code, as a reader would paste it
    assert type(scope["model"]).__name__ == cls
    assert scope["processor"](list(imgs[:2]), return_tensors="pt")["pixel_values"].shape == (2, 1, size, size)


@pytest.mark.parametrize("kind", ["resnet", "vit-cls", "vit-mean", "dinov2-cls", "vit-odd-mlp"])
def test_transformers_classes_compute_the_selfsup_classifier_exactly(kind, tmp_path):
    """`to_transformers` on random weights (BatchNorm statistics included): the transformers class, saved and
    reloaded by AutoModelForImageClassification, gives ImageClassifier's logits; a ViT whose MLP width DINOv2
    cannot express has no transformers class (None: selfsup's format)."""
    import transformers as tf

    from selfsup.backbones.vision import VisionEncoder

    torch.manual_seed(0)
    vit = dict(image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=100 if kind == "vit-odd-mlp" else 96)
    if kind == "resnet":
        hf = tf.ResNetModel(tf.ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                            layer_type="basic", downsample_in_first_stage=False))
    elif kind == "dinov2-cls":
        hf = tf.Dinov2Model(tf.Dinov2Config(**{k: v for k, v in vit.items() if k != "intermediate_size"}, mlp_ratio=3))
    else:
        hf = tf.ViTModel(tf.ViTConfig(**vit), add_pooling_layer=False)
    with torch.no_grad():
        for name, t in hf.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.5 if "running_var" in name else torch.randn_like(t) * 0.1)
    classifier = ImageClassifier(VisionEncoder(hf, kind.split("-")[1] if "-" in kind else "auto"), 3, 0).eval()
    native = to_transformers(classifier, ["a", "b", "c"])
    if kind == "vit-odd-mlp":
        assert native is None
        return
    native.save_pretrained(tmp_path)
    plain = tf.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    expected = {"resnet": "ResNetForImageClassification", "vit-cls": "ViTForImageClassification"}.get(
        kind, "Dinov2ForImageClassification")
    assert type(plain).__name__ == expected and plain.config.id2label == {0: "a", 1: "b", 2: "c"}
    x = torch.randn(6, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain(pixel_values=x).logits, classifier(x), rtol=1e-5, atol=1e-5)


def test_folders_of_the_old_format_still_predict(simclr, digits, tmp_path):
    """A fine-tuned folder written before the transformers classes (encoder + head.safetensors + head.json, no
    task.json) still evaluates and predicts with selfsup."""
    import shutil

    from safetensors.torch import save_file

    from selfsup.adapt.core.evaluation import predict

    _, ev = digits
    old = tmp_path / "old" / "model"
    shutil.copytree(simclr / "model", old)
    (old / "README.md").unlink(missing_ok=True)
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 10)
    save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(old / "head.safetensors"))
    (old / "head.json").write_text(json.dumps({"task": TASK, "labels": [str(i) for i in range(10)], "feature_dim": 64,
                                               "num_labels": 10, "pooling": "avg"}))
    model, _, info = load_classifier(old.parent)
    assert type(model).__name__ == "ImageClassifier" and torch.equal(model.head.weight, head.weight)
    assert evaluate_finetuned(old.parent, ev)["eval"]["examples"] == 597
    assert len(list(predict(old.parent, ev))) == 597
