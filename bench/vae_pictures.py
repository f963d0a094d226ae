"""VAE pictures on scikit-learn's digits (8x8 pixels as a 64-column table): samples decoded from the prior
N(0, I), straight-line interpolations between the posterior means of held-out digits, and held-out
reconstructions — the `vae` recipe trained through `selfsup pretrain` on 80% of the digits (no labels).

    SELFSUP_CACHE=/tmp/selfsup-cache OMP_NUM_THREADS=1 python bench/vae_pictures.py --steps 3000

Writes bench/results/vae_pictures/{vae_digits.png, metrics.json} (the figure is docs/img/vae_digits.png).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--bottleneck", type=int, default=8)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/vae_pictures")
    args = p.parse_args()

    import torch
    from sklearn.datasets import load_digits

    from selfsup.adapt.tools.anomaly import AutoEncoderDetector
    from selfsup.report.figures import plot_image_grid

    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng([args.seed, 31]).permutation(len(x))
    train, test = perm[: int(0.8 * len(x))], perm[int(0.8 * len(x)):]
    det = AutoEncoderDetector(method="vae", max_steps=args.steps, seed=args.seed, overrides=[
        "train.eval_every=100000", "train.checkpoint_every=100000", "train.threads=1", "train.batch_size=64",
        "model.hidden_sizes=[128,64]", f"model.bottleneck={args.bottleneck}", f"objective.beta={args.beta}",
        "objective.kl_warmup_steps=500"]).fit(x[train].astype(np.float32))
    vae, pre = det.model_, det.model_.preprocessor

    def pixels(rows: torch.Tensor) -> list[np.ndarray]:
        values = np.clip(pre.inverse_numeric(rows.detach().numpy()), 0, 16)
        return [v.reshape(8, 8) for v in values]

    frame = pd.DataFrame(x[test], columns=[f"x{i}" for i in range(64)])  # the column names .npz / arrays get
    feats = torch.from_numpy(pre.transform(frame, [("digits", 0, len(test))]))
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        samples = vae.decoder(torch.randn(20, args.bottleneck, generator=g))
        mu = vae.encode(feats)
        recon = vae.decoder(mu)
        rows = {"prior samples": pixels(samples[:10]), "": pixels(samples[10:])}
        labels = y[test]
        for a_digit, b_digit in ((0, 6), (1, 7), (3, 8)):
            a, b = np.flatnonzero(labels == a_digit)[0], np.flatnonzero(labels == b_digit)[0]
            t = torch.linspace(0, 1, 10)[:, None]
            rows[f"{a_digit} → {b_digit}"] = pixels(vae.decoder((1 - t) * mu[a] + t * mu[b]))
        rows["held-out"] = [v.reshape(8, 8) for v in x[test][:10]]
        rows["reconstructed"] = pixels(recon[:10])
        mse = float(((recon - feats) ** 2).mean())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_image_grid(rows, out / "vae_digits.png", vmax=16,
                    title=f"VAE on digits (bottleneck {args.bottleneck}, β={args.beta:g}, {args.steps} steps)")
    metrics = {"steps": args.steps, "bottleneck": args.bottleneck, "beta": args.beta,
               "heldout_reconstruction_mse": mse, "heldout_loss": json.loads(
                   (det.run_ / "metrics.json").read_text()).get("heldout_loss")}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
