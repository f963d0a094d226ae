"""AdaIN-VC (objectives/voice_conversion.py, backbones/adain_vc.py) and `selfsup convert`: the masked instance
norm against its formula (and torch's on unpadded clips), AdaIN imposing the given per-channel statistics on a
hand case, the content code's KL against its formula, a short run on the shipped speech words whose held-out
reconstruction beats predicting the mean frame, the export reloading with identical outputs, the Griffin-Lim
path's filter bank being log_mel's, a converted WAV as long as its content clip, and bad inputs as one-line
errors (exit 2) that write nothing."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import ASSETS, SPEECH_WORDS
from selfsup import pretrain
from selfsup.backbones.adain_vc import adain, instance_norm
from selfsup.errors import SelfsupError
from selfsup.objectives.voice_conversion import gaussian_kl, load_vc_model

CLIPS = ASSETS / "speech_words" / "clips"
CONTENT, SPEAKER = CLIPS / "yes_en-us_m1_normal.flac", CLIPS / "left_en-gb-scotland_f5_slow.flac"
TINY_VC = ["model.hidden_size=32", "model.num_blocks=2", "model.content_dim=8", "model.speaker_dim=16",
           "train.batch_size=16", "train.warmup_steps=5", "train.eval_every=40", "train.checkpoint_every=1000",
           "train.log_every=5", "train.lr=3e-3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vc") / "run"
    metrics = pretrain("adain_vc", SPEECH_WORDS, out, max_steps=40, overrides=TINY_VC, progress=False)
    return out, metrics


def test_instance_norm_removes_each_channels_mean_and_std_over_the_real_frames_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, generator=g) * 4 + 3
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    y = instance_norm(x, mask)
    for b, n in ((0, 7), (1, 5)):
        real = x[b, :, :n]
        expected = (real - real.mean(-1, keepdim=True)) / torch.sqrt(real.var(-1, unbiased=False, keepdim=True) + 1e-5)
        torch.testing.assert_close(y[b, :, :n], expected)
        assert (y[b, :, n:] == 0).all()
    # unpadded: torch's own instance norm (no affine parameters)
    torch.testing.assert_close(y[:1], torch.nn.functional.instance_norm(x[:1], eps=1e-5))
    # padding values never matter
    x2 = x.clone()
    x2[1, :, 5:] = 1e4
    torch.testing.assert_close(instance_norm(x2, mask), y)


def test_adain_gives_each_channel_the_speakers_mean_and_scale():
    x = torch.tensor([[[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]]])  # one clip, two channels, three frames
    mask = torch.ones(1, 3, dtype=torch.bool)
    scale, shift = torch.tensor([[2.0, 0.5]]), torch.tensor([[5.0, -1.0]])
    y = adain(x, mask, scale, shift)
    std0 = np.sqrt(2 / 3 + 1e-5)  # channel 0: mean 2, population variance 2/3
    np.testing.assert_allclose(y[0, 0].numpy(), [5 - 2 / std0, 5.0, 5 + 2 / std0], rtol=1e-6)
    np.testing.assert_allclose(y.mean(-1)[0].numpy(), [5.0, -1.0], atol=1e-6)  # the new means are the shifts
    np.testing.assert_allclose(y.std(-1, unbiased=False)[0].numpy(), [2.0, 0.5], rtol=1e-4)  # the new spreads


def test_content_code_kl_matches_the_gaussian_formula_on_real_frames():
    mu = torch.tensor([[[0.0, 1.0, 9.0]]])
    log_var = torch.tensor([[[0.0, np.log(2.0), 9.0]]])
    mask = torch.tensor([[True, True, False]])
    by_hand = [0.0, 0.5 * (2.0 + 1.0 - 1.0 - np.log(2.0))]
    assert float(gaussian_kl(mu, log_var, mask)) == pytest.approx(np.mean(by_hand), rel=1e-6)


def test_short_run_reconstructs_held_out_clips_better_than_the_mean_frame(run):
    from selfsup.engine.logs import read_logged
    from selfsup.objectives.voice_conversion import AdainVCObjective

    out, metrics = run
    assert metrics["train_loss"] < 0.8 * metrics["train_loss_first"], metrics
    rows = [r for r in read_logged(out) if r.get("heldout_reconstruction_l1") is not None]
    final = float(rows[-1]["heldout_reconstruction_l1"])
    # baseline: predict the (globally normalized) mean frame, 0, for every held-out frame: L1 = mean |x|
    from selfsup.recipes import load_recipe

    recipe = load_recipe("adain_vc", TINY_VC)
    prepared = AdainVCObjective.prepare(recipe, [SPEECH_WORDS])
    baseline = np.mean(np.concatenate([np.abs(prepared.heldout[i][0]).ravel() for i in range(len(prepared.heldout))]))
    assert final < 0.8 * baseline, (final, baseline)


def test_export_reloads_with_identical_outputs(tmp_path):
    from selfsup.objectives.voice_conversion import AdainVCObjective
    from selfsup.recipes import load_recipe

    recipe = load_recipe("adain_vc", TINY_VC)
    prepared = AdainVCObjective.prepare(recipe, [SPEECH_WORDS])
    torch.manual_seed(1)
    model = AdainVCObjective(recipe, prepared).eval()
    for p in model.parameters():  # away from the initialization, AdaIN's affine layers included
        p.data.add_(torch.randn_like(p) * 0.05)
    (tmp_path / "model").mkdir()
    model.export(tmp_path / "model")
    loaded = load_vc_model(tmp_path)
    content, speaker = prepared.extras["audio"].raw(0), prepared.extras["audio"].raw(5)
    np.testing.assert_array_equal(loaded.convert(content, speaker), model.convert(content, speaker))
    batch = model.make_batch([prepared.heldout[i] for i in range(4)], [np.random.default_rng(i) for i in range(4)])
    with torch.no_grad():
        assert float(loaded(batch)["loss"]) == float(model(batch)["loss"])


def test_griffin_lim_inverts_the_filter_bank_log_mel_uses():
    from selfsup.adapt.tools.voice_conversion import mel_basis, mel_to_audio
    from selfsup.data.audio_features import FrameSpec, log_mel

    spec = FrameSpec()
    x, rate = sf.read(CONTENT, dtype="float32")
    power = torch.stft(torch.from_numpy(x), spec.n_fft, spec.hop_length, spec.win_length,
                       torch.hann_window(spec.win_length), center=True, return_complex=True).abs().pow(2).t().numpy()
    np.testing.assert_allclose(np.log(power @ mel_basis(spec) + 1e-6), log_mel(x, spec), rtol=1e-4, atol=1e-3)
    frames = log_mel(x, spec)
    audio = mel_to_audio(frames, spec, n_iter=16)
    assert len(audio) == (len(frames) - 1) * spec.hop_length and abs(len(audio) - len(x)) <= spec.hop_length
    again = log_mel(audio, spec)  # the resynthesized audio's mel frames are close where the speech is
    loud = frames > np.log(1e-2)
    assert np.median(np.abs(again[:len(frames)] - frames)[loud]) < 1.0


def test_convert_writes_a_wav_as_long_as_the_content_clip(run, tmp_path, capsys):
    from selfsup.cli import main

    out = tmp_path / "converted.wav"
    assert main(["convert", "--model", str(run[0]), "--content", str(CONTENT), "--speaker", str(SPEAKER),
                 "--out", str(out), "--iterations", "8"]) == 0
    assert "wrote" in capsys.readouterr().out
    info = sf.info(str(out))
    content = sf.info(str(CONTENT))
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    assert abs(info.frames - content.frames) <= 160  # one hop
    audio, _ = sf.read(str(out))
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3
    assert [p.name for p in tmp_path.iterdir()] == ["converted.wav"]  # no temp file left


def test_bad_inputs_are_one_line_errors_that_write_nothing(run, tmp_path, capsys, monkeypatch):
    from selfsup.cli import main

    model = str(run[0])
    existing = tmp_path / "exists.wav"
    existing.write_bytes(b"keep")
    not_vc = tmp_path / "not-vc"
    (not_vc / "model").mkdir(parents=True)
    (not_vc / "model" / "config.json").write_text(json.dumps({"format": "selfsup-table-autoencoder"}))
    (not_vc / "model" / "model.safetensors").write_bytes(b"")
    cases = [(["--model", model, "--content", str(tmp_path / "missing.wav"), "--speaker", str(SPEAKER)],
              "no such audio file"),
             (["--model", model, "--content", str(CONTENT), "--speaker", str(SPEAKER), "--out", str(existing)],
              "already exists"),
             (["--model", str(not_vc), "--content", str(CONTENT), "--speaker", str(SPEAKER)],
              "not a voice-conversion model"),
             (["--model", model, "--content", str(CONTENT), "--speaker", str(SPEAKER), "--out",
               str(tmp_path / "x.mp3")], "must name a .wav file")]
    for args, message in cases:
        argv = ["convert", *args] + ([] if "--out" in args else ["--out", str(tmp_path / "new.wav")])
        assert main(argv) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    monkeypatch.setitem(sys.modules, "librosa", None)  # not installed
    assert main(["convert", "--model", model, "--content", str(CONTENT), "--speaker", str(SPEAKER),
                 "--out", str(tmp_path / "new.wav")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.wav", "not-vc"] and existing.read_bytes() == b"keep"


def test_recipe_pairs_the_method_with_its_networks_only():
    from selfsup.recipes import load_recipe

    for recipe, overrides, message in (("adain_vc", ["model.type=conformer"], "model.type"),
                                       ("mockingjay", ["model.type=adain-vc"], "model.type"),
                                       ("adain_vc", ["model.kernel_size=4"], "kernel_size"),
                                       ("adain_vc", ["data.normalize=utterance"], "data.normalize")):
        with pytest.raises(SelfsupError, match=message):
            load_recipe(recipe, overrides)
