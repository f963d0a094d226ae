"""SUPERB probe of a frozen speech upstream: the layer weights are a softmax (uniform at the start, summing to
1), only the weights and the head train while the upstream stays bit-identical, keyword spotting on unseen
voices beats chance clearly, the frame and CTC tasks give numbers in range at the model's own frame rate, WER
is jiwer's on a hand example, and bad input is one line (exit 2) with nothing written."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.evaluation.superb import (SuperbProbe, UpstreamFeatures, WeightedLayerSum, audio_config,
                                       greedy_ctc_decode, logmel_baseline, pooled, probe_loss, random_like,
                                       superb_probe)


def held_out_split(manifest: Path, folder: Path, column: str, held: list[str]) -> tuple[str, str]:
    from selfsup.data.audio import split_manifest

    train, ev = split_manifest(manifest, folder / f"train-{column}.csv", folder / f"eval-{column}.csv", column, held)
    return str(train), str(ev)


@pytest.fixture(scope="session")
def speech_sets(tmp_path_factory) -> dict[str, Path]:
    """The shipped word and sentence sets, or small synthesized ones where they are not there yet."""
    from selfsup.data import speech_synth

    found = {n: speech_synth.EMBEDDED[n] / "manifest.csv" for n in ("speech-words", "speech-sentences")}
    if all(p.is_file() for p in found.values()):
        return {"words": found["speech-words"], "sentences": found["speech-sentences"]}
    folder = tmp_path_factory.mktemp("speech")
    words = speech_synth.make_word_set(folder / "words", accents=["en-us", "en-gb-scotland"],
                                       variants=["m1", "f1", "m3"])
    return {"words": words, "sentences": speech_synth.make_sentence_set(folder / "sentences", 40)}


@pytest.fixture(scope="session")
def words(speech_sets, tmp_path_factory) -> tuple[str, str]:
    """Keyword spotting with two voices held out."""
    speakers = sorted({r["speaker"] for r in csv.DictReader(speech_sets["words"].open())})
    return held_out_split(speech_sets["words"], tmp_path_factory.mktemp("kws"), "speaker", speakers[::4][:2])


@pytest.fixture(scope="session")
def sentences(speech_sets, tmp_path_factory) -> tuple[str, str]:
    rows = list(csv.DictReader(speech_sets["sentences"].open()))
    folder = tmp_path_factory.mktemp("sentences")
    for name, chosen in (("train", rows[:32]), ("eval", rows[32:40])):
        with (folder / f"{name}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({**r, "path": str(speech_sets["sentences"].parent / r["path"])} for r in chosen)
    return str(folder / "train.csv"), str(folder / "eval.csv")


@pytest.fixture(scope="session")
def mockingjay(words, tmp_path_factory) -> Path:
    from selfsup.engine.pretrain import pretrain

    out = tmp_path_factory.mktemp("mj") / "run"
    pretrain("mockingjay", [words[0]], out, max_steps=20, progress=False, quiet=True,
             overrides=["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "train.batch_size=8",
                        "train.eval_every=1000", "train.checkpoint_every=1000"])
    return out


@pytest.fixture(scope="session")
def wav2vec2_folder(tmp_path_factory) -> Path:
    """A plain random-init Hugging Face Wav2Vec2Model, save_pretrained, no preprocessing.json."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                         feat_extract_norm="layer", do_stable_layer_norm=True)
    folder = tmp_path_factory.mktemp("w2v2") / "hf"
    Wav2Vec2Model(cfg).save_pretrained(str(folder))
    return folder


def test_weighted_sum_is_a_softmax_that_starts_uniform():
    layers = torch.randn(4, 3, 5, 8)
    ws = WeightedLayerSum(4)
    assert torch.allclose(ws(layers), layers.mean(0), atol=1e-6) and ws.normalized() == [0.25] * 4
    with torch.no_grad():
        ws.weights.copy_(torch.tensor([0.0, 1.0, 2.0, -1.0]))
    w = torch.softmax(ws.weights.detach(), 0)
    assert torch.allclose(ws(layers), sum(w[i] * layers[i] for i in range(4)), atol=1e-6)
    assert math.isclose(sum(ws.normalized()), 1.0, rel_tol=1e-6)


