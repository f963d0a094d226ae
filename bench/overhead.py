"""Framework overhead of `selfsup pretrain` against a bare PyTorch loop of the same method, for the image,
speech and auto-encoder objectives, measured in one run.

For each method and repeat, `selfsup.pretrain` runs STEPS steps (Lightning: data loader, logging, the online
probe and collapse diagnostics, checkpoint bookkeeping) and then `bench/bare_loop.py` runs the same objective on
the same kind of batches for STEPS steps (make_batch -> forward -> backward -> clip -> AdamW -> schedule, nothing
else). Both sides report their steady throughput after the first 20% of steps: selfsup the median of its logged
`*_per_s` (each the work of the steps since the previous written row over their time, so logging, the online probe
and diagnostics count), the bare loop all its work over all its time after those steps; set-up, data preparation
and the first steps' warm-up count on neither side. The ratio `selfsup time / bare time` per repeat, and its median over the repeats, is what the table shows;
running the two back to back within each repeat puts the same background load on both.

    SELFSUP_CACHE=/tmp/selfsup-bench-cache python bench/overhead.py [--steps 120] [--repeats 3] [--threads 1]
        [--methods simclr,moco,...]

Data: scikit-learn's digits at 16x16 (images), the shipped synthesized command words (speech), scikit-learn's
breast-cancer table (auto-encoders). Writes bench/results/overhead.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import torch
from bare_loop import bare_loop_per_s

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ["simclr", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "rotation", "context", "deepcluster", "igpt"]
SPEECH = ["mockingjay", "tera", "apc", "cpc", "wav2vec2", "hubert", "data2vec", "best_rq", "delores", "speech_simclr",
          "temporal_gap", "vq_wav2vec"]
TABLE = ["autoencoder", "denoising_autoencoder", "vae", "vqvae"]
RESNET = ["model.embedding_size=16", "model.hidden_sizes=[16,32,64]", "model.depths=[1,1,1]"]  # image_ssl's backbone
PER_METHOD = {"moco": ["objective.queue_size=512"], "deepcluster": ["objective.clusters=50"],
              "igpt": ["data.image_size=8"]}


def setup(method: str, threads: int, work: Path) -> tuple[list[str], list[str]]:
    """(data, overrides) for a method, by modality; the same sizes as the image and speech benchmarks."""
    common = [f"train.threads={threads}", "train.eval_every=100000", "train.checkpoint_every=100000",
              "train.log_every=5"]
    if method in IMAGE:
        from selfsup.registry import get_objective

        own = get_objective(method).default_backbone != "resnet"
        return ["sklearn:digits@train"], (common + ["data.image_size=16", "train.batch_size=64", "train.warmup_steps=10"]
                                          + ([] if own else RESNET) + PER_METHOD.get(method, []))
    if method in SPEECH:
        return [str(ROOT / "src" / "selfsup" / "assets" / "speech_words")], \
            common + ["model.hidden_size=96", "model.num_layers=3"]
    return ["sklearn:breast_cancer"], common


def selfsup_per_s(method: str, data: list[str], overrides: list[str], steps: int, out: Path) -> float:
    from selfsup import pretrain

    shutil.rmtree(out, ignore_errors=True)
    return float(pretrain(method, data, out, max_steps=steps, progress=False, overrides=overrides)["throughput_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=",".join(IMAGE + SPEECH + TABLE))
    ap.add_argument("--work", default="/tmp/selfsup-overhead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    load_before = os.getloadavg()
    print(f"# load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", file=sys.stderr)
    results: dict[str, dict] = {}
    for method in args.methods.split(","):
        data, overrides = setup(method, args.threads, work)
        ratios, rates = [], []
        for repeat in range(args.repeats):
            fast = selfsup_per_s(method, data, overrides, args.steps, work / method)
            bare = bare_loop_per_s(method, overrides + [f"train.max_steps={args.steps}"], data, args.steps,
                                   warm=args.steps // 5, statistic="mean")
            ratios.append(bare / fast)
            rates.append((round(fast, 1), round(bare, 1)))
            print(f"  {method} repeat {repeat}: selfsup {fast:.1f}/s, bare {bare:.1f}/s, ratio {bare / fast:.3f}",
                  file=sys.stderr, flush=True)
        results[method] = {"ratio_median": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
                           "rates_selfsup_bare": rates}
    load_after = os.getloadavg()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "overhead.json").write_text(json.dumps({"args": vars(args), "load_before": load_before,
                                                   "load_after": load_after, "results": results}, indent=2) + "\n")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print("| method | selfsup time / bare-loop time (median) | per repeat |")
    print("|---|---|---|")
    for method, r in results.items():
        print(f"| {method} | {r['ratio_median']:.2f}x | {', '.join(f'{x:.2f}' for x in r['ratios'])} |")


if __name__ == "__main__":
    main()
