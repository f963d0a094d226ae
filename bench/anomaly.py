"""Anomaly-detection benchmark: the table auto-encoders (ae, dae, vae, vqvae, binary, onehot;
`AutoEncoderDetector`, trained through `selfsup pretrain`) against scikit-learn's IsolationForest,
LocalOutlierFactor(novelty=True) and OneClassSVM, on the same splits, 3 seeds:

* breast_cancer: scikit-learn's Wisconsin table (569 x 30). sklearn's target 0 = malignant; here malignant is
  the anomaly (label 1). Train on 60% of the benign rows only; test on the other 40% benign + every malignant.
* digits-K: scikit-learn's 8x8 digits (64 pixel features), digit K normal: train on 60% of K's images, test on
  the other 40% + every other digit (anomalies).

The split depends on the seed (the same split for every method). Baselines see the same features,
standardized on the training rows (the auto-encoders standardize inside, fitted on the training rows).
Then VQ-VAE with vs without dead-code replacement: the fraction of codebook entries used by the training rows.

    SELFSUP_CACHE=/tmp/selfsup-cache python bench/anomaly.py --steps 400 --seeds 3

Writes bench/results/anomaly/results.json and prints the markdown tables of docs/benchmarks.md.

`--modality images`: the same digits-K splits read as 8x8 images (data/ae_inputs.py's image reader, the
split's 0..16 pixels written as 0..255 uint8 `.npz`), the AE with `model.type: conv` (`ae-conv`) and with the
MLP on the flattened image (`ae-mlp`; any `METHOD-conv|mlp`) against the same baselines on the same pixels.
`--modality audio`: windows of 16 log-mel frames (40 bands) of the shipped speech words
(`selfsup:speech-words`, 10 words x 8 voices x 3 speeds); one word is the anomaly: train on the windows of 60%
of the other nine words' clips (drawn by the seed), test on the other 40% and every clip of the held-out word;
AUROC per window and per clip (mean window score), against PCA reconstruction error at the bottleneck width and
the baselines on the flattened standardized windows.

    SELFSUP_CACHE=/tmp/selfsup-cache python bench/anomaly.py --modality images --steps 400 --seeds 3
    SELFSUP_CACHE=/tmp/selfsup-cache python bench/anomaly.py --modality audio --steps 400 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from selfsup.adapt.tools.anomaly import baseline_scores, one_class_split

AE_METHODS = ["ae", "dae", "vae", "vqvae", "binary", "onehot"]
BASELINES = ["isolation_forest", "lof", "ocsvm"]
COMMON = ["train.eval_every=100000", "train.checkpoint_every=100000", "train.threads=1", "train.log_every=50"]


def code_usage(det, x: np.ndarray) -> float:
    """Fraction of the VQ-VAE's codebook used by the rows x (diagnostics.codebook_health)."""
    import torch

    from selfsup.diagnostics import codebook_health

    model = det.model_
    feats = model.preprocessor.transform(pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]),
                                         [("X", 0, len(x))])
    with torch.no_grad():
        codes = model.codes(torch.from_numpy(feats))
    return float(codebook_health(codes.reshape(-1), model.options.codebook_size)["code_usage"])


def ms(v: list[float]) -> str:
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}"


def fit_and_load(train: list[str], method: str, steps: int, seed: int, overrides: list[str], root: Path):
    """`selfsup anomaly fit` (METHOD-conv or METHOD-mlp) into a fresh folder; the reloaded model."""
    from selfsup.adapt.tools.anomaly import fit_anomaly
    from selfsup.objectives.autoencoder_base import load_table_model

    name, backbone = method.rsplit("-", 1)
    run = root / f"{method}-{seed}"
    fit_anomaly(train, run, name, max_steps=steps, seed=seed, overrides=overrides + [f"model.type={backbone}"])
    return load_table_model(run)