def test_statistics_pooling_is_mean_and_std_over_frames_per_layer():
    clip = torch.tensor([[[1.0, 2.0], [3.0, 6.0]], [[0.0, 0.0], [0.0, 4.0]]])  # 2 layers, 2 frames, 2 dims
    assert torch.equal(pooled(clip, "mean"), torch.tensor([[2.0, 4.0], [0.0, 2.0]]))
    assert torch.equal(pooled(clip, "mean+std"), torch.tensor([[2.0, 4.0, 1.0, 2.0], [0.0, 2.0, 0.0, 2.0]]))
    assert pooled(clip, None) is clip


def test_only_the_weights_and_the_head_get_gradients(mockingjay, words):
    from selfsup.backbones.speech import load_speech_encoder
    from selfsup.data.audio import AudioFrontEnd, load_audio

    encoder, front = load_speech_encoder(mockingjay)
    data = load_audio([words[1]], audio_config(front), front["input"])
    features = UpstreamFeatures(encoder, data, AudioFrontEnd.from_dict(front), pool=None, layer_norm=True,
                                device="cpu", cache_bytes=0)  # no cache: the upstream runs for this batch
    assert features.cache is None
    probe = SuperbProbe(encoder.num_layers, encoder.feature_dim, 5)
    x, frames = features.batch([0, 1, 2])
    probe_loss(probe(x), [np.zeros(int(n), np.int64) for n in frames], frames, "frame").backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in probe.parameters())

    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = superb_probe((encoder, front), [words[0]], [words[1]], "word", epochs=2)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    n_classes = len(result["classes"])
    assert result["probe"]["trainable_parameters"] == encoder.num_layers + encoder.feature_dim * n_classes + n_classes


def test_keyword_spotting_on_unseen_voices_beats_chance(mockingjay, words, tmp_path):
    result = superb_probe(mockingjay, [words[0]], [words[1]], "word", out=tmp_path / "kws")
    chance = 1.0 / len(result["classes"])
    assert result["eval"]["accuracy"] > 3 * chance, result["eval"]
    weights = result["layer_weights"]
    assert len(weights) == result["upstream"]["layers"] == 3 and math.isclose(sum(weights), 1.0, rel_tol=1e-5)
    assert result["train"]["loss_last"] < result["train"]["loss_first"]
    saved = json.loads((tmp_path / "kws" / "metrics.json").read_text())
    assert saved["eval"]["accuracy"] == result["eval"]["accuracy"] and saved["n_eval"] == result["eval"]["n_eval"]
    assert (tmp_path / "kws" / "layer_weights.png").read_bytes()[:4] == b"\x89PNG"
    assert result["upstream"]["output_frame_rate"] == pytest.approx(100.0)  # log-mel frames, 1 per hop
    assert 0.0 <= logmel_baseline([words[0]], [words[1]], "word") <= 1.0


def test_hf_wav2vec2_folder_and_random_like(wav2vec2_folder, words):
    result = superb_probe(wav2vec2_folder, [words[1]], [words[1]], "word", epochs=5)  # 60 clips: runs, in range
    assert result["upstream"]["output_frame_rate"] == pytest.approx(50.0, abs=0.05)  # 320x conv downsampling
    assert 0.0 <= result["eval"]["accuracy"] <= 1.0 and len(result["layer_weights"]) == 3
    fresh, front = random_like(wav2vec2_folder, seed=1)
    assert front["input"] == "waveform" and fresh.num_layers == 3
    from selfsup.backbones.speech import load_speech_encoder

    loaded, _ = load_speech_encoder(wav2vec2_folder)
    a, b = dict(loaded.named_parameters()), dict(fresh.named_parameters())
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)


def test_frame_and_ctc_tasks_give_numbers_in_range(mockingjay, sentences):
    frame = superb_probe(mockingjay, [sentences[0]], [sentences[1]], task="frame", epochs=8)
    assert 0.0 < frame["eval"]["accuracy"] <= 1.0 and "<sil>" in frame["classes"]
    assert frame["eval"]["n_frames"] > 100 * 8 * 0.3  # 100 frames/s over 8 clips of > 0.3 s
    import jiwer

    ctc = superb_probe(mockingjay, [sentences[0]], [sentences[1]], task="ctc", epochs=30)
    pairs = ctc["eval"]["examples"]  # every eval clip (up to 10 are kept)
    assert len(pairs) == ctc["n_eval"] == 8
    refs, hyps = [p["reference"] for p in pairs], [p["hypothesis"] for p in pairs]
    assert ctc["eval"]["wer"] == pytest.approx(jiwer.wer(refs, hyps)) and ctc["eval"]["wer"] >= 0.0
    assert ctc["eval"]["cer"] == pytest.approx(jiwer.cer(refs, hyps)) and math.isfinite(ctc["eval"]["cer"])
    assert ctc["alphabet"][0] == "<blank>" and " " in ctc["alphabet"]
    assert ctc["train"]["loss_last"] < ctc["train"]["loss_first"]


