"""--resume never lies and never unpickles: an override the restored state cannot honour (lr, model size) is a
one-line error naming the key, while max_steps and logging keys extend the run; a pickled or garbage
checkpoint and a garbage config.yaml are one line too, and none of them rewrites config.yaml."""
from __future__ import annotations

import pickle

import pytest
from conftest import TINY, run_cli

from selfsup.engine.pretrain import pretrain
from selfsup.errors import SelfsupError


def _args(persuasion, out, *extra):
    return ["pretrain", "mlm", "--data", str(persuasion), "--out", str(out), "--max-steps", "4", "--no-progress",
            *[f"--set={o}" for o in TINY], *extra]


@pytest.fixture(scope="module")
def finished(persuasion, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    res = run_cli(*_args(persuasion, out))
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def _one_line(res, *needles):
    assert res.returncode == 2 and res.stderr.startswith("selfsup: error: ") and res.stderr.count("\n") == 1, \
        res.stderr[-2000:]
    for n in needles:
        assert n in res.stderr, res.stderr


def test_an_override_the_checkpoint_cannot_honour_is_refused(persuasion, finished):
    config = (finished / "config.yaml").read_text()
    res = run_cli(*_args(persuasion, finished, "--resume", "--set=train.lr=0.05"))
    _one_line(res, "train.lr=0.05", "start a new run")
    assert (finished / "config.yaml").read_text() == config


@pytest.mark.parametrize("case", ["pickled", "garbage-checkpoint", "garbage-config"])
def test_hostile_run_files_are_one_line_and_config_is_kept(case, persuasion, finished, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    if case == "pickled":
        (run / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps({"global_step": 1, "evil": object}))
    elif case == "garbage-checkpoint":
        (run / "checkpoints" / "last.ckpt").write_bytes(b"\x00not a checkpoint")
    else:
        (run / "config.yaml").write_text("{{{ not: yaml")
    config = (run / "config.yaml").read_text()
    with pytest.raises(SelfsupError, match="config.yaml" if case == "garbage-config" else "last.ckpt"):
        pretrain("mlm", [str(persuasion)], run, max_steps=6, progress=False, overrides=TINY, resume=True)
    assert (run / "config.yaml").read_text() == config
