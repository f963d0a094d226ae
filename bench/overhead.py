"""Framework overhead of `selfsup pretrain` against a bare PyTorch loop of the same method, for the image,
speech and auto-encoder objectives, measured in one run.

For each method and repeat, `selfsup.pretrain` (Lightning: data loader, logging, the online probe and collapse
diagnostics, checkpoint bookkeeping) and `bench/bare_loop.py` (the same objective on the same kind of batches:
make_batch -> forward -> backward -> clip -> AdamW -> schedule, nothing else) each train STEPS steps in two threads
of this process that alternate after every optimizer step (bench/lockstep.py, as bench/mlm_throughput.py does):
exactly one computes at any moment, so background load on a shared machine falls on both alike. A step's time runs
from the end of the previous step to the end of this one (data, forward, backward, optimizer, the framework's
per-step work; the waiting for the turn excluded); each side's mean seconds per step after the first 20% of steps
(set-up, warm-up) is compared. The ratio `selfsup time / bare time` per repeat (the first mover alternates between
repeats), and its median over the repeats, is what the table shows.

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
import threading
from pathlib import Path

import torch
from bare_loop import bare_loop_per_s
from lockstep import Baton, Clock

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
    common = [f"train.threads={threads}", "train.eval_every=100000", "train.checkpoint_every=100000"]
    if method in IMAGE:
        from selfsup.registry import get_objective

        own = get_objective(method).default_backbone != "resnet"
        return ["sklearn:digits@train"], (common + ["data.image_size=16", "train.batch_size=64", "train.warmup_steps=10"]
                                          + ([] if own else RESNET) + PER_METHOD.get(method, []))
    if method in SPEECH:
        return [str(ROOT / "src" / "selfsup" / "assets" / "speech_words")], \
            common + ["model.hidden_size=96", "model.num_layers=3"]
    return ["sklearn:breast_cancer"], common


def lockstep_repeat(method: str, data: list[str], overrides: list[str], steps: int, out: Path, threads: int,
                    first: str) -> dict[str, float]:
    """One repeat: selfsup and the bare loop in two threads of this process, alternating after every optimizer
    step (bench/lockstep.py), so background load falls on both alike. Returns each side's steady seconds per
    step (mean over the steps after the first 20%)."""
    import lightning as L

    from selfsup import pretrain

    order = ["selfsup", "bare"] if first == "selfsup" else ["bare", "selfsup"]
    baton = Baton(order)
    clocks = {name: Clock(name, steps, baton) for name in order}
    errors: list[BaseException] = []

    class StepClock(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            clocks["selfsup"].step_end()

    def run_selfsup() -> None:
        shutil.rmtree(out, ignore_errors=True)
        pretrain(method, data, out, max_steps=steps, progress=False, quiet=True, overrides=overrides,
                 callbacks=[StepClock()])

    def run_bare() -> None:
        bare_loop_per_s(method, overrides + [f"train.max_steps={steps}"], data, steps, warm=0,
                        on_step_end=clocks["bare"].step_end)

    def work(name: str, fn) -> None:
        try:
            clocks[name].begin()
            torch.set_num_threads(threads)  # per OS thread
            fn()
            if len(clocks[name].durations) != steps:
                raise RuntimeError(f"{method} {name}: {len(clocks[name].durations)} steps clocked, expected {steps}")
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)
        finally:
            clocks[name].end()

    runs = {"selfsup": run_selfsup, "bare": run_bare}
    threads_ = [threading.Thread(target=work, args=(name, runs[name])) for name in order]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    if errors:
        raise errors[0]
    skip = steps // 5
    return {name: statistics.fmean(c.durations[skip:]) for name, c in clocks.items()}


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
        ratios, secs = [], []
        for repeat in range(args.repeats):
            per_step = lockstep_repeat(method, data, overrides, args.steps, work / method, args.threads,
                                       "selfsup" if repeat % 2 == 0 else "bare")
            ratio = per_step["selfsup"] / per_step["bare"]
            ratios.append(ratio)
            secs.append((round(per_step["selfsup"] * 1e3, 2), round(per_step["bare"] * 1e3, 2)))
            print(f"  {method} repeat {repeat}: selfsup {per_step['selfsup'] * 1e3:.1f} ms/step, bare "
                  f"{per_step['bare'] * 1e3:.1f} ms/step, ratio {ratio:.3f}", file=sys.stderr, flush=True)
        results[method] = {"ratio_median": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
                           "ms_per_step_selfsup_bare": secs}
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