def test_logmel_frame_baseline_beats_always_silence_and_refuses_ctc(sentences):
    from selfsup.data.audio import AudioDataConfig, load_audio
    from selfsup.data.audio_features import frame_labels

    held = load_audio([sentences[1]], AudioDataConfig(crop_seconds=None, holdout_fraction=0.0, label_column=None),
                      "logmel")
    labels = np.concatenate([frame_labels(json.loads(a), len(held.raw(i)), 100.0, "<sil>")
                             for i, a in enumerate(held.columns["alignment"])])
    majority = max(np.mean(labels == c) for c in set(labels.tolist()))
    assert logmel_baseline([sentences[0]], [sentences[1]], "alignment", task="frame") > majority
    with pytest.raises(SelfsupError, match="--task 'ctc'"):
        logmel_baseline([sentences[0]], [sentences[1]], "transcript", task="ctc")


def test_greedy_decoding_and_wer_on_a_hand_example():
    import jiwer

    alphabet = ["<blank>", "g", "o", " ", "y", "e", "s"]
    # "gg_o_ _yy_e_s" -> "go yes"; a blank between two equal symbols keeps both
    assert greedy_ctc_decode([1, 1, 0, 2, 0, 3, 0, 4, 4, 0, 5, 0, 6], alphabet) == "go yes"
    assert greedy_ctc_decode([4, 0, 4, 4], alphabet) == "yy"
    # reference "yes go stop", hypothesis "yes no": one substitution + one deletion over 3 words
    assert jiwer.wer(["yes go stop"], ["yes no"]) == pytest.approx(2 / 3)
    assert jiwer.cer(["go"], ["no"]) == pytest.approx(1 / 2)


def test_cli_writes_metrics_and_refuses_to_overwrite(mockingjay, words, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["evaluate", "--probe", "superb", "--model", str(mockingjay / "model"), "--train", words[0],
            "--eval", words[1], "--label-column", "speed", "--epochs", "3", "--pooling", "mean+std", "--out", str(out)]
    assert main(args) == 0
    assert "eval.accuracy=" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["label_column"] == "speed" and metrics["probe"]["head"] == "mean+std pooling + linear"
    d, layers, n = metrics["upstream"]["feature_dim"], metrics["upstream"]["layers"], len(metrics["classes"])
    assert metrics["probe"]["trainable_parameters"] == layers + 2 * d * n + n
    assert main(args) == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["column", "unseen", "not-speech", "ctc", "frame", "no-column", "pooling"])
def test_bad_input_is_one_line_and_writes_nothing(case, mockingjay, words, speech_sets, tmp_path, capsys):
    train, ev, model = words[0], words[1], str(mockingjay)
    extra = ["--label-column", "word"]
    if case == "column":
        extra = ["--label-column", "colour"]
    elif case == "unseen":
        train, ev = held_out_split(speech_sets["words"], tmp_path, "word", ["go"])
    elif case == "not-speech":
        model = str(tmp_path / "bert")
        Path(model).mkdir()
        (Path(model) / "config.json").write_text(json.dumps({"model_type": "bert"}))
    elif case in ("ctc", "frame"):
        extra = ["--task", case]
    elif case == "pooling":
        extra = ["--task", "frame", "--pooling", "mean+std"]
    else:
        extra = []
    out = tmp_path / "out"
    code = main(["evaluate", "--probe", "superb", "--model", model, "--train", train, "--eval", ev,
                 "--out", str(out), "--epochs", "1", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("selfsup: error: ") and err.count("\n") == 1, err
    expected = {"column": "colour", "unseen": "not in the train data", "not-speech": "not a speech encoder",
                "ctc": "transcript", "frame": "alignment", "no-column": "--label-column",
                "pooling": "--pooling"}[case]
    assert expected in err and not out.exists()
