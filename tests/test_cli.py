"""The command line as a user meets it: instant help, recipe listing, and every bad input as one line on
stderr with exit status 2 and nothing written or overwritten."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import TINY, run_cli


def test_help_imports_nothing_heavy():
    code = ("import sys; from selfsup.cli import build_parser; build_parser().format_help(); "
            "heavy = [m for m in ('torch', 'transformers', 'lightning', 'peft', 'datasets', 'sklearn') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    help_text = run_cli("--help").stdout
    for verb in ("pretrain", "recipes", "demo"):
        assert verb in help_text


def test_a_missing_data_path_is_refused_before_torch_is_imported(tmp_path):
    code = ("import sys; from selfsup.cli import main; "
            f"rc = main(['pretrain', 'mlm', '--data', {str(tmp_path / 'typo.txt')!r}, '--out', {str(tmp_path / 'o')!r}]); "
            "print(rc, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["2", "False"], r.stderr
    assert r.stderr.strip() == f"selfsup: error: {tmp_path / 'typo.txt'}: no such file or folder"
    assert not (tmp_path / "o").exists()
    code = code.replace("'pretrain', 'mlm', '--data'", "'finetune', '--model', 'bert-base-uncased', '--task', "
                        "'sequence-classification', '--eval', 'e.jsonl', '--train'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["2", "False"], r.stderr


def test_recipes_lists_names_with_descriptions():
    res = run_cli("recipes")
    assert res.returncode == 0
    lines = dict(line.split(None, 1) for line in res.stdout.strip().splitlines())
    assert "masked-language" in lines["mlm"] and "causal" in lines["gpt"]


def _assert_one_line_error(res, *needles):
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("selfsup: error: "), err[-2000:]
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in err, err


@pytest.fixture()
def bad_files(tmp_path):
    files = {"empty.txt": b"", "binary.txt": b"text\n\x00\x01\x02\xff", "latin1.txt": b"ok\nna\xefve\n"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return tmp_path


@pytest.mark.parametrize("recipe, data, extra, needles", [
    ("mlm", "missing.txt", [], ["missing.txt", "no such file"]),
    ("mlm", "empty.txt", [], ["empty.txt", "empty"]),
    ("mlm", "binary.txt", [], ["binary.txt:2", "binary"]),
    ("mlm", "latin1.txt", [], ["latin1.txt:2", "invalid UTF-8"]),
    ("no-such-recipe", "empty.txt", [], ["no-such-recipe", "unknown recipe"]),
    ("mlm", "empty.txt", ["--set", "train.optimizer=sgd"], ["train.optimizer", "unknown key"]),
    ("mlm", "empty.txt", ["--set", "train.lr=-0.1"], ["train.lr", "must be > 0"]),
    ("mlm", "empty.txt", ["--set", "objective.mask_rate=1.2"], ["objective.mask_rate", "<= 1"]),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad_files, recipe, data, extra, needles):
    out = bad_files / "run"
    res = run_cli("pretrain", recipe, "--data", str(bad_files / data), "--out", str(out), *extra)
    _assert_one_line_error(res, *needles)
    assert not out.exists()


def test_existing_output_is_never_overwritten(tmp_path, persuasion):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    res = run_cli("pretrain", "mlm", "--data", str(persuasion), "--out", str(out))
    _assert_one_line_error(res, "already exists", "--resume")
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "precious"
    res = run_cli("pretrain", "mlm", "--data", str(persuasion), "--out", str(tmp_path / "new"), "--resume")
    _assert_one_line_error(res, "--resume needs a selfsup run folder")


def test_pretrain_cli_end_to_end_gpt(tmp_path, persuasion):
    out = tmp_path / "gpt"
    sets = [f"--set={o}" for o in TINY]
    res = run_cli("pretrain", "gpt", "--data", str(persuasion), "--out", str(out), "--max-steps", "20",
                  "--seed", "3", "--no-progress", *sets)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "heldout_perplexity" in res.stdout
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    ids = tok("Anne Elliot", return_tensors="pt").input_ids
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["seed"] == 3


def test_unwritable_out_and_zero_sizes_are_one_line(tiny_bert, tmp_path, capsys):
    """embed --batch-size 0 / --max-length 0 and an --out under /sys: one line, exit 2, no traceback."""
    from selfsup.cli import main

    model = tiny_bert
    texts = tmp_path / "t.txt"
    texts.write_text("hello there\nhow are you\n")
    for extra, needle in ((["--batch-size", "0"], "--batch-size"), (["--max-length", "0"], "--max-length")):
        assert main(["embed", "--model", str(model), str(texts), "--out", str(tmp_path / "e"), *extra]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and not (tmp_path / "e").exists(), err
    assert main(["embed", "--model", str(model), str(texts), "--out", "/sys/selfsup-test-out"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("selfsup: error: ") and err.count("\n") == 1 and "/sys" in err, err
