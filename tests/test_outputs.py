"""A user's files are never overwritten: `evaluate --out` onto an existing metrics file (or a folder holding
one) and `predict --out` onto an existing file are one-line errors (exit 2) that leave the file as it was."""
from __future__ import annotations

import pytest

from conftest import run_cli
from selfsup.adapt.core.run import finetune
from selfsup.data.austen import austen_novels_task


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    task = austen_novels_task(d / "task", train_per_class=8, eval_per_class=4, novels=["persuasion", "emma"])
    finetune(tiny_bert, "sequence-classification", task["train"], task["eval"], d / "run", max_steps=1,
             overrides=["threads=1", "max_length=32"])
    return d / "run", task


def _refused(r, path, before: bytes) -> None:
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "already exists" in r.stderr, r.stderr
    assert path.read_bytes() == before


def test_evaluate_and_predict_never_overwrite(run, tmp_path):
    model, task = run
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": true}\n')
    _refused(run_cli("evaluate", "--model", str(model), "--eval", task["eval"], "--out", str(mine)), mine,
             mine.read_bytes())
    trained = model / "metrics.json"  # --out onto the run folder itself would replace its training metrics
    _refused(run_cli("evaluate", "--model", str(model), "--eval", task["eval"], "--out", str(model)), trained,
             trained.read_bytes())
    preds = tmp_path / "preds.jsonl"
    preds.write_text("keep\n")
    _refused(run_cli("predict", "--model", str(model), task["eval"], "--out", str(preds)), preds, b"keep\n")
    fresh = tmp_path / "new" / "metrics.json"
    ok = run_cli("evaluate", "--model", str(model), "--eval", task["eval"], "--out", str(tmp_path / "new"))
    assert ok.returncode == 0 and fresh.is_file()


def test_atomic_outputs_get_the_modes_plain_mkdir_and_open_would(tmp_path):
    """Exported model folders are meant to be shared: not 0700/0600 from mkdtemp/mkstemp."""
    import os

    from selfsup.fileio import atomic_dir, atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~mask
