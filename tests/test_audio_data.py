"""The audio data layer (`selfsup.data.audio`, `selfsup.data.audio_features`): WAV / FLAC / OGG decoding,
stereo mix-down, soxr resampling that keeps a tone's frequency, log-mel frames (count and the band a tone
lands in), MFCCs as the DCT-II of the log-mels, per-utterance and global normalization, class sub-folders,
CSV / JSONL manifests with relative and absolute paths, the feature cache (reused without decoding, rebuilt
when a file changes), and every bad input as a one-line error naming the file — through the CLI, exit 2 with
nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import selfsup.data.audio as audio_module
from selfsup.data.audio import AudioDataConfig, AudioFrontEnd, load_audio
from selfsup.data.audio_features import FrameSpec, log_mel, mfcc, normalize_utterance, resample, with_deltas
from selfsup.errors import SelfsupError

RATE = 16000
CFG = AudioDataConfig(holdout_fraction=0.0, label_column=None)


def tone(freq: float, seconds: float = 0.5, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def write(path: Path, samples: np.ndarray, rate: int = RATE, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, **kwargs)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SELFSUP_CACHE", str(folder))
    return folder


# ---------------------------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("suffix,exact", [(".wav", True), (".flac", True), (".ogg", False)])
def test_wav_flac_and_ogg_decode_to_the_written_samples(suffix, exact, tmp_path, cache):
    x = tone(440.0)
    path = write(tmp_path / f"a{suffix}", x, subtype="FLOAT" if suffix == ".wav" else None)
    data = load_audio([str(path)], CFG, "waveform")
    assert len(data) == 1 and data.rate == RATE and data.names == [str(path)]
    y = data.raw(0)
    if exact:  # FLAC is 16-bit PCM: within one quantization step
        assert len(y) == len(x) and np.abs(y - x).max() < (1e-7 if suffix == ".wav" else 1 / 2 ** 15)
    else:  # Vorbis is lossy: same length (within a frame), same tone
        assert abs(len(y) - len(x)) < 1024 and peak_hz(y, RATE) == pytest.approx(440, abs=4)
        assert np.corrcoef(y[:len(x)][1000:-1000], x[:len(y)][1000:-1000])[0, 1] > 0.95


def test_stereo_is_mixed_down_to_the_mean_of_its_channels(tmp_path, cache):
    left, right = tone(300.0), tone(1200.0, amplitude=0.25)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], 1), subtype="FLOAT")
    y = load_audio([str(path)], CFG, "waveform").raw(0)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("rate", [22050, 44100])
def test_resampling_to_16k_keeps_a_tones_frequency_and_the_duration(rate, tmp_path, cache):
    x = tone(1000.0, seconds=1.0, rate=rate)
    y = resample(x, rate, RATE)
    assert len(y) == pytest.approx(RATE, abs=2) and y.dtype == np.float32
    assert peak_hz(y, RATE) == pytest.approx(1000, abs=1.5)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)  # no gain change
    # the reader resamples a file written at that rate the same way
    path = write(tmp_path / f"tone{rate}.wav", x, rate, subtype="FLOAT")
    np.testing.assert_allclose(load_audio([str(path)], CFG, "waveform").raw(0), y, atol=1e-6)


# -------------------------------------------------------------------------------------------- front end

def test_log_mel_has_one_frame_per_hop_plus_one_and_a_tone_in_its_band():
    spec = FrameSpec()
    assert (spec.win_length, spec.hop_length, spec.n_fft, spec.frame_rate) == (400, 160, 512, 100.0)
    for n in (8000, 8001, 8159, 8160, 401):
        assert log_mel(tone(500.0, n / RATE), spec).shape == (n // 160 + 1, 80)
    # the HTK mel scale, 80 bands between 20 Hz and 8 kHz: band k peaks at the (k + 1)-th inner point
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    centres = hz(np.linspace(mel(20.0), mel(8000.0), 82)[1:-1])
    for freq in (250.0, 1000.0, 3000.0, 6000.0):
        band = int(log_mel(tone(freq, 1.0), spec)[5:-5].mean(0).argmax())
        assert abs(band - int(np.abs(centres - freq).argmin())) <= 1, (freq, band)


def test_mfcc_is_the_orthonormal_dct_ii_of_the_log_mels():
    x = tone(700.0, 0.3) + tone(2100.0, 0.3, amplitude=0.2)
    m, spec = log_mel(x), FrameSpec()
    n = m.shape[1]
    k, j = np.arange(spec.n_mfcc)[:, None], np.arange(n)[None]
    basis = np.sqrt(2 / n) * np.cos(np.pi * k * (2 * j + 1) / (2 * n))
    basis[0] /= np.sqrt(2)
    np.testing.assert_allclose(mfcc(x), m @ basis.T, rtol=1e-4, atol=1e-3)
    assert with_deltas(mfcc(x)).shape == (m.shape[0], 3 * spec.n_mfcc)
    ramp = np.stack([2.0 * np.arange(20), -0.5 * np.arange(20)], 1).astype(np.float32)  # slopes 2 and -0.5
    d = with_deltas(ramp)
    np.testing.assert_allclose(d[4:-4, 2:4], [[2.0, -0.5]] * 12, atol=1e-5)  # HTK regression: the slope
    np.testing.assert_allclose(d[4:-4, 4:], 0, atol=1e-5)  # a constant slope has no acceleration


def test_utterance_normalization_gives_zero_mean_and_unit_variance():
    rng = np.random.default_rng(0)
    frames = rng.normal(5.0, 3.0, size=(200, 80)).astype(np.float32) * np.linspace(0.5, 2, 80, dtype=np.float32)
    z = normalize_utterance(frames)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
    w = normalize_utterance(0.1 * tone(440.0) + 0.3)  # a waveform: one mean and variance over time
    assert abs(float(w.mean())) < 1e-5 and float(w.std()) == pytest.approx(1, abs=1e-3)


def test_global_normalization_uses_statistics_of_every_frame_of_every_clip(tmp_path, cache):
    paths = [write(tmp_path / f"c{i}.wav", tone(f, s), subtype="FLOAT")
             for i, (f, s) in enumerate([(300.0, 0.4), (900.0, 0.7), (2500.0, 0.25)])]
    data = load_audio([str(p) for p in paths], CFG, "logmel")
    every = np.concatenate([data.raw(i) for i in range(len(data))]).astype(np.float64)
    front = AudioFrontEnd.fit(data, "global")
    np.testing.assert_allclose(front.mean, every.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(front.std, every.std(0), rtol=1e-4, atol=1e-5)
    z = np.concatenate([front.apply(data.raw(i)) for i in range(len(data))])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
    again = AudioFrontEnd.from_dict(json.loads(json.dumps(front.to_dict())))  # as saved in preprocessing.json
    np.testing.assert_array_equal(again.apply(data.raw(1)), front.apply(data.raw(1)))
    wave = load_audio([str(p) for p in paths], CFG, "waveform")
    w = AudioFrontEnd.fit(wave, "global")
    assert len(w.mean) == 1 and w.std[0] == pytest.approx(float(np.concatenate(
        [wave.raw(i) for i in range(3)]).std()), rel=1e-5)


# ----------------------------------------------------------------------------------- folders, manifests

def test_class_sub_folders_give_labels(tmp_path, cache):
    for word, freq in (("yes", 400.0), ("no", 800.0)):
        for i in range(2):
            write(tmp_path / "words" / word / f"{i}.flac", tone(freq + 50 * i))
    (tmp_path / "words" / ".hidden").mkdir()
    write(tmp_path / "words" / ".hidden" / "x.wav", tone(100.0))  # hidden: skipped
    data = load_audio([str(tmp_path / "words")], CFG, "logmel")
    assert len(data) == 4 and data.columns["label"] == ["no", "no", "yes", "yes"]
    ids, classes = data.labels("label")
    assert classes == ["no", "yes"] and ids.tolist() == [0, 0, 1, 1]
    with pytest.raises(SelfsupError, match="label column 'word': not in the data"):
        data.labels("word")


def test_manifests_with_relative_and_absolute_paths_and_jsonl(tmp_path, cache):
    write(tmp_path / "set" / "clips" / "a.wav", tone(500.0), subtype="FLOAT")
    b = write(tmp_path / "elsewhere" / "b.wav", tone(1500.0, 0.3), subtype="FLOAT")
    manifest = tmp_path / "set" / "manifest.csv"
    manifest.write_text(f"path,word,speaker\nclips/a.wav,up,s1\n{b},down,s2\n")
    data = load_audio([str(manifest)], CFG, "waveform")
    assert data.columns["word"] == ["up", "down"] and data.columns["speaker"] == ["s1", "s2"]
    assert data.names == [f"{manifest} line 2 ({manifest.parent / 'clips/a.wav'})", f"{manifest} line 3 ({b})"]
    np.testing.assert_allclose(data.raw(1), tone(1500.0, 0.3), atol=1e-7)
    assert load_audio([str(tmp_path / "set")], CFG, "waveform").columns["word"] == ["up", "down"]  # folder + manifest
    jsonl = tmp_path / "set" / "m.jsonl"
    jsonl.write_text(json.dumps({"path": "clips/a.wav", "word": "left", "n": 3}) + "\n\n"
                     + json.dumps({"path": str(b), "word": "right", "n": 4}) + "\n")
    data = load_audio([str(jsonl)], CFG, "logmel")
    assert data.columns["word"] == ["left", "right"] and data.columns["n"] == ["3", "4"]
    assert data.names[1] == f"{jsonl} line 3 ({b})"
    tsv = tmp_path / "set" / "m.TSV"  # suffixes in any case
    tsv.write_text("path\tword\nclips/a.wav\tgo\n")
    assert load_audio([str(tsv)], CFG, "logmel").columns["word"] == ["go"]
    other = AudioDataConfig(holdout_fraction=0.0, label_column=None, path_column="file")
    (tmp_path / "set" / "f.csv").write_text("file,word\nclips/a.wav,stop\n")
    assert load_audio([str(tmp_path / "set" / "f.csv")], other, "logmel").columns["word"] == ["stop"]


def test_the_cache_is_reused_without_decoding_and_rebuilt_when_a_file_changes(tmp_path, cache, monkeypatch):
    path = write(tmp_path / "a.wav", tone(440.0), subtype="FLOAT")
    first = load_audio([str(path)], CFG, "logmel")
    assert len(list((cache / "audio").iterdir())) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    real = audio_module.decode
    monkeypatch.setattr(audio_module, "decode", no_decoding)
    second = load_audio([str(path)], CFG, "logmel")
    assert isinstance(second.values, np.memmap)
    np.testing.assert_array_equal(second.raw(0), first.raw(0))
    write(path, tone(880.0, 0.6), subtype="FLOAT")  # changed: a new cache entry, decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        load_audio([str(path)], CFG, "logmel")
    monkeypatch.setattr(audio_module, "decode", real)
    third = load_audio([str(path)], CFG, "logmel")
    assert len(third.raw(0)) == int(0.6 * RATE) // 160 + 1 and len(list((cache / "audio").iterdir())) == 2
    # another front end (hop) is another cache entry of the same file
    load_audio([str(path)], AudioDataConfig(holdout_fraction=0.0, label_column=None, hop_ms=20.0), "logmel")
    assert len(list((cache / "audio").iterdir())) == 3


# ---------------------------------------------------------------------------------------------- bad input

def _bad_inputs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (data source, text the one-line error must contain)."""
    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.wav").write_bytes(b"")
    write(d / "zero.wav", np.zeros(0, np.float32))
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    (d / "noise.flac").write_bytes(np.random.default_rng(0).bytes(4000))
    (d / "song.mp3").write_bytes(b"ID3\x03\x00\x00\x00" + bytes(500))
    (d / "notes.txt").write_text("not audio\n")
    write(d / "silent.wav", np.zeros(8000, np.float32))
    good = write(d / "clips" / "ok.wav", tone(440.0), subtype="FLOAT")
    (d / "missing.csv").write_text(f"path,word\n{good},yes\nclips/gone.wav,no\n")
    (d / "nopath.csv").write_text("file,word\nclips/ok.wav,yes\n")
    (d / "badrow.jsonl").write_text(json.dumps({"path": str(good)}) + "\n{not json\n")
    (d / "mp3row.csv").write_text("path\nsong.mp3\n")
    (d / "emptyfolder").mkdir()
    (d / "textfolder").mkdir()
    (d / "textfolder" / "readme.txt").write_text("no audio here")
    return {
        "empty file": (str(d / "empty.wav"), f"{d / 'empty.wav'}: empty file (0 bytes)"),
        "zero-length WAV": (str(d / "zero.wav"), f"{d / 'zero.wav'}: empty audio (0 samples)"),
        "corrupt WAV": (str(d / "corrupt.wav"), f"{d / 'corrupt.wav'}: cannot read audio"),
        "corrupt FLAC": (str(d / "noise.flac"), f"{d / 'noise.flac'}: cannot read audio"),
        "mp3": (str(d / "song.mp3"), f"{d / 'song.mp3'}: unsupported audio format .mp3"),
        "txt": (str(d / "notes.txt"), f"{d / 'notes.txt'}: unsupported audio format .txt"),
        "silent": (str(d / "silent.wav"), f"{d / 'silent.wav'}: all-silent audio"),
        "missing file in manifest": (str(d / "missing.csv"),
                                     f"{d / 'missing.csv'} line 3: no such audio file {d / 'clips/gone.wav'}"),
        "no path column": (str(d / "nopath.csv"), f"{d / 'nopath.csv'} line 2: no column 'path'"),
        "bad JSONL row": (str(d / "badrow.jsonl"), f"{d / 'badrow.jsonl'} line 2: not JSON"),
        "mp3 in manifest": (str(d / "mp3row.csv"), f"{d / 'mp3row.csv'} line 2 ({d / 'song.mp3'}): unsupported "
                                                    "audio format .mp3"),
        "empty folder": (str(d / "emptyfolder"), f"{d / 'emptyfolder'}: folder has no audio files"),
        "folder without audio": (str(d / "textfolder"), f"{d / 'textfolder'}: folder has no audio files"),
        "no such path": (str(d / "nothing.wav"), f"{d / 'nothing.wav'}: no such file or folder"),
    }


