"""Audio fine-tuning (`selfsup finetune --task audio-classification`) on the shipped synthesized command words,
voices held out: a Mockingjay upstream fine-tunes far above chance with --method full, linear and lora;
linear trains exactly the head (projection + classifier) and LoRA exactly the low-rank updates of the
conformer's attention query/value and the head, leaving the encoder's weights as they were; the saved folder
loads in plain transformers (`AutoModelForAudioClassification`; LoRA through peft) with identical logits, and
`selfsup evaluate` / `selfsup predict` read it; the waveform families (wav2vec 2.0, HuBERT, data2vec-audio) and
the GRU fine-tune too; methods that make no sense for audio and bad inputs are one-line errors, nothing
written."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from selfsup import pretrain
from selfsup.adapt.core import audio
from selfsup.adapt.core.artifacts import load_finetuned
from selfsup.adapt.core.evaluation import evaluate_finetuned, predict
from selfsup.adapt.core.run import finetune
from selfsup.backbones.speech import SpeechBackbone, build_speech_encoder
from selfsup.data.audio import AudioFrontEnd, split_manifest
from selfsup.errors import SelfsupError

ROOT = Path(__file__).resolve().parents[1]
WORDS = ROOT / "src" / "selfsup" / "assets" / "speech_words" / "manifest.csv"  # selfsup:speech-words
TASK = "audio-classification"
FAST = ["threads=1", "batch_size=16"]
UPSTREAM = ["train.batch_size=16", "train.eval_every=1000", "train.checkpoint_every=1000", "train.warmup_steps=5"]


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """Train / eval manifests of the shipped words with two voices held out (every clip of them in eval)."""
    folder = tmp_path_factory.mktemp("words")
    with WORDS.open() as f:
        speakers = sorted({row["speaker"] for row in csv.DictReader(f)})
    held = speakers[::4]
    return split_manifest(WORDS, folder / "train.csv", folder / "eval.csv", "speaker", held)


@pytest.fixture(scope="module")
def mockingjay(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mockingjay") / "run"
    pretrain("mockingjay", [str(WORDS)], out, max_steps=30, progress=False, overrides=UPSTREAM)
    return out


def _rows(path: Path) -> list[dict]:
    with Path(path).open() as f:
        return list(csv.DictReader(f))


def _logits(model, folder: Path, manifest: Path) -> torch.Tensor:
    """Logits of `model` on every clip of `manifest`, read and normalized as the fine-tuned folder says."""
    front = AudioFrontEnd.from_dict(json.loads((folder / "preprocessing.json").read_text()))
    clips = audio.read_clips(str(manifest), front)
    with torch.no_grad():
        return model.eval()(**audio.clip_batch(clips, front, range(len(clips)), "cpu")).logits


def test_full_fine_tuning_recognizes_words_of_unseen_voices_and_loads_in_plain_transformers(
        mockingjay, words, tmp_path):
    from transformers import AutoModelForAudioClassification

    train, ev = words
    out = tmp_path / "run"
    m = finetune(mockingjay, TASK, str(train), str(ev), out, label_column="word", epochs=10, overrides=FAST)
    assert m["train_examples"] == len(_rows(train)) and m["eval_examples"] == len(_rows(ev))
    assert m["labels"] == sorted({r["word"] for r in _rows(train)}) and len(m["labels"]) == 10
    assert m["eval"]["accuracy"] > 0.4, m["eval"]  # 10 words: chance 0.1
    assert m["history"][-1]["train_loss"] < 0.6 * m["history"][0]["train_loss"]
    assert m["trainable_parameters"] == m["total_parameters"] and m["lr"] == 1e-3
    folder = out / "model"
    assert {"config.json", "model.safetensors", "preprocessing.json", "task.json"} <= {p.name for p in folder.iterdir()}
    # plain transformers: the same class, the same logits as selfsup's loader
    plain = AutoModelForAudioClassification.from_pretrained(folder)
    assert type(plain).__name__ == "Wav2Vec2BertForSequenceClassification"
    assert plain.config.id2label[0] == m["labels"][0]
    ours, _, info = load_finetuned(out)
    a, b = _logits(plain, folder, ev), _logits(ours, folder, ev)
    assert torch.equal(a, b)
    y = np.array([m["labels"].index(r["word"]) for r in _rows(ev)])
    assert float((a.argmax(-1).numpy() == y).mean()) == pytest.approx(m["eval"]["accuracy"], abs=1e-6)
    # selfsup evaluate / predict on the fine-tuned folder
    e = evaluate_finetuned(out, str(ev), label_column="word")
    assert e["eval"]["accuracy"] == pytest.approx(m["eval"]["accuracy"]) and e["eval"]["examples"] == len(y)
    preds = list(predict(out, str(ev)))
    assert [p["label"] for p in preds] == [m["labels"][i] for i in a.argmax(-1).tolist()]
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in preds)
    clip = _rows(ev)[0]["path"]  # split_manifest writes absolute paths
    r = run_cli("predict", "--model", str(out), clip)
    assert r.returncode == 0, r.stderr
    (one,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert one["label"] == preds[0]["label"] and one["clip"] == clip


def test_linear_trains_exactly_the_head_and_leaves_the_encoder(mockingjay, words, tmp_path):
    train, ev = words
    out = tmp_path / "run"
    m = finetune(mockingjay, TASK, str(train), str(ev), out, method="linear", label_column="word", epochs=4,
                 overrides=FAST)
    hidden, proj = 96, 768  # the recipe's hidden size; Wav2Vec2BertConfig's classifier_proj_size
    assert m["trainable_parameters"] == hidden * proj + proj + proj * 10 + 10
    assert m["eval"]["accuracy"] > 0.4, m["eval"]
    assert m["lr"] == 1e-2
    before = load_file(str(mockingjay / "model" / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    prefix = "wav2vec2_bert."
    assert {k[len(prefix):] for k in after if k.startswith(prefix)} == set(before)
    assert all(torch.equal(before[k], after[prefix + k]) for k in before)


def test_lora_trains_low_rank_attention_updates_and_reloads_through_peft(mockingjay, words, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForAudioClassification

    train, ev = words
    out = tmp_path / "run"
    m = finetune(mockingjay, TASK, str(train), str(ev), out, method="lora", label_column="word", epochs=6,
                 overrides=FAST + ["lora_r=4"])
    hidden, proj, layers, r = 96, 768, 3, 4
    lora = layers * 2 * (r * hidden + hidden * r)  # linear_q and linear_v of every conformer layer: A and B
    assert m["trainable_parameters"] == lora + hidden * proj + proj + proj * 10 + 10
    assert m["eval"]["accuracy"] > 0.4, m["eval"]
    folder = out / "model"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["linear_q", "linear_v"]
    weights = load_file(str(folder / "adapter_model.safetensors"))
    assert sum(1 for k in weights if "lora_A" in k) == layers * 2
    # peft on plain transformers gives the logits selfsup's loader gives
    base = AutoModelForAudioClassification.from_pretrained(
        config["base_model_name_or_path"], num_labels=10, id2label=dict(enumerate(m["labels"])))
    plain = PeftModel.from_pretrained(base, str(folder))
    ours, _, _ = load_finetuned(out)
    assert torch.allclose(_logits(plain, folder, ev), _logits(ours, folder, ev), atol=1e-6)
    e = evaluate_finetuned(out, str(ev), label_column="word")
    assert e["eval"]["accuracy"] == pytest.approx(m["eval"]["accuracy"])


def _tiny_encoder(folder: Path, kind: str) -> Path:
    cfg = SpeechBackbone.Config(type=kind, hidden_size=32, num_layers=2, num_heads=2, conv_dim=16)
    torch.manual_seed(0)
    encoder = build_speech_encoder(cfg, 80)
    folder.mkdir(parents=True)
    front = {"input": "logmel" if kind == "gru" else "waveform", "sample_rate": 16000, "normalize": "utterance",
             "mean": None, "std": None}
    encoder.export(folder, front)
    return folder


@pytest.mark.parametrize("kind,method", [("wav2vec2", "lora"), ("hubert", "lora"), ("data2vec-audio", "lora"),
                                         ("wav2vec2", "full"), ("gru", "full"), ("hubert", "bitfit")])
def test_every_speech_family_fine_tunes_and_reloads(kind, method, words, tmp_path):
    from transformers import AutoModelForAudioClassification

    train, ev = words
    source = _tiny_encoder(tmp_path / "encoder", kind)
    out = tmp_path / "run"
    m = finetune(source, TASK, str(train), str(ev), out, method=method, label_column="word", max_steps=2,
                 overrides=FAST)
    assert m["steps"] == 2 and 0 <= m["eval"]["accuracy"] <= 1
    ours, _, _ = load_finetuned(out)
    if method == "lora":  # the attention query / value of every transformer layer got a low-rank update
        wrapped = {n.rsplit(".", 1)[0] for n, _ in ours.named_modules() if n.endswith("lora_A")}
        assert len(wrapped) == 2 * 2 and all(n.endswith(("q_proj", "v_proj")) for n in wrapped)
        return
    if method == "bitfit":
        assert m["trainable_parameters"] == sum(p.numel() for n, p in ours.named_parameters()
                                                if n.endswith("bias") or n.startswith(("projector", "classifier")))
    plain = AutoModelForAudioClassification.from_pretrained(out / "model")
    assert torch.equal(_logits(plain, out / "model", ev), _logits(ours, out / "model", ev))


def test_crop_seconds_trains_on_random_windows(mockingjay, words, tmp_path):
    train, ev = words
    m = finetune(mockingjay, TASK, str(train), str(ev), tmp_path / "run", label_column="word", max_steps=2,
                 overrides=FAST + ["crop_seconds=0.2"])
    assert m["crop_seconds"] == 0.2
    front = AudioFrontEnd.from_dict(json.loads((mockingjay / "model" / "preprocessing.json").read_text()))
    clips = audio.read_clips(str(train), front)
    batch = audio.clip_batch(clips, front, range(8), "cpu", crop=20)
    assert batch["input_features"].shape[1] == 20 and batch["attention_mask"].sum(1).max() == 20


def test_audio_fits_take_at_least_600_steps_unless_min_steps_is_set(mockingjay, words, tmp_path, monkeypatch):
    """Audio's own step floor (speaker ID on 320 clips: 300 -> 600 steps gained 10 points, bench/small_data_kinds.py);
    text keeps 300, and a min_steps given on the command line wins."""
    from selfsup.adapt.core import fit as fit_module
    from selfsup.adapt.core.options import FinetuneConfig, total_steps

    assert total_steps(FinetuneConfig(), 10) == 300 and total_steps(FinetuneConfig(min_steps=0), 10) == 30
    seen = []

    def stop(model, feats, cfg, **kwargs):
        seen.append(total_steps(cfg, 1))
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "fit", stop)
    train, ev = words
    for extra in ([], ["min_steps=50"]):
        with pytest.raises(KeyboardInterrupt):
            finetune(mockingjay, TASK, str(train), str(ev), tmp_path / f"run{len(extra)}", label_column="word",
                     overrides=FAST + extra)
    assert seen == [600, 50]


# ---------------------------------------------------------------------------------------------- bad inputs

def test_methods_that_make_no_sense_for_audio_refuse_in_one_line(mockingjay, words, tmp_path):
    train, ev = words
    for method in ("prompt", "pet", "prefix", "soft-prompt", "early-exit", "adapter", "ia3"):
        out = tmp_path / method
        r = run_cli("finetune", "--task", TASK, "--model", str(mockingjay), "--train", str(train), "--eval", str(ev),
                    "--label-column", "word", "--method", method, "--out", str(out))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert f"--method {method}: supports" in r.stderr and f"not {TASK}" in r.stderr, r.stderr
        assert not out.exists() and not list(tmp_path.glob(f".{method}*"))


def test_bad_audio_task_inputs_are_one_line_errors(mockingjay, words, tiny_bert, tmp_path):
    train, ev = words
    (tmp_path / "unseen.csv").write_text(f"path,word\n{_rows(ev)[0]['path']},banana\n")
    base = ["finetune", "--task", TASK, "--train", str(train), "--max-steps", "1", "--set", "threads=1"]
    cases = [
        (["--model", str(mockingjay), "--eval", str(ev)], "no label column 'label'"),
        (["--model", str(mockingjay), "--eval", str(tmp_path / "unseen.csv"), "--label-column", "word"],
         "label 'banana' never seen in the training data"),
        (["--model", str(tiny_bert), "--eval", str(ev), "--label-column", "word"], "is not a speech encoder"),
        (["--model", str(tmp_path / "nothing"), "--eval", str(ev), "--label-column", "word"], "no such folder"),
        (["--model", str(mockingjay), "--eval", str(ev), "--label-column", "word", "--pair-column", "x"],
         "--pair-column: not used by audio-classification"),
        (["--model", str(mockingjay), "--eval", str(ev), "--label-column", "word", "--set", "crop_seconds=0"],
         "crop_seconds"),
    ]
    for extra, expect in cases:
        out = tmp_path / "run"
        r = run_cli(*base, *extra, "--out", str(out))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and expect in r.stderr, (expect, r.stderr)
        assert not out.exists()
    with pytest.raises(SelfsupError, match="a speech encoder; fine-tune it with --task audio-classification"):
        finetune(mockingjay, "sequence-classification", str(train), str(ev), tmp_path / "x")


def test_the_encoder_seam_reads_speech_exports(mockingjay, words):
    from selfsup.adapt.core.encoders import image_export_folder, load_encoder, speech_export_folder

    assert image_export_folder(mockingjay) is None and speech_export_folder(mockingjay) == mockingjay / "model"
    encoder = load_encoder(mockingjay)
    assert encoder.modality == "speech" and encoder.model.num_layers == 4
    front = AudioFrontEnd.from_dict(encoder.preprocessing)
    clips = audio.read_clips(str(words[1]), front)
    batch = audio.clip_batch(clips, front, range(4), "cpu")
    inputs = {"inputs": batch["input_features"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        layers, pooled = encoder.hidden_states(inputs), encoder.pooled(inputs)
        alone = encoder.pooled({"inputs": batch["input_features"][:1, :int(batch["attention_mask"][0].sum())]})
    assert len(layers) == 4 and pooled.shape == (4, 96)
    assert torch.allclose(pooled[0], alone[0], atol=1e-5)  # the mean over real frames: padding does not count
