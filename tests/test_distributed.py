"""Data parallelism optimizes the single-process objective: under 2-process DDP (gloo, CPU) the batch-level
losses on gathered embeddings (NT-Xent, Barlow Twins, VICReg — what the two-view image and speech methods
call) give the same loss and the same parameter gradients as one process on the global batch, where the
rank-local losses do not; MoCo's queue receives every rank's keys in the single-process order."""
from __future__ import annotations

import functools

import torch
import torch.multiprocessing as mp

from selfsup.losses import barlow_twins_loss, nt_xent, vicreg_loss

GLOBAL, DIM_IN, DIM_OUT, WORLD = 8, 6, 5, 2
LOSSES = {"nt_xent": functools.partial(nt_xent, temperature=0.5), "barlow_twins": barlow_twins_loss,
          "vicreg": lambda a, b: vicreg_loss(a, b)[0]}


def data() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Linear(DIM_IN, DIM_OUT), torch.randn(GLOBAL, DIM_IN), torch.randn(GLOBAL, DIM_IN)


def one_process(name: str) -> tuple[float, list[torch.Tensor]]:
    model, x1, x2 = data()
    loss = LOSSES[name](model(x1), model(x2))
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters()]


def worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from selfsup.distributed import gather, gather_detached
    from selfsup.objectives.moco import enqueue

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    results = {}
    rows = slice(rank * GLOBAL // WORLD, (rank + 1) * GLOBAL // WORLD)  # the engine's contiguous rank slices
    for name, fn in LOSSES.items():
        for gathered in (True, False):
            model, x1, x2 = data()
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            z1, z2 = ddp(x1[rows]), ddp(x2[rows])
            loss = fn(gather(z1), gather(z2)) if gathered else fn(z1, z2)
            loss.backward()
            results[name, gathered] = (float(loss.detach()), [p.grad.clone() for p in model.parameters()])
    queue, ptr = torch.zeros(12, DIM_OUT), torch.zeros((), dtype=torch.long)
    keys = data()[1][:, :DIM_OUT]
    enqueue(queue, ptr, gather_detached(keys[rows]))
    results["queue"] = (queue, int(ptr))
    torch.save(results, f"{out}-{rank}.pt")
    dist.barrier()  # neither rank tears the group down while the other still talks to it
    dist.destroy_process_group()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_losses_and_gradients_equal_one_process(tmp_path):
    out = str(tmp_path / "rank")
    # a TCP store, as Lightning uses (CI once saw SIGABRT at teardown with a file:// store)
    mp.spawn(worker, args=(f"tcp://127.0.0.1:{free_port()}", out), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}-{r}.pt", weights_only=True) for r in range(WORLD)]
    for name in LOSSES:
        loss, grads = one_process(name)
        for rank in ranks:
            for gathered in (True, False):
                got_loss, got_grads = rank[name, gathered]
                same = abs(got_loss - loss) < 1e-5 and all(
                    torch.allclose(g, ref, rtol=1e-4, atol=1e-6) for g, ref in zip(got_grads, grads))
                assert same == gathered, (name, gathered, got_loss, loss)  # local batch statistics differ
    from selfsup.objectives.moco import enqueue

    queue, ptr = torch.zeros(12, DIM_OUT), torch.zeros((), dtype=torch.long)
    enqueue(queue, ptr, data()[1][:, :DIM_OUT])
    for rank in ranks:
        assert torch.equal(rank["queue"][0], queue) and rank["queue"][1] == int(ptr) == GLOBAL


def test_gather_is_the_identity_in_one_process():
    from selfsup.distributed import gather, gather_detached, rank, world_size

    x = torch.randn(3, 2, requires_grad=True)
    assert gather(x) is x and gather_detached(x) is x and world_size() == 1 and rank() == 0
