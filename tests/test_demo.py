"""`selfsup demo`, shortened: every section runs and writes its files; an unrelated folder is never replaced."""
from __future__ import annotations

import json

from conftest import run_cli


def test_demo_runs_end_to_end_and_protects_other_folders(tmp_path):
    out = tmp_path / "demo"
    res = run_cli("demo", "--out", str(out), "--steps", "4", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "demo.json").read_text())
    assert summary["steps"] == 4 and summary["cloze_words"] > 100
    assert 0 <= summary["cloze_top5"] <= 1 and 0 <= summary["image_linear_probe_simclr"] <= 1
    assert 0 <= summary["dialogue_accuracy_pretrained"] <= 1 and 0 <= summary["dialogue_accuracy_scratch"] <= 1
    assert 0 <= summary["speech_kws_pretrained"] <= 1 and 0 <= summary["speech_kws_logmel"] <= 1
    assert abs(sum(summary["speech_layer_weights"]) - 1) < 1e-5
    assert 0 <= summary["anomaly_auroc_vae"] <= 1 and 0.8 < summary["anomaly_auroc_isolation_forest"] <= 1
    assert not (out / "pretrain/loss_curve.png").exists()  # 4 steps log one row: a curve would say nothing
    for name in ("pretrain/model/model.safetensors", "images/features_pca.png",
                 "downstream/curves.png", "downstream/pretrained/model/config.json",
                 "speech/probe/layer_weights.png", "speech/apc/model/preprocessing.json", "anomaly/scores.png"):
        assert (out / name).is_file(), name
    # one page holds every picture the demo drew
    page = (out / "report.html").read_text()
    pictures = [p for p in out.rglob("*.png") if "model" not in p.parts]
    assert len(pictures) >= 5 and page.count("<img ") == len(pictures) and "Compared: " in page
    assert "Cloze on held-out passages" in res.stdout
    assert "it/s" not in res.stdout and "\r" not in res.stdout  # progress goes to stderr, stdout has results
    # a second demo replaces the first; a folder the demo did not make is refused
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    res = run_cli("demo", "--out", str(other), "--steps", "2")
    assert res.returncode == 2 and "not a demo run" in res.stderr
    assert (other / "keep.txt").read_text() == "mine"


def test_the_downstream_curves_average_the_label_draws():
    from selfsup.demo import mean_history

    runs = {"runs": [{"history": [{"epoch": 1, "train_loss": 0.7}, {"epoch": 2, "train_loss": 0.5, "accuracy": 0.6}]},
                     {"history": [{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.3, "accuracy": 0.8}]}]}
    rows = mean_history(runs)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["train_loss"] == 0.8
    assert abs(rows[1]["train_loss"] - 0.4) < 1e-12 and abs(rows[1]["accuracy"] - 0.7) < 1e-12
    one = {"history": [{"epoch": 1, "train_loss": 0.7}]}
    assert mean_history(one) == one["history"]
