"""Fine-tuning runs own their folder and survive kills: a `kill -9` during a run leaves a resumable partial
folder, `--resume` ends exactly where the uninterrupted run ends (finished seeds read back, the interrupted one
from its last epoch), a second run on the same `--out` is refused while the first runs, and `--resume` with a
different command or nothing to resume is a one-line error."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from selfsup.data.austen import austen_novels_task

SETS = ["threads=1", "max_length=32", "batch_size=8", "lr=1e-3"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return austen_novels_task(tmp_path_factory.mktemp("resume-task"), train_per_class=60, eval_per_class=10,
                              novels=["persuasion", "northangerabbey"])


def _args(bert: Path, task: dict, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--model", str(bert), "--task", "sequence-classification", "--train", task["train"],
            "--eval", task["eval"], "--out", str(out), "--epochs", "5", "--seeds", "2", "--no-progress",
            *[a for s in SETS for a in ("--set", s)], *extra]


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selfsup", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def _kill_when(proc: subprocess.Popen, path: Path, timeout: float = 240) -> None:
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - start < timeout
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_run_resumes_to_the_uninterrupted_result(tiny_bert, task, tmp_path):
    whole = tmp_path / "whole"
    r = run_cli(*_args(tiny_bert, task, whole))
    assert r.returncode == 0, r.stderr
    want = json.loads((whole / "metrics.json").read_text())

    out = tmp_path / "killed"
    partial = tmp_path / ".killed.partial"
    # kill 1: during seed 0, after its first epoch's checkpoint
    _kill_when(_start(_args(tiny_bert, task, out)), partial / "seed-0" / "checkpoints" / "fit-1.ckpt")
    assert not out.exists() and (partial / "request.json").is_file()
    # kill 2: during seed 1 (seed 0 finished and read back later)
    _kill_when(_start(_args(tiny_bert, task, out, "--resume")), partial / "seed-1" / "checkpoints" / "fit-1.ckpt")
    assert (partial / "seed-0" / "metrics.json").is_file() and not (partial / "seed-0" / "checkpoints").exists()
    r = run_cli(*_args(tiny_bert, task, out, "--resume"))
    assert r.returncode == 0, r.stderr
    got = json.loads((out / "metrics.json").read_text())
    assert got["eval"] == pytest.approx(want["eval"], abs=1e-6)
    for a, b in zip(got["runs"], want["runs"]):
        assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]],
                                                                         abs=1e-6)
    assert not partial.exists() and not list(tmp_path.glob(".killed*"))  # no partial folder, lock or temp file
    assert not list(out.rglob("checkpoints")) and not list(out.rglob(".*.tmp*"))


def test_one_run_owns_its_folder_and_resume_is_checked(tiny_bert, task, tmp_path):
    out = tmp_path / "run"
    first = _start(_args(tiny_bert, task, out))
    start = time.time()
    while not (tmp_path / ".run.partial" / "request.json").exists():
        assert first.poll() is None and time.time() - start < 240
        time.sleep(0.02)
    second = run_cli(*_args(tiny_bert, task, out))
    assert second.returncode == 2 and "another selfsup run is writing it" in second.stderr
    assert second.stderr.count("\n") == 1
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    other = run_cli(*_args(tiny_bert, task, out, "--resume", "--set", "lr=5e-4"))
    assert other.returncode == 2 and "--resume: the interrupted run" in other.stderr and "lr" in other.stderr
    assert other.stderr.count("\n") == 1 and (tmp_path / ".run.partial").is_dir()
    nothing = run_cli(*_args(tiny_bert, task, tmp_path / "never", "--resume"))
    assert nothing.returncode == 2 and "no interrupted run" in nothing.stderr
    fresh = run_cli(*_args(tiny_bert, task, out))  # without --resume: the stale partial run is replaced
    assert fresh.returncode == 0 and "discarding an interrupted run" in fresh.stderr
    assert (out / "metrics.json").is_file() and not (tmp_path / ".run.partial").exists()


def test_resume_of_a_finished_run_returns_it_and_checks_the_command(tiny_bert, task, tmp_path):
    """A kill between the final rename and the exit leaves a complete run: `--resume` says so and returns it."""
    out = tmp_path / "done"
    args = _args(tiny_bert, task, out, "--set", "max_steps=2")
    assert run_cli(*[a for a in args if a not in ("--epochs", "5")]).returncode == 0
    want = (out / "metrics.json").read_bytes()
    again = run_cli(*[a for a in args if a not in ("--epochs", "5")], "--resume")
    assert again.returncode == 0 and "already complete" in again.stderr and "eval:" in again.stdout
    assert (out / "metrics.json").read_bytes() == want
    other = run_cli(*[a for a in args if a not in ("--epochs", "5")], "--resume", "--set", "lr=5e-4")
    assert other.returncode == 2 and "the finished run" in other.stderr and other.stderr.count("\n") == 1
