"""`selfsup report`: one self-contained page holds every picture (byte for byte), metric and small table of the
runs it is given, compares runs that share a task in a sortable table, renders in headless Chromium without
console errors or broken images, and refuses bad input in one line without writing anything."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_runs(root: Path) -> Path:
    """A pretraining run, two fine-tuning runs of one task (one of them with 2 seeds) and an anomaly detector, as
    selfsup writes them (the pictures drawn by selfsup's own figure functions)."""
    from selfsup.report.figures import plot_score_histogram, plot_training_curves

    bert = root / "bert"
    (bert / "model").mkdir(parents=True)
    (bert / "config.yaml").write_text("objective:\n  name: mlm\ntrain:\n  max_steps: 30\n")
    (bert / "metrics.json").write_text(json.dumps({"objective": "mlm", "steps": 30, "train_loss": 6.8664,
                                                   "heldout_perplexity": 1050.06}))
    plot_training_curves([{"step": s, "loss": 7 - s / 10} for s in range(1, 31)], bert / "loss_curve.png")
    (bert / "model" / "ignored.png").write_bytes(b"not shown: weights folders are skipped")
    for name, method, acc in (("lora", "lora", 0.8125), ("full", "full", 0.9375)):
        run = root / name
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"task": "sequence-classification", "method": method,
                                                      "init": "pretrained", "eval": {"accuracy": acc},
                                                      "trainable_percent": 4.1 if method == "lora" else 100.0,
                                                      "history": [{"epoch": 1, "loss": 0.5}]}))
    (root / "full" / "sweep.csv").write_text("threshold,accuracy\n0.1,0.5\n0.5,0.75\n")
    seed = root / "full" / "seed-0"
    seed.mkdir()
    (seed / "metrics.json").write_text(json.dumps({"task": "sequence-classification", "method": "full",
                                                   "init": "pretrained", "eval": {"accuracy": 0.9}}))
    anomaly = root / "vae-bc"
    anomaly.mkdir()
    (anomaly / "anomaly.json").write_text(json.dumps({"method": "vae", "threshold": 1.39}))
    plot_score_histogram([0.1, 0.2, 0.3, 0.2], [0.9, 1.2], anomaly / "scores.png", 0.5, title="vae")
    return root


def pngs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png") if "model" not in p.parts)


class Tags(HTMLParser):
    """Counts opening and closing tags, and collects the images' data and the table rows' text."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: dict[str, int] = {}
        self.closed: dict[str, int] = {}
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.opened[tag] = self.opened.get(tag, 0) + 1
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        self.closed[tag] = self.closed.get(tag, 0) + 1


def test_report_holds_every_picture_metric_and_table(tmp_path):
    runs = make_runs(tmp_path / "runs")
    out = tmp_path / "report.html"
    res = run_cli("report", str(runs), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "5 runs, 2 pictures, 1 tables, 1 comparisons" in res.stdout
    page = out.read_text()
    tags = Tags()
    tags.feed(page)
    for tag in ("section", "table", "div", "figure", "tr"):
        assert tags.opened.get(tag, 0) == tags.closed.get(tag, 0), tag
    # every picture inlined byte for byte; the one inside model/ is not a run's picture
    inlined = sorted(base64.b64decode(src.split(",", 1)[1]) for src in tags.images)
    assert inlined == sorted(p.read_bytes() for p in pngs(runs)) and len(inlined) == 2
    assert "http://" not in page and "https://" not in page  # nothing fetched from anywhere
    # metrics, the sweep table, and both fine-tuning runs (and the seed) side by side in one sortable table
    for text in ("1050", "6.866", "0.8125", "0.9375", "threshold", "vae", "recipe mlm · 30 steps"):
        assert text in page, text
    compare = re.search(r"Compared: fine-tuning: sequence-classification.*?</table>", page, re.S).group(0)
    assert compare.count("<tr>") == 4 and "runs/lora" in compare and "runs/full/seed-0" in compare
    assert "trainable_percent" in compare and 'class="sortable"' in compare


def test_report_refuses_bad_input_in_one_line(tmp_path):
    runs = make_runs(tmp_path / "runs")
    empty = tmp_path / "empty"
    (empty / "model").mkdir(parents=True)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "metrics.json").write_text("{not json")
    out = tmp_path / "r.html"
    cases = [((str(empty),), "holds no run"), ((str(tmp_path / "nope"),), "no such folder"),
             ((str(garbage),), "garbage/metrics.json: not readable JSON")]
    for runs_args, message in cases:
        res = run_cli("report", *runs_args, "--out", str(out))
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not out.exists()
    res = run_cli("report", str(runs), "--out", str(tmp_path / "r.txt"))
    assert res.returncode == 2 and ".html" in res.stderr
    out.write_text("mine")
    res = run_cli("report", str(runs), "--out", str(out))
    assert res.returncode == 2 and "already exists" in res.stderr and out.read_text() == "mine"
    assert run_cli("report", str(runs), "--out", str(out), "--force").returncode == 0 and "<table" in out.read_text()


def rendered_body(page: Path, tmp_path: Path) -> dict[str, str]:
    """The <body> attributes after headless Chromium loaded the page and ran its script."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=3000", "--dump-dom"]
    dom = subprocess.run([CHROMIUM, *flags, page.resolve().as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    from selfsup.report.page import SCRIPT

    runs = make_runs(tmp_path / "runs")
    out = tmp_path / "report.html"
    assert run_cli("report", str(runs), "--out", str(out)).returncode == 0
    assert rendered_body(out, tmp_path) == {"errors": "0", "images": "2", "broken-images": "0", "ready": "1"}
    # the same check sees a broken picture and a script error, so the assertion above can fail
    bad = tmp_path / "bad.html"
    bad.write_text(f'<html><body><img src="data:image/png;base64,AAAA"><script>{SCRIPT}</script>'
                   "<script>undefinedFunction()</script></body></html>")
    seen = rendered_body(bad, tmp_path)
    assert seen["broken-images"] == "1" and seen["errors"] == "1"


def test_no_loss_curve_for_a_run_of_one_logged_step(tmp_path):
    from selfsup.report.figures import plot_training_curves

    assert plot_training_curves([{"step": 1, "loss": 7.0}], tmp_path / "one.png") is None
    assert not (tmp_path / "one.png").exists()
    assert plot_training_curves([{"step": 1, "loss": 7.0}, {"step": 2, "loss": 6.5}], tmp_path / "two.png").is_file()
