"""Tabular data: formats, column choice, one-hot, imputation, standardization fitted on the training table and
reapplied unchanged, and every bad table as a one-line error naming the file, column and row."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selfsup.data.tables import TableDataConfig, TablePreprocessor, load_table, read_table
from selfsup.errors import SelfsupError


@pytest.fixture()
def small_csv(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, np.nan, 4.0], "b": [10, 20, 30, 40], "colour": ["red", "blue", "red", None],
                          "label": [0, 0, 1, 0]})
    path = tmp_path / "small.csv"
    frame.to_csv(path, index=False)
    return path


def test_csv_features_onehot_imputation_and_standardization(small_csv):
    data = load_table([str(small_csv)], TableDataConfig(impute="mean"))
    pre = data.preprocessor
    assert pre.numeric == ["a", "b"] and pre.categorical == {"colour": ["blue", "red"]}  # label column excluded
    assert pre.feature_names == ["a", "b", "colour=blue", "colour=red"]
    assert pre.fill["a"] == pytest.approx(7 / 3)
    np.testing.assert_allclose(data.x[:, :2].mean(0), 0, atol=1e-6)  # standardized on this table
    np.testing.assert_allclose(data.x[:, :2].std(0), 1, atol=1e-5)
    np.testing.assert_array_equal(data.x[:, 2:], [[0, 1], [1, 0], [0, 1], [0, 0]])  # missing string = zeros
    assert data.labels.tolist() == [0, 0, 1, 0]
    median = load_table([str(small_csv)], TableDataConfig(impute="median")).preprocessor
    assert median.fill["a"] == 2.0
    np.testing.assert_allclose(pre.inverse_numeric(data.x), [[1, 10], [2, 20], [7 / 3, 30], [4, 40]], rtol=1e-5)


def test_preprocessing_saved_and_reapplied_unchanged(small_csv, tmp_path):
    pre = load_table([str(small_csv)], TableDataConfig()).preprocessor
    again = TablePreprocessor.from_dict(pre.to_dict())
    other = pd.DataFrame({"a": [4.0], "b": [100], "colour": ["green"], "label": [1]})  # unseen category
    other.to_csv(tmp_path / "other.csv", index=False)
    x = load_table([str(tmp_path / "other.csv")], TableDataConfig(), again).x
    expected_b = (100 - np.mean([10, 20, 30, 40])) / np.std([10, 20, 30, 40])  # training mean / scale, not refit
    np.testing.assert_allclose(x[0], [(4 - pre.mean[0]) / pre.scale[0], expected_b, 0, 0], rtol=1e-5)


def test_columns_option_npz_tsv_parquet_and_breast_cancer(small_csv, tmp_path):
    assert load_table([str(small_csv)], TableDataConfig(columns="b,colour")).preprocessor.columns == ["b", "colour"]
    np.savez(tmp_path / "t.npz", x=np.arange(12.0).reshape(4, 3), y=np.array([0, 1, 0, 0]))
    d = load_table([str(tmp_path / "t.npz")], TableDataConfig())
    assert d.x.shape == (4, 3) and d.labels.tolist() == [0, 1, 0, 0] and d.preprocessor.columns == ["x0", "x1", "x2"]
    assert load_table([str(tmp_path / "t.npz")] * 2, TableDataConfig(label_column="y")).labels.tolist() == [0, 1, 0, 0] * 2
    frame = pd.read_csv(small_csv)
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    for name in ("t.tsv", "t.parquet"):
        np.testing.assert_allclose(load_table([str(tmp_path / name)], TableDataConfig()).x,
                                   load_table([str(small_csv)], TableDataConfig()).x, rtol=1e-6)
    bc = read_table("sklearn:breast_cancer")
    assert bc.shape == (569, 31) and int(bc["label"].sum()) == 212  # label 1 = malignant (sklearn target 0)


@pytest.mark.parametrize("content, cfg, preset, needles", [
    ("", {}, None, ["bad.csv", "empty"]),
    ("a,b\n", {}, None, ["bad.csv", "empty"]),
    ("a,b\nx,y\nz,w\n", {}, None, ["bad.csv", "no numeric"]),
    ("a,b\n1,2\n3,\n", {"impute": "none"}, None, ["bad.csv", "row 2 (line 3)", "'b'", "missing value"]),
    ("a,b\n1,2\n3,4\n", {"columns": "a,c"}, None, ["bad.csv", "unknown column 'c'"]),
    ("a,b\n1,2\n3,4\n", {}, "a,z\n1,2\n", ["bad.csv", "column 'z' is missing"]),
    ("a,b\n1,2\n3,four\n", {}, "a,b\n1,2\n5,6\n", ["bad.csv", "row 2 (line 3)", "'b'", "not a number"]),
])
def test_bad_tables_are_one_line_errors(tmp_path, content, cfg, preset, needles):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    pre = None
    if preset is not None:  # scoring time: a model fitted on other columns
        (tmp_path / "fit.csv").write_text(preset)
        pre = load_table([str(tmp_path / "fit.csv")], TableDataConfig()).preprocessor
    with pytest.raises(SelfsupError) as e:
        load_table([str(path)], TableDataConfig(**cfg), pre)
    message = str(e.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SelfsupError, match="broken.parquet: unreadable table"):
        read_table(str(tmp_path / "broken.parquet"))
    with pytest.raises(SelfsupError, match="nope.csv: no such file"):
        read_table(str(tmp_path / "nope.csv"))
    np.savez(tmp_path / "noX.npz", z=np.zeros(3))
    with pytest.raises(SelfsupError, match="noX.npz: an .npz table needs an array named x"):
        read_table(str(tmp_path / "noX.npz"))


def test_a_typo_in_a_numeric_column_names_its_cell_unless_the_column_is_declared_categorical(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,zip\n1.0,10115\n2.0,80331\n3.0,unknown\n4.0,10115\n")
    with pytest.raises(SelfsupError, match=r"t\.csv: row 3 \(line 4\): column 'zip': 'unknown' is not a number "
                                           r"though 3 of its 4 values are"):
        load_table([str(path)], TableDataConfig())
    pre = load_table([str(path)], TableDataConfig(categorical="zip")).preprocessor
    assert pre.categorical == {"zip": ["10115", "80331", "unknown"]}
    path.write_text("a,colour\n1.0,red\n2.0,3\n3.0,blue\n")  # mostly words: a categorical column, as before
    assert load_table([str(path)], TableDataConfig()).preprocessor.categorical == {"colour": ["3", "blue", "red"]}
