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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--datasets", default="breast_cancer,digits-0,digits-1,digits-8")
    p.add_argument("--methods", default=",".join(AE_METHODS))
    p.add_argument("--set", action="append", default=[], help="extra recipe overrides for every AE method")
    p.add_argument("--codebook-size", type=int, default=128, help="VQ-VAE codebook for the dead-code comparison")
    p.add_argument("--out", default="bench/results/anomaly")
    args = p.parse_args()

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

    def ms(v: list[float]) -> str:
        return f"{np.mean(v):.3f} ± {np.std(v):.3f}"

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
