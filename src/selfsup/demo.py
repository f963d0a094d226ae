"""`selfsup demo`: the main job on embedded data (six Jane Austen novels shipped in the package, and
scikit-learn's handwritten digits).

Text: pretrains a tiny BERT with masked-language modelling on the first 80% of each novel, then shows what it
learned: cloze predictions for words masked in held-out passages, its top-1/top-5 accuracy against a
word-frequency baseline, and the loss curve; then fine-tunes it on 16 labeled sentences per class of a real
task (is this sentence a character's speech or the narrator's? evaluated on the novels' last 20%) against the
same model from scratch, with both curves in one plot. Images: SimCLR on the digits, a linear probe of its
features against a random-init encoder, and a PCA picture of both. Speech: autoregressive predictive coding
on synthesized command words, a SUPERB-style probe for keyword spotting on unseen voices against log-mel
features and the untrained upstream, and the learned layer weights. Tables: a VAE anomaly detector on the
breast-cancer table against IsolationForest, with the score histograms.
"""
from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

from selfsup.errors import SelfsupError

ASSETS = Path(__file__).parent / "assets"
MARKER = ".selfsup-demo"
DEMO_RECIPE = "mlm_rope"
DEMO_STEPS = 400  # of the recipe's 800, so the whole demo fits 5 minutes on 2 cores (docs/benchmarks.md, the demo's wall time)


def embedded_corpus() -> list[str]:
    files = sorted(str(p) for p in ASSETS.glob("austen-*.txt.xz"))
    if not files:
        raise SelfsupError(f"{ASSETS}: the embedded corpus is missing (a broken install?)")
    return files


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists() and not force:
            raise SelfsupError(f"{out}: exists and is not a demo run; choose another --out (or --force)")
        shutil.rmtree(out)


def cloze_examples(model_dir: Path, blocks, n_show: int = 8, n_score: int = 400, per_block: int = 4,
                   seed: int = 0):
    """Mask whole words (single word pieces) in held-out blocks, one per copy of the passage, and score the
    model's guesses; return the first few as rows to show and the top-1/top-5 accuracy over all of them."""
    import numpy as np
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    rng = np.random.default_rng(seed)
    rows, hits1, hits5, total = [], 0, 0, 0
    picks: list[tuple[int, int]] = []
    for i in rng.permutation(len(blocks))[: n_score]:
        tokens, word_start = blocks[int(i)]
        ids = np.concatenate([[tok.cls_token_id], tokens, [tok.sep_token_id]]).astype(np.int64)
        ws = np.concatenate([[1], word_start, [1, 1]])
        pieces = tok.convert_ids_to_tokens(ids.tolist())
        cands = [j for j in range(8, len(ids) - 8) if ws[j] and ws[j + 1] and pieces[j].isalpha()]
        for j in rng.choice(cands, size=min(per_block, len(cands)), replace=False) if cands else []:
            picks.append((int(i), int(j)))  # one masked word per copy of the passage
    freq = Counter(int(t) for b in range(min(len(blocks), 2000)) for t in blocks[b][0])
    baseline_hits = 0
    for start in range(0, len(picks), 32):
        chunk = picks[start:start + 32]
        batch = []
        for i, j in chunk:
            tokens, _ = blocks[i]
            ids = np.concatenate([[tok.cls_token_id], tokens, [tok.sep_token_id]]).astype(np.int64)
            batch.append(ids)
        inputs = torch.tensor(np.stack(batch))
        answers = [int(inputs[k, j]) for k, (_, j) in enumerate(chunk)]
        for k, (_, j) in enumerate(chunk):
            inputs[k, j] = tok.mask_token_id
        with torch.no_grad():
            logits = model(input_ids=inputs).logits
        for k, (i, j) in enumerate(chunk):
            probs = logits[k, j].softmax(-1)
            top = probs.topk(5)
            top_ids = top.indices.tolist()
            total += 1
            hits1 += top_ids[0] == answers[k]
            hits5 += answers[k] in top_ids
            # the frequency baseline: always guess the most frequent word
            baseline_hits += answers[k] == _most_frequent_word(freq, tok)
            if len(rows) < n_show:  # a random sample of the scored words, not a hand-picked one
                words = tok.convert_ids_to_tokens(inputs[k].tolist())
                left = tok.convert_tokens_to_string(words[max(1, j - 14):j])
                right = tok.convert_tokens_to_string(words[j + 1:j + 10])
                rows.append({"context": f"…{left} ____ {right}…", "answer": tok.convert_ids_to_tokens(answers[k]),
                             "top5": [(tok.convert_ids_to_tokens(t), float(p)) for t, p in
                                      zip(top_ids, top.values.tolist())]})
    return rows, {"cloze_top1": hits1 / max(total, 1), "cloze_top5": hits5 / max(total, 1),
                  "frequency_baseline_top1": baseline_hits / max(total, 1), "cloze_words": total}


