"""Pretraining throughput of selfsup's MLM against Hugging Face `transformers.Trainer`, measured in one run.

Three methods train the same model (BertForMaskedLM at the `mlm` recipe's sizes: hidden 128, 2 layers,
2 heads, intermediate 512, vocabulary 8000, 128-token sequences, dropout 0.1, fp32) on the same data (the
embedded Jane Austen corpus, tokenized by the same WordPiece tokenizer selfsup trains, cut into the same
packed 126-token blocks wrapped with [CLS]/[SEP]), with the same batch, number of steps and optimizer
(fused AdamW, lr 1e-3, linear warm-up then decay, weight decay 0.01 off biases/LayerNorms, grad-norm clip 1.0):

  hf-trainer  `transformers.Trainer` + `DataCollatorForLanguageModeling(mlm_probability=0.15)` over a
              `datasets.Dataset` of the blocks' input_ids (the baseline a user would pick instead)
  selfsup     `selfsup.pretrain("mlm", ...)` (Lightning engine, logits at masked positions only)
  bare-torch  a plain loop: the same HF collator and DataLoader, `BertForMaskedLM(**batch)`, AdamW

Each run is timed by a per-optimizer-step clock (a Lightning callback, a `TrainerCallback`, or the loop
itself): a step's time runs from the end of the previous step to the end of this one (data loading,
forward, backward, clipping, optimizer, framework bookkeeping); the first `--skip` steps (set-up, warm-up)
are excluded. Alternation is at the finest grain: in each repeat the three runs live in threads of one
process and pass a baton after every optimizer step, so exactly one computes at any moment and they take
turns (hf, selfsup, bare, hf, ...; the first mover rotates between repeats). Background load on a shared
machine therefore hits all methods alike. `--interleave run` runs them one after the other instead. The
table reports the median over `--repeats` of each run's steady-state tokens/s.

MFU convention (printed with the results and written to the JSON):
  useful FLOPs/token = 6 * N_layers + 12 * L * T * d + f * 6 * (N_head_transform + d * V + V)
where N_layers are the encoder layers' parameters (embeddings excluded), 12*L*T*d is the attention score
and attention-times-value matmuls forward+backward (PaLM's convention; T = 128, non-causal), and the
prediction head (transform + vocabulary projection) is counted only at the fraction f of positions that
carry a loss (the masked 15%). MFU = tokens/s * useful FLOPs/token / peak, with the same FLOPs/token for
every method, so MFU ratios equal throughput ratios. The peak is measured in the same run: 1024^3 fp32
matmuls at the same thread count, sampled before/after the repeats and in turn with the training steps;
`MFU %` uses the best sample (what the hardware can do), `MFU % load-matched` the aggregate of the in-turn
samples (what a matmul got under the same background load as the steps; meaningful on a shared machine).
The `exec %` column instead counts the FLOPs each method actually executes (HF computes the prediction
head at all T positions, selfsup at the masked ones), against the best sample.

Usage:  python bench/mlm_throughput.py [--steps 40] [--repeats 3] [--batch-size 32] [--threads N]
                                      [--hidden 512 [--layers L --heads H --intermediate F]]
Writes bench/results/mlm_throughput.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SELFSUP_CACHE", "/tmp/selfsup-bench-cache")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lockstep import Baton, Clock  # noqa: E402

METHODS = ("hf-trainer", "selfsup", "bare-torch")
SEQ = 128


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per measured run (default 40)")
    p.add_argument("--repeats", type=int, default=3, help="measured runs per method (median reported)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's default")
    p.add_argument("--skip", type=int, default=5, help="warm-up steps excluded from each run's timing")
    p.add_argument("--interleave", choices=("step", "run"), default="step",
                   help="step: the runs of a repeat execute in lock-step, one optimizer step each in turn "
                        "(default); run: one whole run after the other")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--hidden", type=int, default=0, help="model width; 0 = the mlm recipe's (128)")
    p.add_argument("--layers", type=int, default=0, help="encoder layers; 0 = the recipe's (2)")
    p.add_argument("--heads", type=int, default=0, help="attention heads; 0 = the recipe's (2), or width/64 with --hidden")
    p.add_argument("--intermediate", type=int, default=0, help="feed-forward width; 0 = 4 x hidden")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a recipe override for every method (model.* keys reach the HF model too, e.g. "
                        "model.dropout=0.0; train.compile=true compiles selfsup's forward only)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "mlm_throughput.json"))
    a = p.parse_args(argv)
    if a.steps <= a.skip + 1:
        p.error(f"--steps must exceed --skip + 1 ({a.skip + 1})")
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        p.error(f"--methods: unknown {bad}")
    return a


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()


# ----------------------------------------------------------------------------------------------- shared data
def sources() -> list[str]:
    found = sorted(glob.glob(str(ROOT / "src" / "selfsup" / "assets" / "austen-*.txt.xz")))
    if not found:
        sys.exit("no src/selfsup/assets/austen-*.txt.xz found")
    return found


def model_overrides(a) -> list[str]:
    """The model size flags as recipe overrides (none: the mlm recipe's demo size)."""
    out = []
    if a.hidden:
        out += [f"model.hidden_size={a.hidden}", f"model.num_heads={a.heads or max(1, a.hidden // 64)}",
                f"model.intermediate_size={a.intermediate or 4 * a.hidden}"]
    else:
        out += [f"model.num_heads={a.heads}"] if a.heads else []
        out += [f"model.intermediate_size={a.intermediate}"] if a.intermediate else []
    if a.layers:
        out.append(f"model.num_layers={a.layers}")
    return out


def recipe_overrides(a, warmup: int) -> list[str]:
    return model_overrides(a) + list(a.set) + [
            f"train.batch_size={a.batch_size}", f"train.max_steps={a.steps}", f"train.warmup_steps={warmup}",
            "train.precision='32'", f"train.threads={a.threads}",
            # the HF baseline neither evaluates nor saves while training; neither does the measured selfsup run
            f"train.eval_every={10 * a.steps}", f"train.checkpoint_every={10 * a.steps}", "train.eval_batches=1"]


def prepare(a, warmup: int):
    """selfsup's tokenizer and train blocks, each wrapped [CLS] + 126 tokens + [SEP] -> (n, 128) int64."""
    from selfsup.objectives.mlm import MaskedLanguageModeling
    from selfsup.recipes import load_recipe

    recipe = load_recipe("mlm", recipe_overrides(a, warmup))
    prepared = MaskedLanguageModeling.prepare(recipe, sources())
    tok = prepared.extras["tokenizer"]
    blocks = np.stack([np.concatenate([[tok.cls_token_id], np.asarray(t, np.int64), [tok.sep_token_id]])
                       for t, _ in prepared.train]).astype(np.int64)
    assert blocks.shape[1] == SEQ, blocks.shape
    return recipe, prepared, tok, blocks


def hf_model(recipe, tok):
    """BertForMaskedLM configured by hand from the recipe, as an HF user would (checked against selfsup's)."""
    from transformers import BertConfig, BertForMaskedLM

    m = recipe.model
    cfg = BertConfig(vocab_size=len(tok), hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
                     num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size,
                     max_position_embeddings=m.max_length, type_vocab_size=2, hidden_dropout_prob=m.dropout,
                     attention_probs_dropout_prob=m.dropout, pad_token_id=tok.pad_token_id)
    return BertForMaskedLM(cfg)


def hf_dataset(blocks: np.ndarray):
    import datasets

    return datasets.Dataset.from_dict({"input_ids": blocks.tolist()})


def collator(tok):
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer=tok, mlm=True, mlm_probability=0.15)


