"""Named splits of the built-in sets (`sklearn:digits@train|@test`, `sklearn:breast_cancer@...`) and `hf:` with
`data_files`: a probe can be fitted and scored on disjoint rows of a shipped set, and a hub builder reads the
user's own files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from selfsup.cli import main
from selfsup.data.builtin import split_rows
from selfsup.data.hub import parse_hub_spec
from selfsup.data.images import ImageDataConfig, _read_source
from selfsup.data.tables import read_table
from selfsup.data.text import read_paragraphs
from selfsup.errors import SelfsupError


def test_digits_train_and_test_are_disjoint_stratified_and_cover_the_set():
    cfg = ImageDataConfig(image_size=8, channels=1)
    x_all, y_all, _ = _read_source("sklearn:digits", cfg, 0)
    x_tr, y_tr, classes = _read_source("sklearn:digits@train", cfg, 0)
    x_te, y_te, _ = _read_source("sklearn:digits@test", cfg, 0)
    assert len(y_tr) + len(y_te) == len(y_all) == 1797 and classes == [str(i) for i in range(10)]
    assert abs(len(y_te) / len(y_all) - 0.25) < 0.01
    rows_tr, rows_te = split_rows(y_all, "train"), split_rows(y_all, "test")
    assert not set(rows_tr) & set(rows_te)
    assert np.array_equal(x_tr, x_all[rows_tr]) and np.array_equal(y_te, y_all[rows_te])
    # stratified: every class keeps its share within one image
    for c in range(10):
        assert abs((y_te == c).sum() - 0.25 * (y_all == c).sum()) <= 1
    assert np.array_equal(split_rows(y_all, "test"), rows_te)  # fixed: the same rows every time


def test_breast_cancer_split_and_unknown_split_is_one_line():
    train, test = read_table("sklearn:breast_cancer@train"), read_table("sklearn:breast_cancer@test")
    assert len(train) + len(test) == 569 and list(train.columns) == list(test.columns)
    assert abs(test["label"].mean() - train["label"].mean()) < 0.02
    with pytest.raises(SelfsupError, match="sklearn:breast_cancer@valid: unknown split"):
        read_table("sklearn:breast_cancer@valid")


def test_unknown_digits_split_exits_2_naming_the_spec(tmp_path, capsys):
    code = main(["pretrain", "simclr", "--data", "sklearn:digits@dev", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "sklearn:digits@dev" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_hub_spec_parsing():
    assert parse_hub_spec("hf:imdb") == ("imdb", "", "", [])
    assert parse_hub_spec("hf:glue:sst2@validation") == ("glue", "sst2", "validation", [])
    assert parse_hub_spec("hf:json@train?data_files=a.jsonl,b/*.jsonl") == ("json", "", "train",
                                                                            ["a.jsonl", "b/*.jsonl"])
    with pytest.raises(SelfsupError, match=r"after '\?' expected data_files"):
        parse_hub_spec("hf:json?files=a.jsonl")


def test_hub_builder_reads_the_users_data_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for part in ("a", "b"):
        (tmp_path / f"{part}.jsonl").write_text("\n".join(json.dumps({"text": f"File {part}, row {i}."})
                                                          for i in range(3)))
    paras = list(read_paragraphs([f"hf:json@train?data_files={tmp_path}/a.jsonl,{tmp_path}/b.jsonl"]))
    assert [p.sentences[0] for p in paras] == [f"File {f}, row {i}." for f in "ab" for i in range(3)]
    table = tmp_path / "t.csv"
    table.write_text("x,y,label\n1,2,0\n3,4,1\n")
    assert read_table(f"hf:csv?data_files={table}")["label"].tolist() == [0, 1]
