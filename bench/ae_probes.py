"""The auto-encoders' codes as features: linear and kNN probes (selfsup.evaluation.probes) of the bottleneck code
of a trained auto-encoder, of the same auto-encoder untrained (seeded init), and of the raw preprocessed inputs,
on sklearn:digits (8x8 images) and sklearn:breast_cancer (30 numeric columns), @train -> @test.

    OMP_NUM_THREADS=1 python3 bench/ae_probes.py [--seeds 0 1 2] [--steps 600]

Prints one markdown table row per (data, method, model) with the mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

FAST = ["train.batch_size=64", "train.eval_every=100000", "train.checkpoint_every=100000", "train.threads=1"]
CASES = [  # (data, method, overrides)
    ("sklearn:digits", "ae", ["data.image_size=8", "model.bottleneck=16", "model.hidden_sizes=[128,64]"]),
    ("sklearn:digits", "ae", ["data.image_size=8", "model.bottleneck=16", "model.type=conv", "model.channels=[16,32]"]),
    ("sklearn:digits", "vae", ["data.image_size=8", "model.bottleneck=16", "model.hidden_sizes=[128,64]"]),
    ("sklearn:breast_cancer", "ae", []),
    ("sklearn:breast_cancer", "vae", []),
    ("sklearn:breast_cancer", "vqvae", []),
]


def flat(inputs) -> np.ndarray:
    return inputs if isinstance(inputs, np.ndarray) else np.stack([inputs[i][0].reshape(-1) for i in range(len(inputs))])


def main() -> None:
    from selfsup.adapt.core.ae_encoder import AEEncoder, ae_examples, ae_features, label_ids, load_ae_encoder
    from selfsup.adapt.tools.anomaly import fit_anomaly
    from selfsup.evaluation.probes import run_probe
    from selfsup.objectives.base import Prepared

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| data | method | model | code width | linear | kNN |\n|---|---|---|---|---|---|")
    for data, method, sets in CASES:
        scores: dict[str, list[tuple[float, float]]] = {"trained": [], "untrained": [], "raw inputs": []}
        width = {}
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                run = Path(tmp) / "run"
                fit_anomaly([f"{data}@train"], run, method, max_steps=args.steps, seed=seed, overrides=FAST + sets)
                enc, _ = load_ae_encoder(run)
            torch.manual_seed(seed)
            ae = enc.ae
            fresh = AEEncoder(type(ae)(ae.recipe, Prepared([], [], {"shape": ae.shape,
                                                                     "preprocessor": ae.preprocessor}))).eval()
            tr, tr_labels = ae_examples(enc, [f"{data}@train"])
            ev, ev_labels = ae_examples(enc, [f"{data}@test"])
            ytr, yev, _ = label_ids(tr_labels, ev_labels)
            majority = float((yev == np.bincount(ytr).argmax()).mean())
            for name, a, b in [("trained", ae_features(enc, tr), ae_features(enc, ev)),
                               ("untrained", ae_features(fresh, tr), ae_features(fresh, ev)),
                               ("raw inputs", flat(tr), flat(ev))]:
                width[name] = a.shape[1]
                scores[name].append((run_probe("linear", a, ytr, b, yev), run_probe("knn", a, ytr, b, yev)))
        kind = "conv" if "model.type=conv" in sets else "mlp"
        for name, rows in scores.items():
            r = np.array(rows)
            print(f"| {data} | {method} ({kind}) | {name} | {width[name]} | {r[:, 0].mean():.3f} ± {r[:, 0].std():.3f} "
                  f"| {r[:, 1].mean():.3f} ± {r[:, 1].std():.3f} |", flush=True)
        print(f"| {data} | | majority class | | {majority:.3f} | |", flush=True)


if __name__ == "__main__":
    main()
