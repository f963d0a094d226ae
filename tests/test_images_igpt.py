"""Image GPT on real images (scikit-learn's digits, 8x8): the k-means palette quantizes every pixel to its
nearest colour in raster order and round-trips within the quantization error; the loss is the plain
next-token cross-entropy; a short run lowers the held-out loss below the untrained model's and its features
beat the untrained model's under the linear probe of `selfsup evaluate`; the export reloads in plain
transformers with identical logits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli
from selfsup import pretrain
from selfsup.pretext.pixel_tokens import fit_palette, images_to_tokens, nearest_colour, tokens_to_images

TINY = ["train.threads=1", "train.batch_size=64", "train.eval_every=1000", "train.checkpoint_every=1000",
        "train.eval_batches=3", "train.log_every=10", "train.warmup_steps=10"]


def digits_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.rint(load_digits().images * 255 / 16).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)


def test_palette_maps_every_pixel_to_its_nearest_centroid_and_round_trips():
    images = digits_images()[:400]
    palette = fit_palette(images, 6, seed=0)  # 17 grey levels -> 6 k-means centroids
    assert palette.shape == (6, 1) and (np.diff(palette[:, 0]) > 0).all()  # sorted by brightness
    assert np.array_equal(palette, fit_palette(images, 6, seed=0))  # fixed seed: the same palette
    tokens = images_to_tokens(images, palette).numpy()
    assert tokens.shape == (400, 64) and tokens.min() >= 0 and tokens.max() < 6
    distances = np.abs(images.reshape(400, 64, 1).astype(np.float64) - palette[:, 0][None, None])
    assert np.array_equal(tokens, distances.argmin(-1))  # brute force agrees
    back = tokens_to_images(tokens, palette, 8)
    error = np.abs(back.astype(np.float64) - images)[:, 0].reshape(400, 64)
    assert (error <= distances.min(-1) + 0.5).all()  # within the quantization error (+ rounding to uint8)
    assert error.mean() < 255 / 6 / 2
    # no more distinct colours than clusters: the palette is those colours and the round trip is exact
    exact = fit_palette(images, 32, seed=0)
    assert len(exact) == len(np.unique(images))
    assert np.array_equal(tokens_to_images(images_to_tokens(images, exact), exact, 8), images)


def test_tokens_are_in_raster_order_and_rgb_colours_are_matched_whole():
    grey = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4) * 10
    palette = np.arange(0, 160, 10, dtype=np.float32)[::-1, None].copy()  # id i = value 150 - 10 i
    assert images_to_tokens(grey, palette)[0].tolist() == [15 - (4 * r + c) for r in range(4) for c in range(4)]
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)
    rgb = np.zeros((1, 3, 2, 2), np.uint8)
    rgb[0, :, 0, 1] = [250, 10, 0]  # reddish at row 0, column 1
    rgb[0, :, 1, 0] = [0, 5, 240]  # bluish at row 1, column 0
    rgb[0, :, 1, 1] = [20, 200, 30]  # greenish
    assert images_to_tokens(rgb, colours)[0].tolist() == [0, 1, 3, 2]
    assert nearest_colour(torch.tensor([[127.0, 0.0, 0.0], [128.0, 0.0, 0.0]]), colours).tolist() == [0, 1]


def test_loss_is_the_next_token_cross_entropy_on_the_same_logits():
    from selfsup.objectives.igpt import ImageGPT
    from selfsup.recipes import load_recipe

    recipe = load_recipe("igpt", TINY)
    prepared = ImageGPT.prepare(recipe, ["sklearn:digits"])
    model = ImageGPT(recipe, prepared).eval()
    k = len(prepared.extras["palette"])
    assert model.model.config.vocab_size == k + 1 and model.model.config.n_positions == 65
    batch = model.make_batch([prepared.train[i] for i in range(6)], [])
    ids = batch["input_ids"]
    assert ids.shape == (6, 65) and (ids[:, 0] == k).all() and (ids[:, 1:] < k).all()
    assert torch.equal(ids[0, 1:], torch.as_tensor(prepared.train[0][0], dtype=torch.long))
    with torch.no_grad():
        out = model(batch)
        logits = model.model(input_ids=ids).logits
        direct = torch.stack([F.cross_entropy(logits[b, t], ids[b, t + 1], reduction="none")
                              for b in range(6) for t in range(64)]).mean()
        hf = model.model(input_ids=ids, labels=ids).loss  # transformers' own shifted loss
    assert out["loss"].item() == pytest.approx(direct.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(hf.item(), rel=1e-5)
    assert out["bits_per_pixel"].item() == pytest.approx(direct.item() / np.log(2), rel=1e-5)


def test_short_run_lowers_heldout_loss_beats_untrained_features_and_export_reloads(digits_split, tmp_path):
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    from selfsup.adapt.core.encoders import load_image_encoder as load_encoder

    from selfsup.evaluation.cli import evaluate

    train, held = digits_split
    runs, metrics = {}, {}
    for tag, steps, extra in (("untrained", 1, ["train.lr=1e-12"]), ("igpt", 200, ["train.lr=5e-3"])):
        runs[tag] = tmp_path / tag
        metrics[tag] = pretrain("igpt", [str(train)], runs[tag], max_steps=steps, progress=False,
                                overrides=TINY + extra)
    assert metrics["igpt"]["heldout_loss"] < metrics["untrained"]["heldout_loss"] - 0.5, metrics
    assert metrics["igpt"]["heldout_next_pixel_accuracy"] > metrics["untrained"]["heldout_next_pixel_accuracy"]
    acc = {tag: evaluate(run, "linear", [str(train)], [str(held)])["eval"]["accuracy"] for tag, run in runs.items()}
    assert acc["igpt"] > acc["untrained"] + 0.05, acc

    # the CLI verb on an igpt run: metrics.json with eval.accuracy beside model/
    r = run_cli("evaluate", "--model", str(runs["igpt"]), "--probe", "knn", "--train", str(train), "--eval",
                str(held), "--threads", "1")
    assert r.returncode == 0, r.stderr
    written = json.loads((runs["igpt"] / "eval-knn" / "metrics.json").read_text())
    assert written["eval"]["n_eval"] == 597 and 0.1 < written["eval"]["accuracy"] <= 1.0

    # the export: plain AutoModelForCausalLM with the trained weights, the palette and the preprocessing
    folder = runs["igpt"] / "model"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    prep = json.loads((folder / "preprocessing.json").read_text())
    palette = np.load(folder / prep["palette"])
    assert model.config.vocab_size == len(palette) + 1 == prep["start_token"] + 1
    assert prep["image_size"] == 8 and prep["channels"] == 1 and prep["model_type"] == "igpt"
    state = torch.load(runs["igpt"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    weights = {k.removeprefix("objective.model."): v for k, v in state["state_dict"].items()
               if k.startswith("objective.model.")}
    reference = GPT2LMHeadModel(model.config).eval()
    reference.load_state_dict(weights)
    ids = torch.cat([torch.full((3, 1), len(palette)), torch.randint(len(palette), (3, 64))], dim=1)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    encoder, _ = load_encoder(runs["igpt"])
    x = torch.from_numpy(digits_images()[:4]).float() / 255.0
    with torch.no_grad():
        assert encoder(x).shape == (4, 64)
