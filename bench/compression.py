"""Rate–distortion of the table auto-encoders against PCA: held-out reconstruction error (mean squared error per
standardized feature) at bottleneck widths k, for the auto-encoder (`ae`), the VAE's reconstruction at z = mu
(`vae`, β = 1) and PCA with k components (scikit-learn, the best *linear* code of width k); and the VQ-VAE at
a rate of `groups x log2(codebook_size)` bits per row.

Data: scikit-learn's digits (1 797 x 64 pixels) and breast_cancer (569 x 30), 80% of the rows to train on,
20% held out (seeded split; 3 seeds). PCA sees the same standardization (fitted on the training rows).

    SELFSUP_CACHE=/tmp/selfsup-cache OMP_NUM_THREADS=1 python bench/compression.py --steps 1000 --seeds 3

Writes bench/results/compression/{results.json, rate_distortion.png} and prints the markdown tables.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

COMMON = ["train.eval_every=100000", "train.checkpoint_every=100000", "train.threads=1", "train.log_every=100",
          "train.batch_size=64", "model.hidden_sizes=[128,64]"]


def split(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer, load_digits

    x = (load_digits() if name == "digits" else load_breast_cancer()).data.astype(np.float32)
    perm = np.random.default_rng([seed, 29]).permutation(len(x))
    n = int(0.8 * len(x))
    return x[perm[:n]], x[perm[n:]]


def pca_mse(train: np.ndarray, test: np.ndarray, k: int) -> float:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    a, b = scaler.transform(train), scaler.transform(test)
    pca = PCA(n_components=k).fit(a)
    return float(((pca.inverse_transform(pca.transform(b)) - b) ** 2).mean())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--widths", default="2,4,8,16")
    p.add_argument("--datasets", default="digits,breast_cancer")
    p.add_argument("--vq", default="1x16,1x256,2x256,4x256", help="VQ-VAE settings GROUPSxCODES (bottleneck 16)")
    p.add_argument("--out", default="bench/results/compression")
    args = p.parse_args()

    import torch

    from selfsup.adapt.tools.anomaly import AutoEncoderDetector
    from selfsup.report.figures import plot_rate_distortion

    torch.set_num_threads(1)
    started = time.time()
    widths = [int(k) for k in args.widths.split(",")]
    res: dict = {"steps": args.steps, "seeds": args.seeds, "overrides": COMMON, "mse": {}, "vq": {}}
    for ds in args.datasets.split(","):
        for seed in range(args.seeds):
            train, test = split(ds, seed)
            for k in widths:
                for m in ("pca", "ae", "vae", "binary"):  # binary: k bits per row
                    if m == "pca":
                        mse = pca_mse(train, test, k)
                    else:
                        extra = ["objective.score=reconstruction", "objective.kl_warmup_steps=300"] if m == "vae" else []
                        det = AutoEncoderDetector(method=m, max_steps=args.steps, seed=seed, overrides=COMMON + [
                            f"model.bottleneck={k}", *extra]).fit(train)
                        mse = float(det.decision_function(test).mean())  # the score is the row's MSE
                    res["mse"].setdefault(ds, {}).setdefault(m, {}).setdefault(str(k), []).append(mse)
                    print(f"{ds} seed {seed} {m} k={k}: held-out MSE {mse:.4f}", flush=True)
            for setting in args.vq.split(","):
                groups, codes = (int(v) for v in setting.split("x"))
                det = AutoEncoderDetector(method="vqvae", max_steps=args.steps, seed=seed, overrides=COMMON + [
                    "model.bottleneck=16", f"objective.groups={groups}", f"objective.codebook_size={codes}"]).fit(train)
                mse = float(det.decision_function(test).mean())
                bits = groups * np.log2(codes)
                res["vq"].setdefault(ds, {}).setdefault(f"{bits:g}", []).append(mse)
                print(f"{ds} seed {seed} vqvae {setting} ({bits:g} bits): held-out MSE {mse:.4f}", flush=True)
    res["seconds"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    curves = {f"{ds} {m}": [(int(k), float(np.mean(v))) for k, v in by_k.items()]
              for ds, methods in res["mse"].items() for m, by_k in methods.items()}
    plot_rate_distortion(curves, out / "rate_distortion.png", xlabel="bottleneck width k (floats per row)",
                         title="held-out reconstruction error vs code width")

    def ms(v: list[float]) -> str:
        return f"{np.mean(v):.3f} ± {np.std(v):.3f}"

    for ds, methods in res["mse"].items():
        print(f"\n{ds}: held-out MSE per standardized feature\n\n| k | " + " | ".join(methods) + " |\n|---|"
              + "---|" * len(methods))
        for k in widths:
            print(f"| {k} | " + " | ".join(ms(methods[m][str(k)]) for m in methods) + " |")
        print("\n| VQ-VAE bits per row | held-out MSE |\n|---|---|")
        for bits, v in res["vq"][ds].items():
            print(f"| {bits} | {ms(v)} |")
    print(f"\n{res['seconds']:.0f} s in all")


if __name__ == "__main__":
    main()