def test_every_bad_input_is_a_one_line_error_naming_the_file(tmp_path, cache):
    for name, (source, expect) in _bad_inputs(tmp_path).items():
        for kind in ("waveform", "logmel"):
            with pytest.raises(SelfsupError) as err:
                load_audio([source], CFG, kind)
            message = str(err.value)
            assert expect in message and "\n" not in message, (name, message)
    assert not (cache / "audio").exists() or not any((cache / "audio").iterdir())  # nothing cached


def test_bad_inputs_through_the_cli_exit_2_and_write_nothing(tmp_path, cache, capsys):
    from selfsup.cli import main

    for name, (source, expect) in _bad_inputs(tmp_path).items():
        out = tmp_path / "runs" / name.replace(" ", "-")
        code = main(["pretrain", "mockingjay", "--data", source, "--out", str(out), "--max-steps", "1"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and expect in err and "Traceback" not in err, (name, err)
        assert not out.exists() and not list(out.parent.glob(f".{out.name}*")), name


def test_a_cut_wav_is_told_from_a_whole_one(tmp_path):
    import io

    import soundfile as sf

    from selfsup.data.audio import wav_data_shortfall

    buf = io.BytesIO()
    sf.write(buf, np.sin(np.arange(1600) / 5.0).astype(np.float32) * 0.5, 16000, format="WAV", subtype="PCM_16")
    whole = buf.getvalue()
    assert wav_data_shortfall(whole, len(whole)) is None
    cut = whole[:len(whole) - 1000]
    assert wav_data_shortfall(cut, len(cut)) == (3200, 2200)  # 1600 16-bit samples announced, 1100 present
    flac = io.BytesIO()
    sf.write(flac, np.zeros(160, np.float32) + 0.1, 16000, format="FLAC")
    assert wav_data_shortfall(flac.getvalue(), len(flac.getvalue())) is None
