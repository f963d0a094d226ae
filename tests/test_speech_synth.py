"""Synthetic labeled speech (eSpeak NG from the espeakng-loader wheel): word and sentence sets with manifests that
match their FLAC files, deterministic samples, exact sentence alignments, the shipped sets, and `selfsup data
speech-words` with every bad input a one-line error that writes nothing."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("soxr")
pytest.importorskip("espeakng_loader")

from selfsup.cli import main  # noqa: E402
from selfsup.data import speech_synth  # noqa: E402
from selfsup.errors import SelfsupError  # noqa: E402

SMALL = dict(words=["yes", "no"], accents=["en-us", "en-gb-scotland"], variants=["m1", "f2"],
             speeds={"slow": 130, "fast": 200})


def rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_word_set_files_match_manifest(tmp_path):
    out = tmp_path / "words"
    manifest = speech_synth.make_word_set(out, SMALL["words"], ["en-us"], SMALL["variants"], SMALL["speeds"])
    table = rows(manifest)
    assert manifest == out / "manifest.csv" and len(table) == 8 == len(list((out / "clips").glob("*.flac")))
    assert list(table[0]) == ["path", "word", "speaker", "accent", "variant", "speed", "seconds"]
    assert {r["word"] for r in table} == {"yes", "no"} and {r["speaker"] for r in table} == {"en-us+m1", "en-us+f2"}
    for r in table:
        audio, rate = soundfile.read(out / r["path"], dtype="float32")
        assert rate == 16000 and audio.ndim == 1
        assert r["path"] == f"clips/{r['word']}_{r['accent']}_{r['variant']}_{r['speed']}.flac"
        assert r["speaker"] == f"{r['accent']}+{r['variant']}"
        assert abs(float(r["seconds"]) - len(audio) / rate) < 1e-3 and 0.2 < len(audio) / rate < 1.5
        assert 0.85 < np.abs(audio).max() <= 0.91  # peak-normalized to 0.9
    assert not list(tmp_path.glob(".words*")), "no temporary folder is left behind"


def test_synthesis_is_deterministic_and_voices_differ(tmp_path):
    first = speech_synth.synthesize("left", "en-us+f2", 170)
    assert first.dtype == np.float32 and np.array_equal(first, speech_synth.synthesize("left", "en-us+f2", 170))
    assert not np.array_equal(first[:1000], speech_synth.synthesize("left", "en-us+m1", 170)[:1000])
    a = speech_synth.make_word_set(tmp_path / "a", ["go"], ["en-us"], ["f5"], {"normal": 165})  # f5: breath noise
    b = speech_synth.make_word_set(tmp_path / "b", ["go"], ["en-us"], ["f5"], {"normal": 165})
    assert (a.parent / "clips/go_en-us_f5_normal.flac").read_bytes() == \
        (b.parent / "clips/go_en-us_f5_normal.flac").read_bytes()


def test_sentence_alignment_is_exact_and_separated_by_silence(tmp_path):
    manifest = speech_synth.make_sentence_set(tmp_path / "s", 4, SMALL["words"], SMALL["accents"],
                                              SMALL["variants"], SMALL["speeds"], seed=3)
    table = rows(manifest)
    assert len(table) == 4 and "alignment" in table[0]
    for r in table:
        audio, rate = soundfile.read(manifest.parent / r["path"], dtype="float32")
        alignment = json.loads(r["alignment"])
        assert [w for w, _, _ in alignment] == r["transcript"].split() and 2 <= len(alignment) <= 4
        tol = 1e-5  # well under one sample (62.5 us)
        assert alignment[0][1] == pytest.approx(0.1, abs=tol)
        assert alignment[-1][2] == pytest.approx(len(audio) / rate - 0.1, abs=tol)
        for (_, _, end), (_, start, _) in zip(alignment, alignment[1:]):
            assert start - end == pytest.approx(0.25, abs=tol)  # the pause, digital silence
            assert not np.any(audio[round(end * rate) + 1: round(start * rate) - 1])
        for _, start, end in alignment:
            assert 0 <= start < end <= len(audio) / rate
            assert np.abs(audio[round(start * rate): round(end * rate)]).max() > 0.5


@pytest.mark.parametrize("name, count", [("speech-words", 240), ("speech-sentences", 100)])
def test_shipped_sets_are_complete(name, count):
    folder = speech_synth.embedded_speech(name)
    table = rows(folder / "manifest.csv")
    assert len(table) == count
    assert len({r["speaker"] for r in table}) >= 6 and len({r["speed"] for r in table}) == 3
    if name == "speech-words":
        assert sorted({r["word"] for r in table}) == sorted(speech_synth.COMMAND_WORDS)
    for r in table:
        info = soundfile.info(folder / r["path"])
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert abs(info.frames / info.samplerate - float(r["seconds"])) < 1e-3


def test_unknown_names_and_bad_sets_are_refused(tmp_path):
    with pytest.raises(SelfsupError, match="unknown accent 'en-mars'.*en-us"):
        speech_synth.synthesize("yes", "en-mars", 170)
    with pytest.raises(SelfsupError, match="unknown voice variant 'm9'.*m1"):  # espeak itself would ignore m9
        speech_synth.make_word_set(tmp_path / "x", ["yes"], ["en-us"], ["m9"])
    with pytest.raises(SelfsupError, match="words"):
        speech_synth.make_word_set(tmp_path / "x", [])
    with pytest.raises(SelfsupError, match="no_such"):
        speech_synth.embedded_speech("no_such")
    assert not (tmp_path / "x").exists()


def test_cli_speech_words(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["data", "speech-words", "--words", "yes,no", "--accents", "en-us", "--variants", "m1",
                 "--speeds", "normal=170", "--out", str(out), "--sentences", "2"])
    stdout = capsys.readouterr().out.splitlines()
    assert code == 0
    assert stdout[0].startswith(f"wrote {out / 'manifest.csv'} (2 clips, ") and stdout[0].endswith(" seconds)")
    assert stdout[1].startswith(f"wrote {out / 'sentences' / 'manifest.csv'} (2 clips, ")
    assert {r["word"] for r in rows(out / "manifest.csv")} == {"yes", "no"}


@pytest.mark.parametrize("argv, message", [
    (["--words", "yes", "--variants", "m9"], "unknown voice variant 'm9'"),
    (["--words", "yes", "--accents", "xx"], "unknown accent 'xx'"),
    (["--words", ""], "words"),
    (["--words", "yes", "--speeds", "slow=abc"], "--speeds"),
    (["--words", "yes", "--sentences", "-1"], "sentences"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["data", "speech-words", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("selfsup: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_non_empty_out(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["data", "speech-words", "--words", "yes", "--accents", "en-us", "--variants", "m1",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and err.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
