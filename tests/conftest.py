"""Shared fixtures: a per-session cache folder, real text from the embedded corpus, tiny-model overrides."""
from __future__ import annotations

import lzma
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "selfsup" / "assets"
_CACHE = tempfile.mkdtemp(prefix="selfsup-test-cache-")
os.environ["SELFSUP_CACHE"] = _CACHE  # never touch the user's ~/.cache during tests
if os.environ.get("PYTEST_XDIST_WORKER"):  # several test processes share the cores: one torch thread each,
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the `python -m selfsup` subprocesses the tests start
    import torch

    torch.set_num_threads(1)

# a model small enough that a few dozen steps take seconds on 2 CPU cores
TINY = ["model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=128", "model.max_length=64",
        "data.block_size=64", "data.tokenizer.vocab_size=2000", "train.batch_size=16", "train.eval_every=1000",
        "train.checkpoint_every=1000", "train.eval_batches=4", "train.warmup_steps=5"]


@pytest.fixture(scope="session")
def austen_dir(tmp_path_factory) -> Path:
    """Two real novels as plain text files (Persuasion and Northanger Abbey)."""
    folder = tmp_path_factory.mktemp("austen")
    for name in ("persuasion", "northangerabbey"):
        (folder / f"{name}.txt").write_bytes(lzma.decompress((ASSETS / f"austen-{name}.txt.xz").read_bytes()))
    return folder


@pytest.fixture(scope="session")
def persuasion(austen_dir) -> Path:
    return austen_dir / "persuasion.txt"


@pytest.fixture(scope="session")
def digits_split(tmp_path_factory) -> tuple[Path, Path]:
    """scikit-learn's digits as two labelled .npz files (1,200 to train and fit probes on, 597 to score)."""
    from selfsup.data.images import digits_split as split

    return split(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, persuasion) -> Path:
    """A 2-layer, hidden-32 BERT with a WordPiece tokenizer trained on Persuasion (random weights)."""
    import torch

    from test_adapt_heads import make_checkpoint

    torch.set_num_threads(1)
    texts = [t for t in persuasion.read_text().split("\n\n")[:300] if t.strip()]
    return make_checkpoint(tmp_path_factory.mktemp("tiny-bert"), "bert", texts)


@pytest.fixture(scope="session")
def two_novels(tmp_path_factory) -> dict:
    """Persuasion vs Northanger Abbey passages: 100 training and 30 evaluation passages per novel."""
    from selfsup.data.austen import austen_novels_task

    return austen_novels_task(tmp_path_factory.mktemp("two-novels"), train_per_class=100, eval_per_class=30,
                              novels=["persuasion", "northangerabbey"])


@pytest.fixture(scope="session")
def tuned_bert(tmp_path_factory, tiny_bert) -> Path:
    """A backbone with features (a random tiny checkpoint has none that a frozen-backbone method can use): the
    encoder of a short full fine-tune of `tiny_bert` on another pair of novels (Persuasion or Emma?)."""
    import transformers as tf

    from selfsup.adapt.core.models import load_tokenizer
    from selfsup.adapt.core.run import finetune
    from selfsup.data.austen import austen_novels_task

    d = tmp_path_factory.mktemp("tuned-bert")
    other = austen_novels_task(d / "task", train_per_class=150, eval_per_class=10, novels=["persuasion", "emma"])
    finetune(tiny_bert, "sequence-classification", other["train"], other["eval"], d / "run", epochs=6,
             overrides=["threads=1", "max_length=48", "batch_size=16", "lr=3e-3", "keep_best=false"])
    tf.AutoModelForSequenceClassification.from_pretrained(d / "run" / "model").bert.save_pretrained(d / "bb")
    load_tokenizer(d / "run" / "model").save_pretrained(d / "bb")
    return d / "bb"