_MOST_FREQUENT: dict[int, int] = {}


def _most_frequent_word(freq: Counter, tok) -> int:
    key = id(freq)
    if key not in _MOST_FREQUENT:
        _MOST_FREQUENT.clear()
        for t, _ in freq.most_common():
            piece = tok.convert_ids_to_tokens(t)
            if piece.isalpha():
                _MOST_FREQUENT[key] = t
                break
    return _MOST_FREQUENT.get(key, -1)


def downstream_section(out: Path, pretrained: Path, task: dict, console, shots: int = 16, seeds: int = 3,
                       epochs: int = 30) -> dict:
    """What the pretrained features already know about a real labeled task with few labels — is this sentence
    spoken by a character or the narrator's? — a linear classifier on the frozen model (`--method linear`)
    against the same on the untrained model's features; `seeds` draws of the labeled sentences, mean ± std.
    (Full fine-tuning from scratch catches up with the pretrained model after ~40 steps at the demo's budget:
    docs/benchmarks.md, "The demo's wall time".)"""
    from selfsup.adapt.core.run import finetune
    from selfsup.report.figures import plot_history

    console.rule(f"[bold]text: a linear classifier on frozen features from {2 * shots} labeled sentences — "
                 "speech or narration?")
    runs = {}
    for init in ("pretrained", "scratch"):
        runs[init] = finetune(pretrained, "sequence-classification", task["train"], task["eval"],
                              out / "downstream" / init, method="linear", init=init, epochs=epochs, shots=shots,
                              seeds=seeds, overrides=["lr=1e-2", "max_length=64", "batch_size=16",
                                                      f"eval_every={max(1, epochs // 6)}", "keep_best=false"])
    names = {"pretrained": "MLM-pretrained", "scratch": "untrained"}
    plot = plot_history({names[init]: mean_history(m) for init, m in runs.items()}, out / "downstream" / "curves.png",
                        "accuracy", title=f"linear probe, {shots} labels per class")
    acc = {init: m["eval"]["accuracy"] for init, m in runs.items()}
    std = {init: m.get("eval_std", {}).get("accuracy", 0.0) for init, m in runs.items()}
    console.print(f"accuracy on {runs['pretrained']['eval_examples']} held-out sentences (quotation marks removed), "
                  f"mean ± std of {seeds} draws of the labels: MLM-pretrained features "
                  f"{acc['pretrained']:.1%} ± {std['pretrained']:.1%} · untrained features {acc['scratch']:.1%} ± "
                  f"{std['scratch']:.1%} (chance 50%) · curves: {plot}")
    return {"dialogue_accuracy_pretrained": acc["pretrained"], "dialogue_accuracy_scratch": acc["scratch"],
            "dialogue_accuracy_pretrained_std": std["pretrained"], "dialogue_accuracy_scratch_std": std["scratch"],
            "dialogue_labels_per_class": shots, "dialogue_label_draws": seeds}


