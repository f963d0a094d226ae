"""`train.logger` / `--set logger=`: TensorBoard gets the same curves as the CSV log, for pretraining and
fine-tuning; a logger whose package is missing, or an unknown one, is a one-line error before training."""
from __future__ import annotations

import csv
import importlib.util

import pytest

from conftest import TINY, run_cli
from selfsup.errors import SelfsupError
from selfsup.loggers import check_logger

pytest.importorskip("tensorboard")


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_pretraining_curves_reach_tensorboard_and_csv_alike(tmp_path, persuasion):
    out = tmp_path / "run"
    res = run_cli("pretrain", "mlm", "--data", str(persuasion), "--out", str(out), "--max-steps", "12",
                  "--no-progress", *[a for kv in TINY for a in ("--set", kv)], "--set", "train.log_every=3",
                  "--set", "train.logger=tensorboard")
    assert res.returncode == 0, res.stderr[-2000:]
    board = scalars(out / "tensorboard" / "attempt-0")
    with open(out / "logs" / "attempt-0" / "metrics.csv", newline="") as f:
        logged = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f) if r.get("loss")]
    assert len(board["loss"]) == len(logged) == 4
    assert [s for s, _ in board["loss"]] == [s for s, _ in logged]
    assert [v for _, v in board["loss"]] == pytest.approx([v for _, v in logged], rel=1e-6)


def test_finetuning_curves_reach_tensorboard(tmp_path, tiny_bert, two_novels):
    out = tmp_path / "ft"
    res = run_cli("finetune", "--model", str(tiny_bert), "--task", "sequence-classification", "--train",
                  two_novels["train"], "--eval", two_novels["eval"], "--out", str(out), "--epochs", "2",
                  "--set", "logger=tensorboard", "--set", "max_length=32")
    assert res.returncode == 0, res.stderr[-2000:]
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    board = scalars(events[0].parent)
    assert any(tag.startswith("train") or tag == "loss" for tag in board) and all(board.values())


def test_missing_or_unknown_logger_is_one_line(tmp_path, persuasion, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SelfsupError, match="pip install wandb"):
        check_logger("wandb")
    res = run_cli("pretrain", "mlm", "--data", str(persuasion), "--out", str(tmp_path / "x"), "--set",
                  "train.logger=neptune")
    assert res.returncode == 2 and "train.logger" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