# ------------------------------------------------------------------------------------------------ the runs
def steady(clock: Clock, skip: int, batch: int) -> dict:
    timed = clock.durations[skip:]
    secs = sum(timed)
    return {"steps": len(clock.durations), "steps_timed": len(timed), "seconds_timed": secs,
            "steps_per_s": len(timed) / secs, "tokens_per_s": len(timed) * batch * SEQ / secs,
            "step_seconds": [round(d, 4) for d in clock.durations], "torch_threads": torch.get_num_threads()}


def run_hf_trainer(a, ctx, warmup: int, workdir: str, clock: Clock) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.step_end()

    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=workdir, per_device_train_batch_size=a.batch_size, max_steps=a.steps, learning_rate=1e-3,
        weight_decay=0.01, warmup_steps=warmup, lr_scheduler_type="linear", max_grad_norm=1.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, report_to=[], save_strategy="no",
        eval_strategy="no", logging_steps=10 ** 6, dataloader_num_workers=0, use_cpu=True, seed=0,
        disable_tqdm=True)
    trainer = Trainer(model=hf_model(ctx["recipe"], ctx["tok"]), args=args, train_dataset=ctx["dataset"],
                      data_collator=collator(ctx["tok"]), callbacks=[StepClock()])
    # Trainer prints its summary dict through PrinterCallback; removed rather than redirect_stdout, which is
    # process-wide: entered and left by two lock-step threads in turn it leaves sys.stdout on a StringIO, and the
    # bench's table vanished (the "silent" end of the hidden-512 runs)
    trainer.remove_callback(PrinterCallback)
    out = trainer.train()
    return {"optimizer": str(args.optim), "train_loss_mean_all_steps": float(out.training_loss)}


