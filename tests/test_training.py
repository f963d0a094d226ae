"""End-to-end engine behaviour on real text: learning, HF export, continuing from a checkpoint, resume after a
kill, the NaN guard, and 2-process DDP equality."""
from __future__ import annotations

import math
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import TINY, run_cli
from selfsup import pretrain
from selfsup.engine.logs import read_logged
from selfsup.errors import TrainingDiverged


def _losses(run) -> dict[int, float]:
    return {int(r["step"]): r["loss"] for r in read_logged(run) if "loss" in r}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, persuasion):
    out = tmp_path_factory.mktemp("runs") / "mlm"
    metrics = pretrain("mlm", [str(persuasion)], out, max_steps=120, progress=False,
                       overrides=TINY + ["train.lr=2e-3"])
    return out, metrics


def test_short_run_lowers_heldout_loss(trained, persuasion, tmp_path):
    out, metrics = trained
    # the untrained model's held-out loss (same data, same held-out masks): a 1-step run with lr ~ 0
    fresh = pretrain("mlm", [str(persuasion)], tmp_path / "fresh", max_steps=1, progress=False,
                     overrides=TINY + ["train.lr=1e-12"])
    assert metrics["heldout_loss"] < fresh["heldout_loss"] - 1.0
    assert metrics["heldout_perplexity"] < fresh["heldout_perplexity"] / 3
    for name in ("config.yaml", "metrics.json", "loss_curve.png", "checkpoints/last.ckpt", "model/config.json",
                 "model/model.safetensors", "model/tokenizer.json"):
        assert (out / name).is_file(), name


def test_export_reloads_in_plain_transformers_with_identical_logits(trained):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from selfsup.recipes import load_recipe

    out, _ = trained
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForMaskedLM.from_pretrained(out / "model").eval()
    batch = tok(["Anne Elliot was at home.", "Captain Wentworth [MASK] a letter."], return_tensors="pt",
                padding=True)
    # the trained weights as the engine held them (its final checkpoint) in a model built from the config
    assert load_recipe(str(out / "config.yaml")).name == "mlm"  # the resolved recipe reloads
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    weights = {k.removeprefix("objective.model."): v for k, v in state.items() if k.startswith("objective.model.")}
    reference = AutoModelForMaskedLM.from_config(model.config).eval()
    missing, unexpected = reference.load_state_dict(weights, strict=False)
    assert not unexpected
    with torch.no_grad():
        a = model(**batch).logits
        b = reference(**batch).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert a.shape[-1] == len(tok)
    # the saved tokenizer knows the model's length: plain `truncation=True` gives inputs the model takes
    assert tok.model_max_length == model.config.max_position_embeddings
    long = tok(["Anne " * 1000], truncation=True, return_tensors="pt")
    assert long["input_ids"].shape[1] == model.config.max_position_embeddings
    with torch.no_grad():
        model(**long)


def test_continue_pretraining_from_a_local_hf_checkpoint(trained, persuasion, tmp_path):
    out, metrics = trained
    cont = pretrain("mlm", [str(persuasion)], tmp_path / "cont", max_steps=5, progress=False,
                    overrides=TINY + [f"model.from_pretrained={out / 'model'}", "data.tokenizer.kind=pretrained",
                                      f"data.tokenizer.pretrained={out / 'model'}", "train.lr=1e-4",
                                      "train.log_every=1"])
    # an untrained model starts near ln(vocab) = 7.6; the continued one starts where the checkpoint ended
    assert cont["train_loss_first"] < math.log(2000) - 1.0
    assert cont["train_loss_first"] < metrics["train_loss"] + 0.5


def test_resume_after_kill_gives_the_same_loss_trajectory(persuasion, tmp_path):
    overrides = TINY + ["train.log_every=1", "train.checkpoint_every=4"]
    full = tmp_path / "full"
    pretrain("mlm", [str(persuasion)], full, max_steps=14, progress=False, overrides=overrides)
    killed = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        import lightning as L
        from selfsup import pretrain

        class KillAfter(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == 10:
                    os.kill(os.getpid(), signal.SIGKILL)

        pretrain("mlm", [{str(persuasion)!r}], {str(killed)!r}, max_steps=14, progress=False,
                 overrides={overrides!r}, callbacks=[KillAfter()])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed / "metrics.json").exists()
    assert torch.load(killed / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 8
    pretrain("mlm", [str(persuasion)], killed, max_steps=14, progress=False, overrides=overrides, resume=True)
    a, b = _losses(full), _losses(killed)
    assert sorted(a) == sorted(b) and len(a) >= 13
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-5)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(persuasion, tmp_path, monkeypatch):
    from selfsup.objectives.mlm import MaskedLanguageModeling

    original = MaskedLanguageModeling.forward
    calls = {"n": 0}

    def poisoned(self, batch):
        out = original(self, batch)
        calls["n"] += 1
        if calls["n"] > 6:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(MaskedLanguageModeling, "forward", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 7.*last.ckpt"):
        pretrain("mlm", [str(persuasion)], out, max_steps=20, progress=False,
                 overrides=TINY + ["train.checkpoint_every=3"])
    state = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
    assert state["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(persuasion, tmp_path):
    common = ["pretrain", "mlm", "--data", str(persuasion), "--max-steps", "8", "--no-progress"]
    sets = [f"--set={o}" for o in TINY + ["model.dropout=0", "train.accelerator=cpu", "train.log_every=1"]]
    one = run_cli(*common, "--out", str(tmp_path / "one"), *sets)
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_cli(*common, "--out", str(tmp_path / "two"), *sets, "--set=train.devices=2",
                  "--set=train.strategy=ddp")  # run_cli starts a process for DDP
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(a) == sorted(b) and len(a) == 8
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-4)
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "one" / "model" / "model.safetensors")
    wb = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)


def test_gradient_accumulation_matches_one_big_batch(persuasion, tmp_path):
    """2 micro-batches of 8 accumulated = one batch of 16 (same examples, same masks, no dropout)."""
    from safetensors.torch import load_file

    base = TINY + ["model.dropout=0", "train.threads=1"]
    pretrain("mlm", [str(persuasion)], tmp_path / "one", max_steps=6, progress=False, overrides=base)
    pretrain("mlm", [str(persuasion)], tmp_path / "acc", max_steps=6, progress=False,
             overrides=base + ["train.accumulate=2"])
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "acc" / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert torch.load(tmp_path / "acc" / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 6