def mean_history(metrics: dict) -> list[dict]:
    """A fine-tuning run's history rows, averaged over its seeds when it has several (`runs`)."""
    histories = [r["history"] for r in metrics.get("runs", [])] or [metrics["history"]]
    rows = []
    for same_epoch in zip(*histories):
        row = dict(same_epoch[0])
        for key in row:
            values = [r.get(key) for r in same_epoch]
            if all(isinstance(v, (int, float)) for v in values):
                row[key] = sum(values) / len(values)
        rows.append(row)
    return rows


def image_section(out: Path, console, steps: int = 200) -> dict:
    """SimCLR on 1,200 digits, then a linear probe on 597 held-out ones against the same encoder untrained;
    a PCA picture of the held-out features of both (out/images/features_pca.png)."""
    from selfsup.data.images import digits_split
    from selfsup.engine.pretrain import pretrain
    from selfsup.adapt.core.encoders import load_image_encoder as load_encoder
    from selfsup.evaluation.cli import evaluate

    console.rule("[bold]images: SimCLR on handwritten digits")
    train, held = digits_split(out / "images" / "data")
    common = ["data.image_size=16", "train.batch_size=128", "train.eval_every=100000", "train.log_every=10",
              "train.checkpoint_every=100000", "train.warmup_steps=10"]
    pretrain("simclr", [str(train)], out / "images" / "simclr", max_steps=steps, overrides=common, progress=True)
    pretrain("simclr", [str(train)], out / "images" / "random-init", max_steps=1, progress=False,
             overrides=common + ["train.lr=1e-12"])
    scores = {name: evaluate(out / "images" / name, "linear", [str(train)], [str(held)],
                             out / "images" / name / "eval-linear")["eval"]["accuracy"]
              for name in ("simclr", "random-init")}
    _plot_features(out / "images", held, load_encoder)
    console.print(f"linear probe on 597 held-out digits: SimCLR features {scores['simclr']:.1%} · the same "
                  f"encoder untrained {scores['random-init']:.1%} · picture: {out / 'images' / 'features_pca.png'}")
    return {"image_linear_probe_simclr": scores["simclr"], "image_linear_probe_random_init": scores["random-init"]}


# APC: on the shipped words it beats its untrained upstream most clearly at this budget (150 steps: APC 0.933 vs
# 0.850 untrained; temporal_gap 0.800 vs 0.783, TERA 0.767 vs 0.783, CPC 0.850 vs 0.850, Mockingjay 0.817 vs 0.783)
SPEECH_RECIPE = "apc"
SPEECH_HELD_OUT_VOICES = ("en-us+f5", "en-gb-scotland+m1")  # one voice of each accent, one of each sex


def speech_section(out: Path, console, steps: int = 200) -> dict:
    """APC (predict the log-mel frame 3 ahead) on the shipped synthesized command words (6 of the 8 voices),
    then a SUPERB-style probe (frozen upstream, learned softmax weights over its layers, mean-pool + linear) for
    keyword spotting on the 2 unseen voices, against pooled log-mel + logistic regression and the same upstream untrained; the learned
    layer weights as a picture (out/speech/probe/layer_weights.png)."""
    from selfsup.data.audio import split_manifest
    from selfsup.data.speech_synth import embedded_speech
    from selfsup.engine.pretrain import pretrain
    from selfsup.evaluation.superb import logmel_baseline, random_like, superb_probe

    console.rule(f"[bold]speech: {SPEECH_RECIPE} on synthesized command words (eSpeak NG voices)")
    folder = out / "speech"
    folder.mkdir(parents=True, exist_ok=True)
    train, held = split_manifest(embedded_speech("speech-words") / "manifest.csv", folder / "train.csv",
                                 folder / "eval.csv", "speaker", SPEECH_HELD_OUT_VOICES)
    pretrain(SPEECH_RECIPE, [str(train)], folder / SPEECH_RECIPE, max_steps=steps, progress=True,
             overrides=["train.eval_every=100000", "train.checkpoint_every=100000", "train.log_every=10"])
    probe = superb_probe(folder / SPEECH_RECIPE, [str(train)], [str(held)], "word", out=folder / "probe")
    untrained = superb_probe(random_like(folder / SPEECH_RECIPE), [str(train)], [str(held)], "word")
    baseline = logmel_baseline([str(train)], [str(held)], "word")
    acc = probe["eval"]["accuracy"]
    console.print(f"keyword spotting (10 words) on {probe['n_eval']} clips of 2 unseen voices: {SPEECH_RECIPE} "
                  f"upstream + SUPERB probe {acc:.1%} · same upstream untrained {untrained['eval']['accuracy']:.1%}"
                  f" · pooled log-mel + logistic regression {baseline:.1%} · layer weights: "
                  f"{folder / 'probe' / 'layer_weights.png'}")
    return {"speech_kws_pretrained": acc, "speech_kws_random_init": untrained["eval"]["accuracy"],
            "speech_kws_logmel": baseline, "speech_layer_weights": probe["layer_weights"]}


