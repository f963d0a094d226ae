"""Speech -> discrete units -> text-model input (selfsup units): repeats merge, unit words are single tokens of
the text model, every clip becomes one row with its labels, the same call gives the same units, bad input is
one line and writes nothing."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from selfsup.adapt.tools.speech_units import merge_repeats, speech_units, unit_words
from selfsup.cli import main


@pytest.fixture(scope="module")
def upstream_and_split(tmp_path_factory) -> tuple[Path, Path, Path]:
    from selfsup.data.audio import split_manifest
    from selfsup.data.speech_synth import embedded_speech
    from selfsup.engine.pretrain import pretrain

    folder = tmp_path_factory.mktemp("units")
    manifest = embedded_speech("speech-words") / "manifest.csv"
    speakers = sorted({r["speaker"] for r in csv.DictReader(manifest.open())})
    train, held = split_manifest(manifest, folder / "train.csv", folder / "eval.csv", "speaker", speakers[-2:])
    pretrain("mockingjay", [str(train)], folder / "run", max_steps=5, progress=False,
             overrides=["model.hidden_size=32", "model.num_layers=2", "train.batch_size=16"])
    return folder / "run", train, held


def test_merge_repeats():
    assert merge_repeats(np.array([3, 3, 7, 7, 7, 3])).tolist() == [3, 7, 3]
    assert merge_repeats(np.array([], dtype=int)).tolist() == []


def test_unit_words_are_distinct_single_tokens(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    words = unit_words(tok, 20)
    assert len(set(words)) == 20 and words == unit_words(tok, 20)
    assert all(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in words)


def test_units_rows_labels_and_determinism(upstream_and_split, tmp_path, tiny_bert):
    run, train, held = upstream_and_split
    info = speech_units(run, [str(train)], [str(held)], tmp_path / "a", text_model=tiny_bert, clusters=12)
    again = speech_units(run, [str(train)], [str(held)], tmp_path / "b", text_model=tiny_bert, clusters=12)
    rows = list(csv.DictReader((tmp_path / "a" / "eval.csv").open()))
    source = list(csv.DictReader(held.open()))
    assert len(rows) == len(source) == info["eval_clips"]
    assert [r["word"] for r in rows] == [r["word"] for r in source]
    vocab = set(info["unit_words"])
    assert all(r["text"] and set(r["text"].split()) <= vocab for r in rows)
    assert (tmp_path / "a" / "eval.csv").read_text() == (tmp_path / "b" / "eval.csv").read_text()
    assert again["unit_words"] == info["unit_words"] and len(vocab) == 12


def test_units_bad_input(upstream_and_split, tmp_path, capsys):
    run, train, held = upstream_and_split
    args = ["units", "--model", str(run), "--train", str(train), "--eval", str(held)]
    assert main(args + ["--out", str(tmp_path / "x"), "--layer", "9"]) == 2
    assert "--layer" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(args + ["--out", str(tmp_path / "y"), "--clusters", "1"]) == 2
    assert not (tmp_path / "y").exists()
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "keep.txt").write_text("mine")
    assert main(args + ["--out", str(tmp_path / "z")]) == 2
    assert (tmp_path / "z" / "keep.txt").read_text() == "mine"
    assert main(args + ["--out", str(tmp_path / "ok"), "--clusters", "8"]) == 0
    assert "wrote" in capsys.readouterr().out
