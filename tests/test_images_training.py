"""Image methods end to end on real images (scikit-learn's digits, 16x16): every method lowers its loss in a
short run; SimCLR's frozen features beat a random-init backbone under the linear probe; the export reloads in
plain transformers; `selfsup evaluate` writes eval.accuracy; the MoCo queue is FIFO and excludes the current
batch's positives; the online probe and collapse diagnostics are logged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from selfsup import pretrain
from selfsup.engine.logs import read_logged
from selfsup.evaluation.cli import evaluate

TINY = ["data.image_size=16", "train.batch_size=64", "train.threads=1", "train.eval_every=1000",
        "train.checkpoint_every=1000", "train.eval_batches=2", "train.log_every=1", "train.warmup_steps=5",
        "model.embedding_size=16", "model.hidden_sizes=[16,32,64]", "model.depths=[1,1,1]"]
# method -> (extra overrides, steps, first logged step of the "untrained" window, required drop of the loss)
METHODS = {
    "simclr": ([], 40, 0, 0.1),
    "moco": (["objective.queue_size=128", "train.lr=3e-3"], 60, 3, 0.05),  # the queue is full from step 2
    "byol": ([], 40, 0, 0.5),
    "simsiam": ([], 40, 0, 0.04),
    "barlow_twins": ([], 40, 0, 40.0),
    "vicreg": ([], 40, 0, 0.8),
    "rotation": ([], 40, 0, 0.3),
    "context": ([], 40, 0, 0.2),
    "deepcluster": (["objective.clusters=20"], 24, 0, 0.15),  # within the first epoch (25 steps)
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_short_run_lowers_the_loss_on_real_images(method, tmp_path):
    extra, steps, start, drop = METHODS[method]
    out = tmp_path / method
    metrics = pretrain(method, ["sklearn:digits"], out, max_steps=steps, progress=False, overrides=TINY + extra)
    losses = [r["loss"] for r in read_logged(out) if "loss" in r]
    assert len(losses) == steps
    untrained, trained = np.mean(losses[start:start + 5]), np.mean(losses[-5:])
    assert trained < untrained - drop, (method, losses)
    assert np.isfinite(metrics["heldout_loss"])
    # the online probe and the collapse diagnostics are in the logs of every method
    for key in ("train_probe_accuracy", "train_feature_std", "train_effective_rank", "heldout_probe_accuracy"):
        assert key in metrics, key
    assert (out / "model" / "preprocessing.json").is_file() and (out / "model" / "model.safetensors").is_file()


def test_simclr_linear_probe_beats_random_init_and_evaluate_writes_metrics(digits_split, tmp_path):
    train, held = digits_split
    runs = {}
    for tag, steps, extra in (("random", 1, ["train.lr=1e-12"]), ("simclr", 60, [])):
        runs[tag] = tmp_path / tag
        pretrain("simclr", [str(train)], runs[tag], max_steps=steps, progress=False, overrides=TINY + extra)
    acc = {tag: {p: evaluate(run, p, [str(train)], [str(held)])["eval"]["accuracy"] for p in ("linear", "knn")}
           for tag, run in runs.items()}
    assert acc["simclr"]["linear"] > acc["random"]["linear"] + 0.02, acc
    assert acc["simclr"]["knn"] > acc["random"]["knn"] + 0.02, acc
    assert acc["simclr"]["linear"] > 0.85, acc
    # the CLI verb, as a user runs it: metrics.json with eval.accuracy beside model/
    r = run_cli("evaluate", "--model", str(runs["simclr"] / "model"), "--probe", "knn", "--train", str(train),
                "--eval", str(held), "--threads", "1")
    assert r.returncode == 0, r.stderr
    written = json.loads((runs["simclr"] / "eval-knn" / "metrics.json").read_text())
    assert written["eval"]["accuracy"] == pytest.approx(acc["simclr"]["knn"])
    assert written["eval"]["n_eval"] == 597 and not written["diagnostics"]["collapsed"]


def test_export_reloads_in_plain_transformers_with_identical_features(tmp_path):
    from transformers import AutoModel

    from selfsup.backbones.vision import load_vision_encoder

    out = tmp_path / "vit"
    pretrain("simclr", ["sklearn:digits"], out, max_steps=3, progress=False,
             overrides=TINY + ["model.type=vit", "model.patch_size=4", "model.hidden_size=32", "model.num_layers=2",
                               "model.num_heads=2"])
    model = AutoModel.from_pretrained(out / "model").eval()
    assert model.config.model_type == "vit" and model.config.image_size == 16 and model.config.num_channels == 1
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    weights = {k.removeprefix("objective.encoder.model."): v for k, v in state.items()
               if k.startswith("objective.encoder.model.")}
    reference = type(model)(model.config, add_pooling_layer=False).eval()
    assert not reference.load_state_dict(weights, strict=False).unexpected_keys
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(pixel_values=x).last_hidden_state, reference(pixel_values=x).last_hidden_state,
                              atol=1e-5)
    encoder, prep = load_vision_encoder(out)
    assert prep["image_size"] == 16 and prep["channels"] == 1 and len(prep["mean"]) == 1
    with torch.no_grad():
        assert encoder(x).shape == (2, 32) and len(encoder.stages(x)) == 3  # embeddings + 2 layers


def test_moco_queue_is_fifo_and_excludes_the_current_batch(tmp_path):
    from selfsup.objectives.moco import MoCo, enqueue
    from selfsup.recipes import load_recipe

    queue, ptr = torch.zeros(5, 2), torch.zeros((), dtype=torch.long)
    for step in range(3):  # batches of 2 into a queue of 5: the oldest rows are overwritten first
        enqueue(queue, ptr, torch.full((2, 2), float(step + 1)))
    assert queue[:, 0].tolist() == [3.0, 1.0, 2.0, 2.0, 3.0]  # batch 1's second key is now the oldest
    assert int(ptr) == 1

    recipe = load_recipe("moco", TINY + ["objective.queue_size=8", "train.batch_size=4", "objective.projection_dim=3"])
    prepared = MoCo.prepare(recipe, ["sklearn:digits"])
    model = MoCo(recipe, prepared)
    before = model.queue.clone()
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    loss, logits = model.contrast(q, k, update=True)
    qn, kn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(k, dim=1)
    t = recipe.objective.temperature
    assert torch.allclose(logits[:, 0], (qn * kn).sum(1) / t, atol=1e-6)
    assert torch.allclose(logits[:, 1:], qn @ before.t() / t, atol=1e-6)  # negatives: the queue before
    assert logits.shape == (4, 9)
    assert torch.allclose(model.queue[:4], kn) and torch.equal(model.queue[4:], before[4:])
    assert int(model.queue_ptr) == 4


def test_view_i_is_the_same_however_many_views_are_drawn_so_deepcluster_draws_one():
    from selfsup.objectives.deepcluster import DeepCluster
    from selfsup.recipes import load_recipe

    recipe = load_recipe("deepcluster", TINY)
    model = DeepCluster(recipe, DeepCluster.prepare(recipe, ["sklearn:digits"])).train()
    images = torch.from_numpy(np.stack([model.examples[i][0] for i in range(6)]))
    model.micro_step = 3  # a training step: views seeded by (seed, step, view index)
    one, (first, second) = model.views(images, 1), model.two_views(images)
    assert len(one) == 1 and torch.equal(one[0], first) and not torch.allclose(first, second)
    model.micro_step = 4
    assert not torch.allclose(model.views(images, 1)[0], first)  # the next step draws a new view