def anomaly_section(out: Path, console, steps: int = 400) -> dict:
    """A VAE trained on the benign rows of scikit-learn's breast-cancer table (60%, seed 0) scores the other
    benign rows and every malignant one (the anomalies) by reconstruction; AUROC against IsolationForest on the
    same standardized rows, and both score histograms (out/anomaly/scores.png)."""
    from sklearn.metrics import roc_auc_score

    from selfsup.adapt.tools.anomaly import AutoEncoderDetector, baseline_scores, one_class_split
    from selfsup.report.figures import plot_score_histogram

    console.rule("[bold]tables: anomaly detection with a VAE (breast-cancer table, malignant = anomaly)")
    folder = out / "anomaly"
    train_x, test_x, y = one_class_split("breast_cancer", 0)
    detector = AutoEncoderDetector(method="vae", max_steps=steps, work_dir=folder / "vae",
                                   overrides=["train.eval_every=100000", "train.checkpoint_every=100000"])
    scores = detector.fit(train_x).decision_function(test_x)
    forest = baseline_scores("isolation_forest", train_x, test_x, 0)
    auroc = {"vae": float(roc_auc_score(y, scores)), "isolation_forest": float(roc_auc_score(y, forest))}
    plot_score_histogram(scores[y == 0], scores[y == 1], folder / "scores.png", detector.threshold_,
                         f"VAE reconstruction scores: AUROC {auroc['vae']:.3f}")
    console.print(f"AUROC on {int((y == 0).sum())} held-out benign and {int(y.sum())} malignant rows: VAE "
                  f"{auroc['vae']:.3f} · IsolationForest {auroc['isolation_forest']:.3f} · histogram: "
                  f"{folder / 'scores.png'}")
    return {"anomaly_auroc_vae": auroc["vae"], "anomaly_auroc_isolation_forest": auroc["isolation_forest"]}


def _plot_features(folder: Path, held: Path, load_encoder) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.decomposition import PCA

    from selfsup.data.images import ImageDataConfig, load_images
    from selfsup.evaluation.probes import encoder_features
    from selfsup.fileio import atomic_write_bytes

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), dpi=110)
    for ax, name in zip(axes, ("simclr", "random-init")):
        encoder, prep = load_encoder(folder / name)
        data = load_images([str(held)], ImageDataConfig(image_size=int(prep["image_size"]), channels=1,
                                                        holdout_fraction=0.0))
        xy = PCA(2).fit_transform(encoder_features(encoder, data.images, prep["mean"], prep["std"]))
        points = ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(data.labels), cmap="tab10", s=7)
        ax.set_title(f"{name} features (PCA)")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(points, ax=axes, label="digit", ticks=range(10))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(folder / "features_pca.png", buf.getvalue())