def run_selfsup(a, ctx, warmup: int, workdir: str, clock: Clock) -> dict:
    import lightning as L

    import selfsup

    class StepClock(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            clock.step_end()

    metrics = selfsup.pretrain("mlm", data=sources(), out=os.path.join(workdir, "run"),
                               overrides=recipe_overrides(a, warmup), callbacks=[StepClock()], progress=False,
                               quiet=True)
    # (the engine's own throughput_per_s is not used: in lock-step mode its step clock includes the waiting)
    return {"train_loss_last_10pct": metrics.get("train_loss")}


def run_bare_torch(a, ctx, warmup: int, workdir: str, clock: Clock) -> dict:
    from selfsup.engine.module import lr_lambda

    torch.manual_seed(0)
    model = hf_model(ctx["recipe"], ctx["tok"])
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n.lower()]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n.lower())]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.999), eps=1e-8, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("linear", warmup, a.steps))
    loader = torch.utils.data.DataLoader(ctx["dataset"], batch_size=a.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collator(ctx["tok"]), num_workers=0)
    step, losses = 0, []
    while step < a.steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            step += 1
            clock.step_end()
            if step == a.steps:
                break
    return {"train_loss_last_10pct": float(torch.stack(losses[-max(1, len(losses) // 10):]).mean())}


class PeakProbe:
    """fp32 matmul throughput sampled *during* the measurement: in lock-step mode it takes a turn like a
    fourth run (a few n x n @ n x n products per round of steps), so it sees the same background load as the
    training steps around it; the MFU denominator is the aggregate of these samples."""

    def __init__(self, n: int = 1024, per_sample: int = 3):
        self.n, self.per_sample = n, per_sample
        self.x, self.y, self.out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        self.flops, self.seconds = 0.0, 0.0
        self.samples: list[float] = []

    def sample(self) -> None:
        t = time.perf_counter()
        for _ in range(self.per_sample):
            torch.mm(self.x, self.y, out=self.out)
        dt = time.perf_counter() - t
        flops = 2.0 * self.n ** 3 * self.per_sample
        self.flops += flops
        self.seconds += dt
        self.samples.append(flops / dt / 1e9)

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds else float("nan")


def measure(a, ctx, warmup: int, methods: list[str], tmp: str, rep: int, probe: PeakProbe) -> dict[str, dict]:
    """One repeat: every method once, either interleaved step by step (threads + baton) or one after the other."""
    baton = Baton([*methods, "peak"]) if a.interleave == "step" else None
    clocks = {m: Clock(m, a.steps, baton) for m in methods}
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def work(m: str) -> None:
        clock = clocks[m]
        try:
            clock.begin()
            torch.set_num_threads(a.threads)  # per OS thread: make sure every run uses the same count
            wd = os.path.join(tmp, f"{m}-{rep}")
            os.makedirs(wd)
            t0 = time.perf_counter()
            extra = RUNNERS[m](a, ctx, warmup, wd, clock)
            if len(clock.durations) != a.steps:
                raise RuntimeError(f"{m}: {len(clock.durations)} steps clocked, expected {a.steps}")
            results[m] = {**steady(clock, a.skip, a.batch_size), "seconds_total": time.perf_counter() - t0,
                          **extra, "repeat": rep}
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)
        finally:
            clock.end()

    def peak_turns() -> None:
        torch.set_num_threads(a.threads)
        try:
            while True:
                baton.wait("peak")
                if all(m in baton.done for m in methods):
                    break
                probe.sample()
                baton.pass_on("peak")
        finally:
            baton.finish("peak")

    if baton is None:
        for m in methods:
            for _ in range(5):
                probe.sample()
            work(m)
    else:
        threads = [threading.Thread(target=work, args=(m,), name=f"bench-{m}") for m in methods]
        threads.append(threading.Thread(target=peak_turns, name="bench-peak"))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results


RUNNERS = {"hf-trainer": run_hf_trainer, "selfsup": run_selfsup, "bare-torch": run_bare_torch}


# ------------------------------------------------------------------------------------------- FLOPs and peak
def matmul_peak(n: int = 1024, rounds: int = 5, per_round: int = 8) -> float:
    """Best fp32 GFLOP/s of an n x n @ n x n matmul at torch's current thread count (after ~0.5 s warm-up)."""
    x, y = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    t = time.perf_counter()
    while time.perf_counter() - t < 0.5:
        torch.mm(x, y, out=out)
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per_round):
            torch.mm(x, y, out=out)
        best = max(best, 2 * n ** 3 * per_round / (time.perf_counter() - t) / 1e9)
    return best


def masked_fraction(ctx, batches: int = 20) -> dict:
    """Fraction of the T positions that carry an MLM loss, for selfsup's masking and the HF collator."""
    from selfsup.engine.stream import example_rng
    from selfsup.objectives.mlm import MaskedLanguageModeling

    obj = MaskedLanguageModeling(ctx["recipe"], ctx["prepared"])
    train = ctx["prepared"].train
    ss, hf = [], []
    coll = collator(ctx["tok"])
    torch.manual_seed(0)
    for b in range(batches):
        idx = range(b * 32, b * 32 + 32)
        batch = obj.make_batch([train[i] for i in idx], [example_rng(0, 0, i) for i in idx])
        ss.append(float((batch["labels"] != -100).float().mean()))
        hb = coll([{"input_ids": ctx["blocks"][i].tolist()} for i in idx])
        hf.append(float((hb["labels"] != -100).float().mean()))
    return {"selfsup": statistics.mean(ss), "hf": statistics.mean(hf)}


def flops_per_token(model, frac: dict) -> dict:
    c = model.config
    d, L, V, T = c.hidden_size, c.num_hidden_layers, c.vocab_size, SEQ
    n_layers = sum(p.numel() for p in model.bert.encoder.parameters())
    n_transform = sum(p.numel() for p in model.cls.predictions.transform.parameters())
    n_vocab = d * V + V  # tied decoder weight (counted as a matmul) + its bias
    body = 6 * n_layers + 12 * L * T * d
    head = 6 * (n_transform + n_vocab)
    f_useful = frac["selfsup"]  # nominal 15% of the 126 maskable positions
    return {
        "d": d, "layers": L, "vocab": V, "seq": T, "n_layer_params": n_layers, "n_head_transform_params": n_transform,
        "n_vocab_projection_params": n_vocab, "body_flops_per_token": body, "head_flops_per_predicted_position": head,
        "masked_fraction": frac, "useful_flops_per_token": body + f_useful * head,
        "executed_flops_per_token": {"hf-trainer": body + head, "bare-torch": body + head,
                                     "selfsup": body + frac["selfsup"] * head},
        "convention": ("useful FLOPs/token = 6*N_layers + 12*L*T*d + f*6*(N_head_transform + d*V + V); "
                       "N_layers = encoder-layer parameters (embeddings excluded), 12*L*T*d = attention QK^T and "
                       "AV matmuls fwd+bwd (PaLM), prediction head only at the fraction f of positions with a "
                       "loss (the same useful FLOPs/token for every method). MFU % = tokens/s * useful FLOPs/token "
                       "/ peak, peak = best fp32 1024^3 matmul GFLOP/s sampled in this run at the same thread "
                       "count; 'MFU % load-matched' divides instead by the matmul rate sampled in turn with the "
                       "training steps (same background load); exec % = tokens/s * FLOPs/token the method "
                       "actually executes (HF: head at all T positions) / peak."),
    }


# --------------------------------------------------------------------------------------------------- main
def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "nproc": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        import lightning
        import transformers

        info.update(transformers=transformers.__version__, lightning=lightning.__version__)
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        info["loadavg_start"] = os.getloadavg()
    except Exception:
        pass
    return info


def main(argv=None) -> dict:
    a = parse_args(argv)
    quiet()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.threads = torch.get_num_threads()
    warmup = max(1, a.steps // 10)
    info = machine()
    print(f"# selfsup MLM throughput: {a.steps} steps x {a.repeats} repeats, batch {a.batch_size} x {SEQ} "
          f"tokens, {a.threads} threads, warm-up {warmup} steps, first {a.skip} steps untimed", flush=True)

    recipe, prepared, tok, blocks = prepare(a, warmup)
    ctx = {"recipe": recipe, "prepared": prepared, "tok": tok, "blocks": blocks, "dataset": hf_dataset(blocks)}
    from selfsup.objectives.mlm import MaskedLanguageModeling

    ours = MaskedLanguageModeling(recipe, prepared).model
    theirs = hf_model(recipe, tok)
    n_ours, n_theirs = sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in theirs.parameters())
    assert n_ours == n_theirs, (n_ours, n_theirs)
    frac = masked_fraction(ctx)
    flops = flops_per_token(theirs, frac)
    peaks = [matmul_peak()]
    probe = PeakProbe()
    m = recipe.model
    print(f"# model: hidden {m.hidden_size}, {m.num_layers} layers, {m.num_heads} heads, intermediate "
          f"{m.intermediate_size}, vocabulary {len(tok)}", flush=True)
    print(f"# {len(blocks)} blocks; {n_ours:,} parameters; fp32 matmul {peaks[0]:.1f} GFLOP/s before the runs; "
          f"masked fraction selfsup {frac['selfsup']:.4f}, HF collator {frac['hf']:.4f}", flush=True)

    runs: dict[str, list[dict]] = {m: [] for m in a.methods}
    with tempfile.TemporaryDirectory(prefix="selfsup-bench-") as tmp:
        for rep in range(a.repeats):
            k = rep % len(a.methods)
            order = a.methods[k:] + a.methods[:k]  # rotate who goes first
            res = measure(a, ctx, warmup, order, tmp, rep, probe)
            peaks.append(matmul_peak())
            for m in order:
                runs[m].append(res[m])
                r = res[m]
                print(f"  repeat {rep} {m:<11} {r['tokens_per_s']:>9.0f} tok/s  {r['steps_per_s']:.3f} steps/s"
                      f"  ({r['steps_timed']} steps in {r['seconds_timed']:.1f}s)", flush=True)
    peak_loaded = probe.gflops  # what the machine gave a matmul during the runs (same load as the steps)
    peak = max(max(probe.samples), *peaks)  # the best the hardware did in this run

    summary = {}
    for m, rs in runs.items():
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        sps = statistics.median(r["steps_per_s"] for r in rs)
        summary[m] = {"tokens_per_s": tps, "steps_per_s": sps,
                      "mfu_pct": 100 * tps * flops["useful_flops_per_token"] / (peak * 1e9),
                      "mfu_load_matched_pct": 100 * tps * flops["useful_flops_per_token"] / (peak_loaded * 1e9),
                      "exec_util_pct": 100 * tps * flops["executed_flops_per_token"][m] / (peak * 1e9)}
    base = summary.get("hf-trainer", {}).get("tokens_per_s")
    for m in summary:
        summary[m]["ratio_vs_hf_trainer"] = summary[m]["tokens_per_s"] / base if base else None
    paired = None
    if "hf-trainer" in runs and "selfsup" in runs:
        paired = [s["tokens_per_s"] / h["tokens_per_s"] for s, h in zip(runs["selfsup"], runs["hf-trainer"])]

    print()
    print(f"fp32 matmul peak ({a.threads} threads, {probe.n}^3 products): {peak:.1f} GFLOP/s = best sample of the run; "
          f"{peak_loaded:.1f} GFLOP/s = load-matched (aggregate of {len(probe.samples)} samples taken "
          + ("in turn with the training steps" if a.interleave == "step" else "before each run")
          + "; between repeats: " + ", ".join(f"{p:.0f}" for p in peaks) + ")")
    print(f"useful FLOPs/token: {flops['useful_flops_per_token'] / 1e6:.2f} M  "
          f"(HF executes {flops['executed_flops_per_token']['hf-trainer'] / 1e6:.2f} M)")
    print()
    cols = [("method", 10), ("tokens/s", 9), ("steps/s", 7), ("MFU %", 6), ("MFU % load-matched", 18),
            ("exec %", 6), ("vs HF Trainer", 13)]
    print("| " + " | ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(cols)) + " |")
    print("|" + "|".join("-" * (w + 2) for _, w in cols) + "|")
    for m, s in summary.items():
        ratio = f"{s['ratio_vs_hf_trainer']:.2f}×" if s["ratio_vs_hf_trainer"] else "n/a"
        vals = [m, f"{s['tokens_per_s']:.0f}", f"{s['steps_per_s']:.3f}", f"{s['mfu_pct']:.1f}",
                f"{s['mfu_load_matched_pct']:.1f}", f"{s['exec_util_pct']:.1f}", ratio]
        print("| " + " | ".join(f"{v:<{w}}" if i == 0 else f"{v:>{w}}"
                                for i, (v, (_, w)) in enumerate(zip(vals, cols))) + " |")
    print()
    print("MFU convention: " + flops["convention"])
    headline = None
    if base and "selfsup" in summary:
        headline = summary["selfsup"]["ratio_vs_hf_trainer"]
        print()
        print(f"selfsup / HF Trainer = {headline:.2f}×  (ratio of the medians over {a.repeats} repeats; per-repeat "
              f"ratios " + ", ".join(f"{r:.2f}" for r in paired) + f", median {statistics.median(paired):.2f})")

    info["loadavg_end"] = os.getloadavg()
    result = {"command": "python bench/mlm_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "args": {k: v for k, v in vars(a).items() if k != "out"}, "warmup_steps": warmup, "machine": info,
              "peak_gflops": peak, "peak_gflops_load_matched": peak_loaded, "peak_gflops_in_run_samples": probe.samples,
              "peak_gflops_between_repeats": peaks, "flops": flops, "summary": summary,
              "selfsup_over_hf_trainer": headline, "paired_ratios": paired, "runs": runs}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
