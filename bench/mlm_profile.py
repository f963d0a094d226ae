"""Where a pretraining step's time goes: selfsup's MLM step against the same model as a plain HF loop.

Profiles `--steps` optimizer steps (after `--skip` warm-up steps) of
  selfsup     `selfsup.pretrain("mlm", ...)` (the engine as users run it: Lightning loop, data, logging)
  hf-bare     BertForMaskedLM + DataCollatorForLanguageModeling in a plain loop (AdamW fused, clip)
(the `selfsup` and `bare-torch` runners of bench/mlm_throughput.py, unchanged)
with `torch.profiler` (CPU activities), at the `mlm` recipe's size or the one given by `--hidden/--layers/...`
(the flags and the data of `bench/mlm_throughput.py`). Every aten operator's *self* CPU time is put in one
category (matmuls, attention, the vocabulary softmax/cross-entropy, layer norm, GELU, dropout, embeddings, the
optimizer and gradient clipping, masked-position gathers, other element-wise ops); what the operators do not
account for ("Python, framework, data") is the profiled wall time minus their sum. Rows are ms per step.

Usage:  python bench/mlm_profile.py [--steps 10] [--skip 5] [--threads N] [--hidden 512 ...]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import torch

import mlm_throughput as mt  # the same flags, data, model and collator as the throughput benchmark

CATEGORIES = [  # (name, substrings of aten op names); the first match wins
    ("attention (SDPA)", ("scaled_dot_product", "_flash_attention", "_efficient_attention")),
    ("vocabulary softmax + cross-entropy", ("log_softmax", "nll_loss", "cross_entropy")),
    ("matmul (linear layers, vocabulary projection)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("layer norm", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("dropout", ("dropout", "bernoulli")),
    ("embeddings", ("embedding",)),
    ("optimizer + grad clipping", ("adam", "_foreach", "linalg_vector_norm", "aten::norm", "clip")),
    ("masked-position gather/scatter", ("aten::index", "nonzero", "masked_select", "masked_scatter", "index_put")),
    ("element-wise and copies", ("aten::",)),
]


def categorize(key: str) -> str:
    for name, parts in CATEGORIES:
        if any(key.startswith(p) if p.startswith("aten::") else p in key for p in parts):
            return name
    return "other operators"


class StepHook:
    """What the throughput benchmark's runners call after every optimizer step (their `clock.step_end()`)."""

    def __init__(self, on_step):
        self.step_end = on_step


def profile_steps(skip: int, steps: int, runner, a, ctx, warmup: int, workdir: str) -> tuple[dict[str, float], float]:
    """Train with `runner` (one of bench/mlm_throughput.py's); profile steps skip..skip+steps.
    Returns ({category: ms/step}, wall ms/step)."""
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    state = {"n": 0, "t0": 0.0, "t1": 0.0}

    def on_step() -> None:
        state["n"] += 1
        if state["n"] == skip:
            prof.start()
            state["t0"] = time.perf_counter()
        elif state["n"] == skip + steps:
            state["t1"] = time.perf_counter()
            prof.stop()

    os.makedirs(workdir)
    runner(a, ctx, warmup, workdir, StepHook(on_step))
    wall_ms = (state["t1"] - state["t0"]) * 1e3 / steps
    cats: dict[str, float] = {}
    for ev in prof.key_averages():
        if ev.key.startswith("aten::"):
            name = categorize(ev.key)
            cats[name] = cats.get(name, 0.0) + ev.self_cpu_time_total / 1e3 / steps
    cats["Python, framework, data (not in an operator)"] = wall_ms - sum(cats.values())
    return cats, wall_ms


def main(argv=None) -> None:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--steps", type=int, default=10)
    own.add_argument("--skip", type=int, default=5)
    counts, rest = own.parse_known_args(argv)
    measured = counts.steps
    # each run trains skip + measured + 1 steps; steps skip..skip+measured are profiled
    a = mt.parse_args(rest + ["--skip", str(counts.skip), "--steps", str(counts.skip + measured + 1)])
    mt.quiet()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.threads = torch.get_num_threads()
    warmup = max(1, a.steps // 10)
    recipe, prepared, tok, blocks = mt.prepare(a, warmup)
    ctx = {"recipe": recipe, "prepared": prepared, "tok": tok, "blocks": blocks, "dataset": mt.hf_dataset(blocks)}
    m = recipe.model
    load0 = os.getloadavg()
    peak0 = mt.matmul_peak()
    rows: dict[str, tuple[dict[str, float], float]] = {}
    with tempfile.TemporaryDirectory(prefix="selfsup-profile-") as tmp:
        for name, runner in (("selfsup", mt.run_selfsup), ("hf-bare", mt.run_bare_torch)):
            rows[name] = profile_steps(a.skip, measured, runner, a, ctx, warmup, os.path.join(tmp, name))
    peak1, load1 = mt.matmul_peak(), os.getloadavg()
    print(f"# MLM step profile: hidden {m.hidden_size}, {m.num_layers} layers, {m.num_heads} heads, intermediate "
          f"{m.intermediate_size}, vocabulary {len(tok)}; batch {a.batch_size} x {mt.SEQ}; {a.threads} threads; "
          f"{measured} profiled steps after {a.skip}")
    print(f"# load average {load0[0]:.2f} before, {load1[0]:.2f} after; fp32 1024^3 matmul {peak0:.0f} / "
          f"{peak1:.0f} GFLOP/s before / after")
    names = [c for c, _ in CATEGORIES] + ["other operators", "Python, framework, data (not in an operator)"]
    print("\n| where the time goes (ms per step) | selfsup | % | HF model, plain loop | % |")
    print("|---|---|---|---|---|")
    for c in names:
        s, h = rows["selfsup"][0].get(c, 0.0), rows["hf-bare"][0].get(c, 0.0)
        if abs(s) < 0.05 and abs(h) < 0.05:
            continue
        print(f"| {c} | {s:.1f} | {100 * s / rows['selfsup'][1]:.0f} | {h:.1f} | {100 * h / rows['hf-bare'][1]:.0f} |")
    print(f"| **step (wall, profiled)** | **{rows['selfsup'][1]:.1f}** | 100 | **{rows['hf-bare'][1]:.1f}** | 100 |")


if __name__ == "__main__":
    main()