def run_demo(out: str = "runs/demo", steps: int | None = None, force: bool = False) -> dict:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    out_path = Path(out)
    _prepare_out(out_path, force)
    embedded_corpus()  # a broken install is an error before anything is written
    from selfsup.data.austen import austen_speech_task

    out_path.mkdir(parents=True, exist_ok=True)
    (out_path / MARKER).write_text("made by `selfsup demo`; a later demo replaces this folder\n")
    # pretraining reads the first 80% of each novel; the labeled task's held-out sentences come from the rest
    task = austen_speech_task(out_path / "downstream" / "data", train_per_class=200, eval_per_class=300)
    sources = [task["unlabeled"]]
    started = time.perf_counter()
    console.rule("[bold]selfsup demo: a tiny BERT learns Jane Austen by filling in blanks")
    console.print(f"corpus: the first 80% of each of the 6 novels shipped with selfsup · recipe: {DEMO_RECIPE} "
                  "(BERT with rotary positions, 15% of tokens masked: 80% [MASK] / 10% random / 10% kept)")
    from selfsup.engine.pretrain import pretrain
    from selfsup.recipes import load_recipe
    from selfsup.registry import get_objective

    # BERT with rotary positions: with learned absolute positions a tiny BERT stays on the word-frequency
    # plateau for this whole budget (docs/methods.md, "Position embeddings on a tiny budget")
    overrides = ["train.log_every=10", f"train.max_steps={DEMO_STEPS if steps is None else steps}"]
    pretrain_dir = out_path / "pretrain"
    metrics = pretrain(DEMO_RECIPE, sources, pretrain_dir, overrides=overrides, progress=True)
    recipe = load_recipe(str(pretrain_dir / "config.yaml"))
    prepared = get_objective(recipe.name).prepare(recipe, sources)  # cached: same tokenizer, same held-out blocks
    rows, cloze = cloze_examples(pretrain_dir / "model", prepared.heldout)

    table = Table(title="Cloze on held-out passages (never trained on)", show_lines=True)
    table.add_column("passage", max_width=70)
    table.add_column("answer")
    table.add_column("model's top 5 (probability)")
    for row in rows:
        top = ", ".join(f"[bold green]{w}[/bold green] {p:.2f}" if w == row["answer"] else f"{w} {p:.2f}"
                        for w, p in row["top5"])
        table.add_row(row["context"], row["answer"], top)
    console.print(table)
    summary = {**{k: metrics.get(k) for k in ("steps", "train_loss", "heldout_loss", "heldout_perplexity",
                                                "throughput_per_s")}, **cloze}
    console.print(f"held-out masked-token perplexity {metrics.get('heldout_perplexity', float('nan')):.1f} · "
                  f"cloze top-1 {cloze['cloze_top1']:.1%}, top-5 {cloze['cloze_top5']:.1%} on "
                  f"{cloze['cloze_words']} held-out words (always guessing the most frequent word: "
                  f"{cloze['frequency_baseline_top1']:.1%})")
    summary.update(downstream_section(out_path, pretrain_dir, task, console, seeds=3 if steps is None else 1,
                                      epochs=30 if steps is None else 1))
    summary.update(image_section(out_path, console, steps=200 if steps is None else steps))
    summary.update(speech_section(out_path, console, steps=200 if steps is None else steps))
    summary.update(anomaly_section(out_path, console, steps=400 if steps is None else steps))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    from selfsup.fileio import atomic_write_json

    atomic_write_json(out_path / "demo.json", summary)
    from selfsup.report.cli import write_report

    write_report([out_path], out_path / "report.html", title="selfsup demo", replace=True)
    curve = f"{pretrain_dir}/loss_curve.png, " if (pretrain_dir / "loss_curve.png").is_file() else ""
    console.print(f"wrote {pretrain_dir}/model (Hugging Face format), {curve}"
                  f"{out_path}/downstream/curves.png, {out_path}/images/features_pca.png, "
                  f"{out_path}/speech/probe/layer_weights.png, {out_path}/anomaly/scores.png, {out_path}/demo.json, "
                  f"{out_path}/report.html (all of it on one page) · {summary['seconds']:.0f} s")
    return summary
