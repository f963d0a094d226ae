"""Fault-injection soak: `kill -9` at random moments of a short pretraining run and of a fine-tuning run (start-up,
tokenization, training, checkpoint writes, export — wherever the draw lands), then the same command with
`--resume` until one finishes, and a kill in the middle of a checkpoint write. Each time the result equals the
uninterrupted run's, and nothing is left behind: no temp file, no lock, no stuck folder."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from selfsup.data.austen import austen_novels_task
from selfsup.engine.logs import read_logged

PRETRAIN = TINY + ["train.log_every=1", "train.checkpoint_every=2"]
FINETUNE = ["threads=1", "max_length=32", "batch_size=8", "lr=1e-3"]


def _losses(run: Path) -> dict[int, float]:
    return {int(r["step"]): r["loss"] for r in read_logged(run) if "loss" in r}


def _leftovers(root: Path) -> list[Path]:
    """Temp files of interrupted writes, locks and partial folders anywhere under `root`."""
    return [p for p in root.rglob(".*") if ".tmp" in p.name or p.name.endswith((".lock", ".partial"))
            or p.name.startswith((".last.ckpt.", ".fit-"))]


def _soak(args: list[str], resumable, seconds: float, seed: int, max_kills: int = 4) -> list[str]:
    """Run `selfsup ARGS`, SIGKILL it after a random delay (a fraction of an uninterrupted run's `seconds`), then
    the same with `--resume` once `resumable()` says a killed attempt left a run to continue (a plain start
    otherwise), until an attempt exits by itself; the last attempt is never killed. Returns what happened."""
    rng = random.Random(seed)
    events = []
    for attempt in range(max_kills + 1):
        cmd = [sys.executable, "-m", "selfsup", *args] + (["--resume"] if attempt and resumable() else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0.2, 0.9) * seconds
        try:
            out, err = proc.communicate(timeout=delay if attempt < max_kills else 600)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            events.append(f"killed after {delay:.1f}s{' (--resume)' if '--resume' in cmd else ''}")
            continue
        events.append(f"exit {proc.returncode}{' (--resume)' if '--resume' in cmd else ''}")
        assert proc.returncode == 0, (events, err[-3000:])
        return events
    raise AssertionError(events)


def _timed(args: list[str]) -> float:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "selfsup", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return time.perf_counter() - start


def _pretrain_args(corpus: Path, out: Path) -> list[str]:
    return ["pretrain", "mlm", "--data", str(corpus), "--out", str(out), "--max-steps", "14", "--no-progress",
            *[a for s in PRETRAIN for a in ("--set", s)]]


@pytest.fixture(scope="module")
def uninterrupted(persuasion, tmp_path_factory) -> tuple[dict[int, float], float]:
    full = tmp_path_factory.mktemp("soak") / "full"
    seconds = _timed(_pretrain_args(persuasion, full))
    return _losses(full), seconds


def test_pretraining_killed_at_random_moments_resumes_to_the_same_losses(persuasion, uninterrupted, tmp_path):
    want, seconds = uninterrupted
    for seed in (0,):
        out = tmp_path / f"soak-{seed}"
        events = _soak(_pretrain_args(persuasion, out), lambda: (out / "config.yaml").is_file(), seconds, seed)
        got = _losses(out)
        assert sorted(got) == sorted(want), events
        np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5,
                                   err_msg=str(events))
        assert (out / "metrics.json").is_file() and (out / "model" / "model.safetensors").is_file(), events
        assert not _leftovers(tmp_path), (events, _leftovers(tmp_path))


def test_a_kill_in_the_middle_of_a_checkpoint_write_is_resumed_and_cleaned(persuasion, uninterrupted, tmp_path):
    want = uninterrupted[0]
    out = tmp_path / "cut"
    script = textwrap.dedent(f"""
        import os, signal, tempfile
        from pathlib import Path
        import selfsup.engine.checkpoint as ck
        from selfsup import pretrain

        calls = []
        real = ck.atomic_write_bytes

        def half_then_die(path, data):  # the second checkpoint: half its bytes reach the temp file, then kill -9
            calls.append(path)
            if len(calls) < 2:
                return real(path, data)
            fd, tmp = tempfile.mkstemp(prefix=f".{{Path(path).name}}.", dir=Path(path).parent)
            os.write(fd, data[:len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)

        ck.atomic_write_bytes = half_then_die
        pretrain("mlm", [{str(persuasion)!r}], {str(out)!r}, max_steps=14, progress=False, overrides={PRETRAIN!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert list((out / "checkpoints").glob(".last.ckpt.*")), "the kill should leave a half-written temp file"
    (out / ".model.tmp.k1ll3d").mkdir()  # what a kill during a model export leaves (the random soak found it)
    (out / ".model.tmp.k1ll3d" / "config.json").write_text("{")
    r = subprocess.run([sys.executable, "-m", "selfsup", *_pretrain_args(persuasion, out), "--resume"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = _losses(out)
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5)
    assert not _leftovers(tmp_path), _leftovers(tmp_path)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return austen_novels_task(tmp_path_factory.mktemp("soak-task"), train_per_class=40, eval_per_class=10,
                              novels=["persuasion", "northangerabbey"])


def test_finetuning_killed_at_random_moments_resumes_to_the_same_result(tiny_bert, task, tmp_path):
    def args(out: Path) -> list[str]:
        return ["finetune", "--model", str(tiny_bert), "--task", "sequence-classification", "--train", task["train"],
                "--eval", task["eval"], "--out", str(out), "--epochs", "4", "--seeds", "2", "--no-progress",
                *[a for s in FINETUNE for a in ("--set", s)]]

    seconds = _timed(args(tmp_path / "whole"))
    want = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    out = tmp_path / "soak"
    events = _soak(args(out), lambda: out.exists() or (tmp_path / ".soak.partial").exists(), seconds, seed=2)
    got = json.loads((out / "metrics.json").read_text())
    assert got["eval"] == pytest.approx(want["eval"], abs=1e-6), events
    for a, b in zip(got["runs"], want["runs"]):
        assert [h["train_loss"] for h in a["history"]] == pytest.approx(
            [h["train_loss"] for h in b["history"]], abs=1e-6), events
    assert not _leftovers(tmp_path) and not list(out.rglob("checkpoints")), (events, _leftovers(tmp_path))