def run_cli(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `selfsup ARGS` as a user would and return its exit status, stdout and stderr.

    By default the CLI's `main` runs in this test process with file descriptors 1 and 2 (and sys.stdout /
    sys.stderr) sent to files, and the process state a run may change (environment, working folder, torch
    threads and RNGs, warning filters) restored afterwards: a fresh `python -m selfsup` pays ~6 s of imports
    per call on 2 cores, most of the suite's time. An `env`, SELFSUP_TESTS_FRESH=1, or a multi-process run
    (`train.devices`/`num_nodes` > 1 or `strategy=ddp`: DDP re-launches the running program) start
    `python -m selfsup` instead; `timeout` applies only there."""
    ddp = any(re.search(r"train\.(devices=(?!1$)|num_nodes=(?!1$)|strategy=ddp)", a) for a in args)
    if ddp or env or os.environ.get("SELFSUP_TESTS_FRESH") == "1":
        full_env = {**os.environ, **(env or {})}
        return subprocess.run([sys.executable, "-m", "selfsup", *args], capture_output=True, text=True,
                              timeout=timeout, env=full_env)
    return _run_cli_here(list(args))


def _run_cli_here(argv: list[str]) -> subprocess.CompletedProcess:
    """`selfsup.cli.main(argv)` with fds 1/2 captured and the process state restored (see run_cli)."""
    import io
    import random
    import traceback
    import warnings

    import numpy as np
    import torch

    from selfsup.cli import main

    saved = {"environ": dict(os.environ), "cwd": os.getcwd(), "threads": torch.get_num_threads(),
             "torch_rng": torch.random.get_rng_state(), "np_rng": np.random.get_state(),
             "py_rng": random.getstate(), "deterministic": torch.are_deterministic_algorithms_enabled(),
             "dtype": torch.get_default_dtype(), "argv": sys.argv}
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    sys.stdout.flush()
    sys.stderr.flush()
    fds = [os.dup(1), os.dup(2)]
    streams = (sys.stdout, sys.stderr)
    os.dup2(files[0].fileno(), 1)
    os.dup2(files[1].fileno(), 2)
    sys.stdout = io.TextIOWrapper(open(os.dup(1), "wb", buffering=0), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(open(os.dup(2), "wb", buffering=0), encoding="utf-8", write_through=True)
    sys.argv = ["selfsup", *argv]
    try:
        with warnings.catch_warnings():
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
            except Exception:  # a crash: what a user's process would print before exiting 1
                traceback.print_exc()
                code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            stream.close()
        sys.stdout, sys.stderr = streams
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        os.environ.clear()
        os.environ.update(saved["environ"])
        os.chdir(saved["cwd"])
        torch.set_num_threads(saved["threads"])
        torch.random.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["np_rng"])
        random.setstate(saved["py_rng"])
        torch.use_deterministic_algorithms(saved["deterministic"])
        torch.set_default_dtype(saved["dtype"])
        sys.argv = saved["argv"]
    out, err = (_read_and_close(f) for f in files)
    return subprocess.CompletedProcess(["selfsup", *argv], code or 0, out, err)


def _read_and_close(f) -> str:
    f.seek(0)
    text = f.read().decode("utf-8", "replace")
    f.close()
    return text


SPEECH_WORDS = "selfsup:speech-words"  # 10 command words x 8 voices x 3 speeds, eSpeak NG (src/selfsup/assets)


def speech_objective(name: str, overrides=()):
    """A speech method's objective on the shipped words, as the engine builds it: (objective, prepared)."""
    import torch

    from selfsup.recipes import load_recipe
    from selfsup.registry import get_objective

    recipe = load_recipe(name, list(overrides))
    cls = get_objective(name)
    prepared = cls.prepare(recipe, [SPEECH_WORDS])
    torch.manual_seed(0)
    return cls(recipe, prepared), prepared


def speech_batch(objective, prepared, n: int = 8, seed: int = 3):
    """The objective's batch of the first n training clips, with per-example generators [seed, i]."""
    import numpy as np

    examples = [prepared.train[i] for i in range(n)]
    return objective.make_batch(examples, [np.random.default_rng([seed, i]) for i in range(n)])
