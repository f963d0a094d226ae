"""Image SSL benchmark: every method on scikit-learn's digits (real scanned handwriting), same backbone and
step budget (igpt: its own GPT-2 over pixel tokens, at 8x8, with an untrained copy as its own baseline);
linear and kNN probe accuracy on a held-out split against a random-init backbone and raw pixels;
time per epoch of `selfsup pretrain` against a bare PyTorch loop running the same objective (same batches,
same AdamW + schedule, no Lightning) -> framework overhead as a ratio.

    SELFSUP_CACHE=/tmp/selfsup-cache python bench/image_ssl.py --steps 250 --threads 1

Writes bench/results/image_ssl/results.json and prints the markdown table of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from bare_loop import bare_loop_per_s

METHODS = ["simclr", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "rotation", "context", "deepcluster",
           "igpt"]
# igpt brings its own backbone (a GPT-2 over pixel tokens) and reads the digits at their native 8x8 (64 tokens)
PER_METHOD = {"moco": ["objective.queue_size=512"], "deepcluster": ["objective.clusters=50"],
              "igpt": ["data.image_size=8"]}
RESNET = ["model.embedding_size=16", "model.hidden_sizes=[16,32,64]", "model.depths=[1,1,1]"]  # the shared backbone


def own_backbone(method: str) -> bool:
    """A method that does not train the shared ResNet (igpt); it gets an untrained baseline of its own."""
    from selfsup.registry import get_objective

    return get_objective(method).default_backbone != "resnet"


def method_overrides(method: str, common: list[str]) -> list[str]:
    return common + ([] if own_backbone(method) else RESNET) + PER_METHOD.get(method, [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--bare-steps", type=int, default=40)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="bench/results/image_ssl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from selfsup import pretrain
    from selfsup.data.images import ImageDataConfig, digits_split, load_images
    from selfsup.evaluation.cli import evaluate
    from selfsup.evaluation.probes import knn_probe, linear_probe, pixel_features

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    train, held = digits_split(out)
    common = [f"data.image_size={args.image_size}", "train.batch_size=64", f"train.threads={args.threads}",
              "train.warmup_steps=10", "train.eval_every=100000", "train.checkpoint_every=100000", "train.log_every=5"]
    results: dict[str, dict] = {}
    cfg = ImageDataConfig(image_size=args.image_size, channels=1)
    tr, ev = load_images([str(train)], cfg), load_images([str(held)], cfg)
    px_tr, px_ev = pixel_features(tr.images), pixel_features(ev.images)
    results["raw pixels"] = {"linear": linear_probe(px_tr, tr.labels, px_ev, ev.labels),
                             "knn": knn_probe(px_tr, tr.labels, px_ev, ev.labels)}
    pretrain("simclr", [str(train)], out / "random-init", max_steps=1, progress=False,
             overrides=method_overrides("simclr", common) + ["train.lr=1e-12"])
    results["random init"] = {p: evaluate(out / "random-init", p, [str(train)], [str(held)])["eval"]["accuracy"]
                              for p in ("linear", "knn")}
    print(json.dumps(results), flush=True)
    n_train = len(tr.images) - int(np.ceil(0.1 * len(tr.images)))  # the recipe's 10% held-out split
    for method in args.methods.split(","):
        overrides = method_overrides(method, common)
        if own_backbone(method):
            pretrain(method, [str(train)], out / f"{method}-untrained", max_steps=1, progress=False,
                     overrides=overrides + ["train.lr=1e-12"])
            results[f"{method} untrained"] = {p: evaluate(out / f"{method}-untrained", p, [str(train)], [str(held)])
                                              ["eval"]["accuracy"] for p in ("linear", "knn")}
        run = out / method
        started = time.perf_counter()
        m = pretrain(method, [str(train)], run, max_steps=args.steps, progress=False, overrides=overrides)
        row = {p: evaluate(run, p, [str(train)], [str(held)])["eval"]["accuracy"] for p in ("linear", "knn")}
        bare = bare_loop_per_s(method, overrides + [f"train.max_steps={args.steps}"], [train], args.bare_steps)
        row.update({"train_loss_first": m["train_loss_first"], "train_loss": m["train_loss"],
                    "wall_seconds": round(time.perf_counter() - started, 1),
                    "epoch_s_selfsup": n_train / m["throughput_per_s"], "epoch_s_bare": n_train / bare})
        row["overhead_ratio"] = row["epoch_s_selfsup"] / row["epoch_s_bare"]
        results[method] = row
        print(method, json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    print("\n| method | linear | kNN (k=20) | s/epoch selfsup | s/epoch bare loop | overhead |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        timing = (f"{r['epoch_s_selfsup']:.2f} | {r['epoch_s_bare']:.2f} | {r['overhead_ratio']:.2f}x"
                  if "overhead_ratio" in r else "– | – | –")
        print(f"| {name} | {r['linear']:.3f} | {r['knn']:.3f} | {timing} |")


if __name__ == "__main__":
    main()
