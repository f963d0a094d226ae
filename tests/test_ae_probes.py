"""The auto-encoders' encoders behind `selfsup evaluate --probe linear|knn`: an MLP auto-encoder trained on the
digits' training images gives codes whose linear probe beats the majority class by far and an untrained
auto-encoder's codes clearly; a table VAE's codes (its mean) probe the breast-cancer labels; the examples are
preprocessed with the saved preprocessing (never refitted); the encoder seam gives the code and every layer's
states; a table lacking a fitted column is a one-line exit-2 error that writes nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

FAST = ["train.batch_size=64", "train.eval_every=10000", "train.checkpoint_every=10000", "train.threads=1",
        "train.log_every=50"]


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def digits_ae(tmp_path_factory):
    from selfsup.adapt.tools.anomaly import fit_anomaly

    run = tmp_path_factory.mktemp("ae-probe") / "digits"
    fit_anomaly(["sklearn:digits@train"], run, "ae", max_steps=300, seed=0,
                overrides=FAST + ["data.image_size=8", "model.bottleneck=16", "model.hidden_sizes=[128,64]"])
    return run


def test_digits_autoencoder_codes_beat_majority_and_untrained(digits_ae, capsys):
    from selfsup.adapt.core.ae_encoder import AEEncoder, ae_examples, ae_features, label_ids, load_ae_encoder
    from selfsup.cli import main
    from selfsup.evaluation.probes import linear_probe
    from selfsup.objectives.base import Prepared

    out = digits_ae.parent / "probe"
    assert main(["evaluate", "--model", str(digits_ae), "--probe", "linear", "--train", "sklearn:digits@train",
                 "--eval", "sklearn:digits@test", "--out", str(out), "--threads", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "eval.accuracy=" in capsys.readouterr().out
    encoder, _ = load_ae_encoder(digits_ae)
    tr, tr_labels = ae_examples(encoder, ["sklearn:digits@train"])
    ev, ev_labels = ae_examples(encoder, ["sklearn:digits@test"])
    train_y, eval_y, classes = label_ids(tr_labels, ev_labels)
    assert classes == [str(i) for i in range(10)] and m["eval"]["n_train"] == len(train_y) == 1347
    majority = float((eval_y == np.bincount(train_y).argmax()).mean())
    torch.manual_seed(0)
    ae = encoder.ae
    untrained = AEEncoder(type(ae)(ae.recipe, Prepared([], [], {"shape": ae.shape,
                                                                 "preprocessor": ae.preprocessor}))).eval()
    fresh = linear_probe(ae_features(untrained, tr), train_y, ae_features(untrained, ev), eval_y)
    # measured: 0.924 trained, 0.800 untrained, 0.102 majority (300 steps; 450 test images)
    assert m["eval"]["accuracy"] > majority + 0.7 and m["eval"]["accuracy"] > fresh + 0.05, (m, fresh, majority)
    assert m["eval"]["accuracy"] == pytest.approx(
        linear_probe(ae_features(encoder, tr), train_y, ae_features(encoder, ev), eval_y))


def test_encoder_seam_gives_code_and_layer_states(digits_ae):
    from selfsup.adapt.core.encoders import image_export_folder, load_encoder

    enc = load_encoder(digits_ae)
    assert enc.modality == "autoencoder" and image_export_folder(digits_ae) is None
    x = torch.randn(5, 1, 8, 8)
    states = enc.hidden_states(x)
    assert [tuple(s.shape) for s in states] == [(5, 1, 8, 8), (5, 128), (5, 64), (5, 16)]
    assert torch.equal(enc.pooled(x), states[-1]) and torch.equal(enc.pooled(x), enc.model.ae.encode(x))


def test_table_vae_probe_uses_saved_preprocessing_and_bad_columns_exit_2(tmp_path, capsys):
    from selfsup.adapt.core.ae_encoder import ae_examples, load_ae_encoder
    from selfsup.cli import main
    from selfsup.data.tables import read_tables

    run = tmp_path / "vae"
    assert main(["anomaly", "fit", "--data", "sklearn:breast_cancer@train", "--out", str(run), "--method", "vae",
                 "--max-steps", "150", "--no-progress", *_sets(FAST)]) == 0
    for probe in ("linear", "knn"):
        assert main(["evaluate", "--model", str(run), "--probe", probe, "--train", "sklearn:breast_cancer@train",
                     "--eval", "sklearn:breast_cancer@test", "--label-column", "label", "--threads", "1"]) == 0
        acc = json.loads((run / f"eval-{probe}" / "metrics.json").read_text())["eval"]["accuracy"]
        assert acc > 0.63 + 0.2, (probe, acc)  # majority (benign) is 0.629 of the 143 test rows
    encoder, _ = load_ae_encoder(run)
    x, labels = ae_examples(encoder, ["sklearn:breast_cancer@test"])
    frame, spans = read_tables(["sklearn:breast_cancer@test"])
    pre = encoder.preprocessor  # fitted on the training rows: the test rows' own statistics are not used
    assert np.allclose(x[:, 0], (frame[pre.numeric[0]].to_numpy() - pre.mean[0]) / pre.scale[0], atol=1e-5)
    assert sorted(set(labels)) == ["0", "1"]
    assert torch.equal(encoder(torch.from_numpy(x[:4])), encoder.ae.posterior(torch.from_numpy(x[:4]))[0])

    short = tmp_path / "short.csv"
    frame.drop(columns=[pre.numeric[3]]).to_csv(short, index=False)
    frame.to_csv(tmp_path / "full.csv", index=False)
    capsys.readouterr()
    out = tmp_path / "bad"
    assert main(["evaluate", "--model", str(run), "--probe", "linear", "--train", str(short), "--eval",
                 str(tmp_path / "full.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(pre.numeric[3]) in err and "short.csv" in err, err
    assert not out.exists()
    assert main(["evaluate", "--model", str(run), "--probe", "linear", "--train", str(tmp_path / "full.csv"),
                 "--eval", "sklearn:breast_cancer@test", "--label-column", "nope", "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err and not out.exists()