def write_markdown(results: dict, key: str, names: list[str], rows: list[str]) -> None:
    print(f"\n| {key} | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    for r in rows:
        row = results[key][r]
        best = max(names, key=lambda n: np.mean(row[n]))
        print(f"| {r} | {' | '.join(f'**{ms(row[n])}**' if n == best else ms(row[n]) for n in names)} |")


def run_images(args, common: list[str]) -> dict:
    """One-class digits as 8x8 images: conv / MLP auto-encoders against the baselines on the same pixels."""
    import tempfile

    from sklearn.metrics import roc_auc_score

    from selfsup.adapt.tools.anomaly import batched_scores
    from selfsup.data.ae_inputs import load_ae_data

    results: dict = {"modality": "images", "steps": args.steps, "seeds": args.seeds, "auroc": {}}
    methods = args.methods.split(",") if args.methods != ",".join(AE_METHODS) else ["ae-conv", "ae-mlp"]
    datasets = [d for d in args.datasets.split(",") if d.startswith("digits-")]
    with tempfile.TemporaryDirectory(prefix="anomaly-images-") as tmp:
        root = Path(tmp)
        for ds in datasets:
            for seed in range(args.seeds):
                train, test, labels = one_class_split(ds, seed)
                paths = []
                for name, x in (("train", train), ("test", test)):
                    paths.append(root / f"{ds}-{seed}-{name}.npz")
                    np.savez(paths[-1], x=np.rint(x.reshape(-1, 8, 8) * 255 / 16).astype(np.uint8))
                for m in methods + BASELINES:
                    t0 = time.time()
                    if m in BASELINES:
                        scores = baseline_scores(m, train, test, seed)
                    else:
                        model = fit_and_load([str(paths[0])], m, args.steps, seed,
                                             common + ["data.image_size=8"] + args.set, root / ds)
                        rows = load_ae_data([str(paths[1])], model.recipe.data, model.preprocessor).rows
                        scores = batched_scores(model, rows)
                    auc = float(roc_auc_score(labels, scores))
                    results["auroc"].setdefault(ds, {}).setdefault(m, []).append(auc)
                    print(f"{ds} seed {seed} {m}: AUROC {auc:.4f} ({time.time() - t0:.1f} s)", flush=True)
    write_markdown(results, "auroc", methods + BASELINES, datasets)
    return results


def clip_auroc(rows, scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of each clip's mean window score (a clip's windows share its label)."""
    from sklearn.metrics import roc_auc_score

    clips = rows.windows[:, 0]
    mean = np.bincount(clips, weights=scores) / np.bincount(clips)
    label = np.bincount(clips, weights=labels) / np.bincount(clips)
    return float(roc_auc_score(label.round().astype(int), mean))


def run_audio(args, common: list[str]) -> dict:
    """One held-out word of the shipped speech words as the anomaly, on windows of log-mel frames."""
    import tempfile

    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score

    from selfsup.adapt.tools.anomaly import batched_scores
    from selfsup.data.ae_inputs import load_ae_data
    from selfsup.data.speech_synth import embedded_speech

    width = 16
    overrides = common + ["data.modality=audio_frames", "data.n_mels=40", "data.window_frames=16",
                          "model.hidden_sizes=[128]", f"model.bottleneck={width}"] + args.set
    folder = embedded_speech("speech-words")
    manifest = pd.read_csv(folder / "manifest.csv")
    manifest["path"] = [str(folder / p) for p in manifest["path"]]
    methods = args.methods.split(",") if args.methods != ",".join(AE_METHODS) else ["ae-conv", "ae-mlp"]
    names = methods + [f"pca-{width}"] + BASELINES
    results: dict = {"modality": "audio", "steps": args.steps, "seeds": args.seeds, "overrides": overrides,
                     "window_auroc": {}, "clip_auroc": {}}
    with tempfile.TemporaryDirectory(prefix="anomaly-audio-") as tmp:
        root = Path(tmp)
        for word in args.words.split(","):
            for seed in range(args.seeds):
                rng = np.random.default_rng([seed, 29])
                normal = rng.permutation(np.flatnonzero(manifest["word"] != word))
                n_train = int(0.6 * len(normal))
                test_rows = np.concatenate([normal[n_train:], np.flatnonzero(manifest["word"] == word)])
                paths = [root / f"{word}-{seed}-train.csv", root / f"{word}-{seed}-test.csv"]
                manifest.iloc[normal[:n_train]].to_csv(paths[0], index=False)
                manifest.iloc[test_rows].to_csv(paths[1], index=False)
                flat: dict = {}
                for m in names:
                    t0 = time.time()
                    if m in methods:
                        model = fit_and_load([str(paths[0])], m, args.steps, seed, overrides, root / word)
                        test = load_ae_data([str(paths[1])], model.recipe.data, model.preprocessor, "word")
                        labels = np.array([v == word for v in test.label_values()], dtype=int)
                        scores = batched_scores(model, test.rows)
                        if not flat:  # the baselines see the same standardized windows, flattened
                            train = load_ae_data([str(paths[0])], model.recipe.data, model.preprocessor).rows
                            flat = {"train": np.stack([r[0].ravel() for r in train]), "rows": test.rows,
                                    "test": np.stack([r[0].ravel() for r in test.rows]), "labels": labels}
                    elif m.startswith("pca-"):
                        pca = PCA(n_components=width, random_state=seed).fit(flat["train"])
                        back = pca.inverse_transform(pca.transform(flat["test"]))
                        scores = ((flat["test"] - back) ** 2).mean(1)
                    else:
                        scores = baseline_scores(m, flat["train"], flat["test"], seed)
                    labels = flat["labels"]
                    auc, clip = float(roc_auc_score(labels, scores)), clip_auroc(flat["rows"], scores, labels)
                    results["window_auroc"].setdefault(word, {}).setdefault(m, []).append(auc)
                    results["clip_auroc"].setdefault(word, {}).setdefault(m, []).append(clip)
                    print(f"{word} seed {seed} {m}: AUROC windows {auc:.4f}, clips {clip:.4f} "
                          f"({time.time() - t0:.1f} s)", flush=True)
    words = args.words.split(",")
    write_markdown(results, "window_auroc", names, words)
    write_markdown(results, "clip_auroc", names, words)
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--datasets", default="breast_cancer,digits-0,digits-1,digits-8")
    p.add_argument("--methods", default=",".join(AE_METHODS))
    p.add_argument("--set", action="append", default=[], help="extra recipe overrides for every AE method")
    p.add_argument("--codebook-size", type=int, default=128, help="VQ-VAE codebook for the dead-code comparison")
    p.add_argument("--out", default="bench/results/anomaly")
    p.add_argument("--modality", choices=["tables", "images", "audio"], default="tables")
    p.add_argument("--words", default="yes,left,stop", help="--modality audio: the held-out (anomaly) words")
    args = p.parse_args()
    if args.modality != "tables":
        import torch

        torch.set_num_threads(1)
        started = time.time()
        results = (run_images if args.modality == "images" else run_audio)(args, COMMON)
        results["seconds"] = round(time.time() - started, 1)
        out = Path(args.out if args.out != "bench/results/anomaly" else f"{args.out}_{args.modality}")
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"\n{results['seconds']:.0f} s in all")
        return

    import torch
    from sklearn.metrics import roc_auc_score

    from selfsup.adapt.tools.anomaly import AutoEncoderDetector

    torch.set_num_threads(1)
    started = time.time()
    results: dict = {"steps": args.steps, "seeds": args.seeds, "overrides": COMMON + args.set, "auroc": {},
                     "code_usage": {}}
    datasets, methods = args.datasets.split(","), args.methods.split(",")
    for ds in datasets:
        for seed in range(args.seeds):
            train, test, labels = one_class_split(ds, seed)
            for m in methods + BASELINES:
                t0 = time.time()
                if m in BASELINES:
                    scores = baseline_scores(m, train, test, seed)
                else:
                    det = AutoEncoderDetector(method=m, max_steps=args.steps, seed=seed,
                                              overrides=COMMON + args.set).fit(train)
                    scores = det.decision_function(test)
                auc = float(roc_auc_score(labels, scores))
                results["auroc"].setdefault(ds, {}).setdefault(m, []).append(auc)
                print(f"{ds} seed {seed} {m}: AUROC {auc:.4f} ({time.time() - t0:.1f} s)", flush=True)
    # VQ-VAE: dead-code replacement on / off, with and without k-means initialization, on the breast_cancer split
    for label, kmeans, threshold in (("k-means init, replacement", True, 1.0),
                                     ("k-means init, no replacement", True, 0.0),
                                     ("random init, replacement", False, 1.0),
                                     ("random init, no replacement", False, 0.0)):
        for seed in range(args.seeds):
            train, test, labels = one_class_split("breast_cancer", seed)
            det = AutoEncoderDetector(method="vqvae", max_steps=args.steps, seed=seed, overrides=COMMON + [
                f"objective.codebook_size={args.codebook_size}", f"objective.dead_code_threshold={threshold}",
                f"objective.kmeans_init={str(kmeans).lower()}"]).fit(train)
            usage = code_usage(det, train)
            auc = float(roc_auc_score(labels, det.decision_function(test)))
            results["code_usage"].setdefault(label, []).append({"usage": usage, "auroc": auc})
            print(f"vqvae {label} seed {seed}: {usage:.1%} of {args.codebook_size} codes used, AUROC {auc:.4f}",
                  flush=True)
    results["seconds"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    names = methods + BASELINES
    print(f"\n| data set | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    for ds in datasets:
        row = results["auroc"][ds]
        best = max(names, key=lambda n: np.mean(row[n]))
        cells = [f"**{ms(row[n])}**" if n == best else ms(row[n]) for n in names]
        print(f"| {ds} | {' | '.join(cells)} |")
    print(f"\n| VQ-VAE ({args.codebook_size} codes) | codes in use (training rows) | AUROC |\n|---|---|---|")
    for label, rows in results["code_usage"].items():
        print(f"| {label} | {ms([r['usage'] for r in rows])} | {ms([r['auroc'] for r in rows])} |")
    print(f"\n{results['seconds']:.0f} s in all")


if __name__ == "__main__":
    main()
