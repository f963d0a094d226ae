"""One run owns its folder (a second `pretrain` on the same `--out` is refused while the first runs), a run
killed before its first checkpoint can be started again or resumed (from step 0) without deleting anything by
hand, and the temp file of a checkpoint write that a kill interrupted is cleaned on the next start."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import TINY, run_cli


def _args(persuasion, out, *extra):
    return ["pretrain", "mlm", "--data", str(persuasion), "--out", str(out), "--max-steps", "6", "--no-progress",
            *[f"--set={o}" for o in TINY], *extra]


def test_a_second_run_on_the_same_folder_is_refused(persuasion, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "selfsup", *_args(persuasion, out, "--max-steps", "400")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.time()
    while not (tmp_path / ".run.lock").exists():
        assert first.poll() is None and time.time() - start < 120
        time.sleep(0.05)
    second = run_cli(*_args(persuasion, out))
    assert second.returncode == 2 and "another selfsup run is writing it" in second.stderr
    assert second.stderr.count("\n") == 1
    os.kill(first.pid, signal.SIGKILL)
    first.wait()


def test_a_run_killed_before_its_first_checkpoint_starts_again(persuasion, tmp_path):
    done = tmp_path / "done"
    assert run_cli(*_args(persuasion, done)).returncode == 0
    config = (done / "config.yaml").read_text()
    for name, extra in (("fresh", ()), ("resumed", ("--resume",))):
        out = tmp_path / name
        (out / "logs" / "attempt-0").mkdir(parents=True)
        (out / "config.yaml").write_text(config)  # what a kill before the first checkpoint leaves
        r = run_cli(*_args(persuasion, out, *extra))
        assert r.returncode == 0 and "killed before its first checkpoint" in r.stderr, r.stderr[-2000:]
        assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "metrics.json").is_file()
    # a kill during a checkpoint write leaves a temp file beside last.ckpt: the next start removes it
    stale = done / "checkpoints" / ".last.ckpt.abc123"
    stale.write_bytes(b"half a checkpoint")
    r = run_cli(*_args(persuasion, done, "--resume", "--max-steps", "8"))
    assert r.returncode == 0 and not stale.exists(), r.stderr[-2000:]
    # a user's folder that merely holds a config.yaml is never cleaned
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("mine: true\n")
    (mine / "notes.txt").write_text("keep")
    r = run_cli(*_args(persuasion, mine))
    assert r.returncode == 2 and (mine / "config.yaml").read_text() == "mine: true\n"
