"""`selfsup pretrain`: recipe + data -> a run folder (config.yaml, checkpoints/, logs/, model/, metrics.json).

Order matters for the bad-input rules: the recipe is validated and the data read, tokenized and cached
before the output folder is touched; an existing folder is never overwritten (only `--resume` continues it).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from selfsup.console import info
from selfsup.engine.logs import read_logged
from selfsup.errors import SelfsupError
from selfsup.fileio import atomic_dir, atomic_write_json, atomic_write_text
from selfsup.recipes import Recipe, load_recipe

CHECKPOINT = "checkpoints/last.ckpt"


def _interrupted_start(out: Path) -> bool:
    """A run killed before its first checkpoint: its config (and logs), no checkpoint, no exported model."""
    return out.is_dir() and (out / "config.yaml").is_file() and not (out / CHECKPOINT).is_file() \
        and {p.name for p in out.iterdir()} <= {"config.yaml", "logs", "checkpoints"}


def _clean_stale(out: Path, resume: bool) -> None:
    """Temp files of a write that a kill interrupted go; a run killed before its first checkpoint restarts."""
    import shutil

    checkpoint_tmps = list((out / "checkpoints").glob(".*")) if (out / "checkpoints").is_dir() else []
    for tmp in checkpoint_tmps + list(out.glob(".*.tmp.*")):  # `.model.tmp.*`: an export (fileio's atomic folder)
        (shutil.rmtree if tmp.is_dir() else Path.unlink)(tmp)
    if _interrupted_start(out):
        info(f"{out} holds a run killed before its first checkpoint; starting it again")
        for name in ("logs", "checkpoints"):
            shutil.rmtree(out / name, ignore_errors=True)
        if not resume:
            (out / "config.yaml").unlink()


def _check_out(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "config.yaml").is_file():
            raise SelfsupError(f"{out}: --resume needs a selfsup run folder (no config.yaml there)")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelfsupError(f"{out}: already exists and is not empty; pass --resume to continue that run, "
                           "or choose another --out")


def _with_flags(overrides: list[str] | None, max_steps: int | None, seed: int | None) -> list[str]:
    """`--set` items plus the ones `--max-steps` and `--seed` stand for (they win: they come last)."""
    out = list(overrides or [])
    if max_steps is not None:
        out.append(f"train.max_steps={int(max_steps)}")
    if seed is not None:
        out.append(f"train.seed={int(seed)}")
    return out


def _fit_warmup(r: Recipe) -> None:
    if r.train.warmup_steps > r.train.max_steps:  # a --max-steps below the recipe's warm-up: shorten it
        r.train.warmup_steps = r.train.max_steps // 10


def resolved_recipe(recipe: str | dict | Recipe, out: str | os.PathLike, *, max_steps: int | None = None,
                    seed: int | None = None, overrides: list[str] | None = None, resume: bool = False) -> Recipe:
    """The recipe `pretrain` with these arguments would train (`--print-config`): reads recipe files only (with
    `resume`, the run's config.yaml), never the data, and writes nothing."""
    out = Path(out)
    r = _resolve(recipe, out, resume, _with_flags(overrides, max_steps, seed))
    _fit_warmup(r)
    return r


def _resolve(recipe: str | dict | Recipe, out: Path, resume: bool, overrides: list[str]) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if resume and (out / "config.yaml").is_file():
        return load_recipe(_saved_config(out), overrides)
    return load_recipe(recipe, overrides)


def _saved_config(out: Path) -> dict:
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise SelfsupError(f"{out / 'config.yaml'}: not a selfsup recipe (cannot resume)")
    return saved


def pretrain(recipe: str | dict | Recipe, data: list[str] | str, out: str | os.PathLike, *,
             max_steps: int | None = None, seed: int | None = None, overrides: list[str] | None = None,
             resume: bool = False, callbacks: list | None = None, progress: bool = True,
             quiet: bool = False, trust_remote_code: bool = False) -> dict[str, Any]:
    """Train `recipe` on `data` into `out`; returns the dict written to `out/metrics.json`.
    `trust_remote_code=True` (the CLI's `--trust-remote-code`) is the only way to run a hub model's or
    tokenizer's own code: a recipe file, a run's config.yaml or `--set` cannot switch it on."""
    out = Path(out)
    sources = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    sources = [str(s) for s in sources]
    overrides = _with_flags(overrides, max_steps, seed)
    lock = None
    if not _launched_child():  # DDP children re-run our command after rank 0 has created and locked `out`
        from selfsup.fileio import try_lock

        lock = try_lock(out.parent / f".{out.name}.lock")
        if lock is None:
            raise SelfsupError(f"{out}: another selfsup run is writing it (lock {out.parent / f'.{out.name}.lock'})")
        if out.is_dir():
            _clean_stale(out, resume)
        _check_out(out, resume)
    try:
        return _run(recipe, sources, out, resume, overrides, callbacks, progress, quiet, trust_remote_code)
    finally:
        if lock is not None:
            lock.close()
            (out.parent / f".{out.name}.lock").unlink(missing_ok=True)


# what a resumed run can honour: the restored optimizer, schedule and data stream fix everything else
RESUMABLE_KEYS = {"train.max_steps", "train.log_every", "train.eval_every", "train.eval_batches",
                  "train.checkpoint_every", "train.export_every", "train.num_workers", "train.threads", "train.devices", "train.num_nodes",
                  "train.accelerator", "train.strategy", "train.compile"}


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_resume(out: Path, r: Recipe, overrides_given: bool = True) -> int:
    """Before anything is written: the checkpoint loads safely, and (when the recipe came from the run's
    config.yaml plus overrides) no override changes what it restores; returns the checkpoint's step."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before refusing it
            warnings.simplefilter("ignore")
            state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a pickled, truncated or foreign file: never unpickled, one line
        raise SelfsupError(f"{out / CHECKPOINT}: cannot resume from it (not a checkpoint that loads with "
                           f"weights_only=True: {type(e).__name__})") from None
    if overrides_given:
        saved = _flat(load_recipe(_saved_config(out)).to_dict())
        for key, value in _flat(r.to_dict()).items():
            if key not in RESUMABLE_KEYS and saved.get(key) != value:
                raise SelfsupError(f"--set {key}={value}: the resumed run restores {key}={saved.get(key)} from "
                                   "its checkpoint (optimizer, schedule, model, data); start a new run to change it")
    return int(state["global_step"])


REMOTE_CODE_KEYS = (("model",), ("data", "tokenizer"))  # the sections that carry a trust_remote_code key


def check_remote_code(r: Recipe, trusted: bool) -> None:
    """Refuse a recipe that asks to run remote code without the caller's explicit flag; with it, allow it."""
    for path in REMOTE_CODE_KEYS:
        section = r
        for name in path:
            section = getattr(section, name, None)
        if section is None or not hasattr(section, "trust_remote_code"):
            continue
        key = ".".join(path) + ".trust_remote_code"
        if section.trust_remote_code and not trusted:
            raise SelfsupError(f"{key}: true in the recipe, but running a model's own code needs the command-line "
                               "flag --trust-remote-code (a recipe file or --set cannot switch it on)")


def _run(recipe, sources: list[str], out: Path, resume: bool, overrides: list[str], callbacks: list | None,
         progress: bool, quiet: bool, trust_remote_code: bool = False) -> dict[str, Any]:
    restart = resume and (out / "config.yaml").is_file() and not (out / CHECKPOINT).is_file()
    r = _resolve(recipe, out, resume, overrides)
    check_remote_code(r, trust_remote_code)
    start_step = check_resume(out, r, not isinstance(recipe, Recipe)) if resume and not restart else 0
    _fit_warmup(r)
    if restart:  # --resume of a run killed before its first checkpoint: it starts from step 0
        resume = False

    from selfsup.registry import get_objective

    objective_cls = get_objective(r.name)
    prepared = objective_cls.prepare(r, sources)  # reads + validates data; nothing written to `out` yet
    if r.data is not None and getattr(r.data, "streaming", False) and resume:
        from selfsup.engine.streaming import check_stream_resume

        check_stream_resume(out / CHECKPOINT, _world(r.train), r.train.num_workers)
    return _train(r, objective_cls, prepared, out, resume, callbacks or [], progress, quiet, start_step, sources)


def _launched_child() -> bool:
    """True in every process but global rank 0: the extra processes Lightning's DDP launcher starts (they re-run
    our command line), and ranks > 0 that torchrun (RANK) or SLURM's srun (SLURM_PROCID) started."""
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def _world(cfg) -> int:
    return cfg.devices * cfg.num_nodes


def _card(r: Recipe, objective, sources: list, tmp: Path, final: Path, step: int,
          metrics: dict[str, Any] | None = None) -> None:
    """The model card of an export: recipe, method (its docstring's first line names the paper), data, step."""
    from selfsup.report.cards import write_model_card

    doc = (type(objective).__doc__ or sys.modules[type(objective).__module__].__doc__ or "").strip().split("\n\n")[0]
    write_model_card(tmp, location=final, title=f"{r.name}, pretrained with selfsup", tags=(r.name,),
                     summary=" ".join(doc.split()) or f"Pretrained with the selfsup recipe {r.name}.",
                     facts={"recipe": r.name, "model type": getattr(r.model, "type", None),
                            "parameters": sum(p.numel() for p in objective.parameters()), "optimizer steps": step,
                            "data": [str(s) for s in sources], "seed": r.train.seed},
                     metrics=metrics)


def _train(r: Recipe, objective_cls, prepared, out: Path, resume: bool, callbacks: list, progress: bool,
           quiet: bool, start_step: int = 0, sources: list | None = None) -> dict[str, Any]:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from selfsup.console import show_progress
    from selfsup.engine.checkpoint import AtomicCheckpointIO
    from selfsup.engine.exports import ExportEvery
    from selfsup.loggers import make_loggers
    from selfsup.engine.module import GlobalBatchNormSync, PretrainModule, quiet_lightning, resolve_precision
    from selfsup.engine.progress import StepProgress
    from selfsup.engine.stream import HELDOUT, TRAIN, StepBatches, make_loader

    c = r.train
    world = _world(c)
    progress = show_progress(progress and not quiet)
    per_device, rem = divmod(c.batch_size, world * c.accumulate)
    if rem or per_device == 0:
        raise SelfsupError(f"train.batch_size: {c.batch_size} must be a multiple of devices x num_nodes x "
                           f"accumulate = {world * c.accumulate}")
    if c.strategy == "fsdp" and (not torch.cuda.is_available() or c.accelerator in ("cpu", "mps")):
        raise SelfsupError("train.strategy: fsdp shards the model over CUDA GPUs, and there are none here; use ddp")
    if c.strategy == "fsdp" and c.export_every:
        raise SelfsupError("train.export_every: not with train.strategy=fsdp (the live weights are sharded); "
                           "the final export and checkpoints/last.ckpt hold the full weights")
    accelerator = c.accelerator
    if c.threads:
        torch.set_num_threads(c.threads)
    elif world > 1 and accelerator in ("cpu", "auto") and not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // c.devices))
    L.seed_everything(c.seed, workers=True, verbose=False)
    quiet_lightning()

    objective = objective_cls(r, prepared)
    stream = None
    if getattr(r.data, "streaming", False):  # readers over shards instead of the step-indexed sampler
        from selfsup.engine.streaming import stream_loader

        stream = stream_loader(objective, prepared.train, per_device, world, c.num_workers, c.seed)
    if c.compile:
        objective.forward = torch.compile(objective.forward)
    module = PretrainModule(objective, c, out / CHECKPOINT)

    out.mkdir(parents=True, exist_ok=True)
    if not _launched_child():
        atomic_write_text(out / "config.yaml", yaml.safe_dump(r.to_dict(), sort_keys=False))
    attempt = len(list((out / "logs").glob("attempt-*"))) if (out / "logs").is_dir() else 0

    trainer_box: dict[str, Any] = {}

    def start_micro() -> int:
        t = trainer_box.get("trainer")
        return 0 if t is None else t.global_step * c.accumulate

    strategy = c.strategy
    if strategy == "auto" and world > 1:
        strategy = "ddp"
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    cpu_sync_bn = [GlobalBatchNormSync()] if c.sync_batchnorm and world > 1 and not on_gpu else []  # torch's is GPU-only
    exports = ExportEvery(objective, out / "exports", c.export_every,
                          card=lambda tmp, final, step: _card(r, objective, sources or [], tmp, final, step)) \
        if c.export_every else None
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", every_n_train_steps=c.checkpoint_every,
                           save_top_k=1, save_last=False, enable_version_counter=False)
    trainer = L.Trainer(
        max_steps=c.max_steps, accelerator=accelerator, devices=c.devices, num_nodes=c.num_nodes,
        strategy=strategy, precision=resolve_precision(c.precision, accelerator),
        sync_batchnorm=bool(c.sync_batchnorm and world > 1 and on_gpu),
        gradient_clip_val=c.grad_clip or None, accumulate_grad_batches=c.accumulate,
        logger=make_loggers(c.logger, out, f"attempt-{attempt}", run_name=r.name),
        callbacks=[ckpt, *([StepProgress(c.log_every)] if progress else []),
                   *([exports] if exports else []), *([stream[1]] if stream else []), *objective.callbacks(),
                   *callbacks],
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=min(c.log_every, c.max_steps),
        val_check_interval=c.eval_every * c.accumulate, check_val_every_n_epoch=None,
        limit_val_batches=c.eval_batches, num_sanity_val_steps=0, use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO(), *cpu_sync_bn], default_root_dir=str(out))
    trainer_box["trainer"] = trainer
    rank = trainer.global_rank
    if stream:
        stream[0].dataset.rank = rank
    train_loader = stream[0] if stream else make_loader(objective, prepared.train,
                               StepBatches(len(prepared.train), per_device, world, rank, c.seed, start=start_micro),
                               c.seed, TRAIN, c.num_workers)
    heldout_loader = None
    eval_batch = min(per_device, len(prepared.heldout) // world)
    if eval_batch > 0:
        n_eval = max(1, min(c.eval_batches, len(prepared.heldout) // (eval_batch * world)))
        heldout_loader = make_loader(objective, prepared.heldout,
                                     StepBatches(len(prepared.heldout), eval_batch, world, rank, c.seed,
                                                 shuffle=False, limit=n_eval), c.seed, HELDOUT)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Lightning's progress bars write to stdout: results only there
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=heldout_loader,
                    ckpt_path=str(out / CHECKPOINT) if resume else None, weights_only=True)
    seconds = time.perf_counter() - started
    trainer.save_checkpoint(str(out / CHECKPOINT))  # the final state, so `--resume --max-steps N` can extend
    final: dict[str, float] = {}
    if heldout_loader is not None:
        with contextlib.redirect_stdout(sys.stderr):
            res = trainer.validate(module, dataloaders=heldout_loader, verbose=False)
        final.update({k: float(v) for k, v in res[0].items()})
        final.update(objective.heldout_summary(final))
    if not trainer.is_global_zero:
        return {}
    if c.strategy == "fsdp":  # FSDP leaves the live weights sharded: export the full ones the checkpoint holds
        objective = _unsharded(objective_cls, r, prepared, out / CHECKPOINT)
    metrics = _summarize(r, out, objective, trainer, seconds, trainer.global_step - start_step, final)
    with atomic_dir(out / "model", replace=True) as tmp:
        objective.export(tmp)
        _card(r, objective, sources or [], tmp, out / "model", trainer.global_step,
              {k: v for k, v in metrics.items() if k.startswith(("train_loss", "heldout_")) and k != "train_loss_first"})
    if exports is not None:
        exports.export(trainer.global_step)
    from selfsup.report.figures import plot_training_curves

    plot_training_curves(read_logged(out), out / "loss_curve.png",
                         title=f"{r.name} on a {getattr(r.model, 'type', '')} backbone, {trainer.global_step} steps — {out.name}")
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _unsharded(objective_cls, r: Recipe, prepared, checkpoint: Path):
    """A fresh objective holding the checkpoint's full (gathered) weights."""
    import torch

    fresh = objective_cls(r, prepared)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    fresh.load_state_dict({k.removeprefix("objective."): v for k, v in state.items()})
    return fresh


def _summarize(r: Recipe, out: Path, objective, trainer, seconds: float, steps_run: int,
               final: dict[str, float]) -> dict[str, Any]:
    rows = [row for row in read_logged(out) if "loss" in row]
    tail = rows[-max(1, len(rows) // 10):] if rows else []
    n_params = sum(p.numel() for p in objective.parameters())
    rates = [row[k] for row in rows[len(rows) // 5:] for k in row if k.endswith("_per_s")]
    metrics: dict[str, Any] = {
        "objective": r.name, "model_type": getattr(r.model, "type", None), "steps": int(trainer.global_step),
        "train_loss": float(sum(x["loss"] for x in tail) / len(tail)) if tail else None,
        "train_loss_first": float(rows[0]["loss"]) if rows else None,
        "parameters": int(n_params), "train_seconds_this_attempt": round(seconds, 2),
        "steps_this_attempt": int(steps_run),
        "throughput_per_s": round(sorted(rates)[len(rates) // 2], 1) if rates else None,
        "throughput_unit": objective.count_key.removeprefix("n_"),
    }
    for k in sorted(tail[-1]) if tail else []:
        if k not in ("loss", "step", "epoch", "lr") and not k.endswith("_per_s"):
            metrics[f"train_{k}"] = float(sum(x.get(k, 0.0) for x in tail) / len(tail))
    metrics.update(final)
    return json.loads(json.dumps(metrics))
