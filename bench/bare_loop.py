"""The baseline a user would write instead of `selfsup pretrain`: the same objective (same batches, same
AdamW + schedule, same gradient clipping) trained by a hand-written PyTorch loop, no Lightning. The image and
speech benchmarks divide selfsup's throughput by this one's."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch


def bare_loop_per_s(method: str, overrides: list[str], data: list[str], steps: int, warm: int = 3,
                    statistic: str = "mean", on_step_end: Callable[[], None] | None = None) -> float:
    """Work items per second (the objective's count key: images, seconds of audio) of a plain loop:
    make_batch -> forward -> backward -> clip -> AdamW step -> schedule -> on_step_end. `statistic`: "mean"
    (all work over all time after `warm` steps) or "median" (of the per-step rates). `on_step_end`, when given, is
called after every optimizer step (a lock-step clock, bench/lockstep.py)."""
    from selfsup.engine.module import lr_lambda, param_groups
    from selfsup.engine.stream import ExampleRngs
    from selfsup.recipes import load_recipe
    from selfsup.registry import get_objective

    r = load_recipe(method, overrides)
    cls = get_objective(method)
    prepared = cls.prepare(r, [str(d) for d in data])
    torch.manual_seed(r.train.seed)
    model = cls(r, prepared).train()
    c = r.train
    opt = torch.optim.AdamW(param_groups(model, c.weight_decay), lr=c.lr, betas=tuple(c.betas), eps=c.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(c.schedule, c.warmup_steps, c.max_steps))
    n, b = len(prepared.train), c.batch_size
    perm = np.random.default_rng(0).permutation(n)
    started, work, per_step = 0.0, 0.0, []
    for step in range(steps + warm):
        if step == warm:
            started, work = time.perf_counter(), 0.0
        step_started = time.perf_counter()
        pos = [(step * b + i) for i in range(b)]
        batch = model.make_batch([prepared.train[int(perm[p % n])] for p in pos],
                                 ExampleRngs(c.seed, 0, pos))
        torch.manual_seed(step)
        out = model(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        opt.step()
        sched.step()
        model.on_step_end(step + 1, c.max_steps)
        items = float(out.get(cls.count_key, b))
        work += items
        if on_step_end is not None:
            on_step_end()
        if step >= warm:
            per_step.append(items / (time.perf_counter() - step_started))
    return float(np.median(per_step)) if statistic == "median" else work / (time.perf_counter() - started)
