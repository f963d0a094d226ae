"""Data-parallel image pretraining computes the single-process run: for every image objective a 2-process DDP
run (Lightning, gloo, CPU, `train.devices=2`, launched as torchrun would) of 3 steps logs the same losses and
ends with the same weights as 1 process with the same global batch. What makes it so, checked piece by piece:
a rank's augmentation parameters are its rows of those drawn for the global batch (a slice of the views is the
view of the slice); BatchNorm on CPU processes normalizes over the global batch (`GlobalBatchNorm` equals
BatchNorm of the whole batch: outputs, running statistics, gradients); MoCo's shuffle across ranks is undone
by the unshuffle, and MoCo without synchronized BatchNorm trains with its key batch shuffled across ranks."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from selfsup.engine.logs import read_logged
from test_distributed import free_port

WORLD, STEPS = 2, 3
RESNET = ["model.embedding_size=8", "model.hidden_sizes=[8,16]", "model.depths=[1,1]"]
COMMON = ["data.image_size=8", "train.batch_size=16", "train.threads=1", "train.eval_every=1000",
          "train.checkpoint_every=1000", "train.eval_batches=1", "train.log_every=1", "train.warmup_steps=0",
          "train.accelerator=cpu", "train.eps=1e-4"]
# eps: Adam divides by sqrt(v) + eps, which turns float-rounding noise in tiny gradients into full-size steps
METHODS = {
    "simclr": RESNET + ["objective.projection_hidden=16", "objective.projection_dim=8"],
    "moco": RESNET + ["objective.queue_size=32", "objective.projection_hidden=16", "objective.projection_dim=8"],
    "byol": RESNET + ["objective.projection_hidden=16", "objective.projection_dim=8", "objective.predictor_hidden=16"],
    "simsiam": RESNET + ["objective.projection_dim=8", "objective.predictor_hidden=4"],
    "barlow_twins": RESNET + ["objective.projection_hidden=16", "objective.projection_dim=8"],
    "vicreg": RESNET + ["objective.projection_hidden=16", "objective.projection_dim=8"],
    "deepcluster": RESNET + ["objective.clusters=5", "objective.pca_dim=4", "objective.kmeans_iters=3"],
    "rotation": RESNET,
    "context": RESNET + ["objective.gap=0", "objective.head_hidden=16"],
    "igpt": ["model.hidden_size=16", "model.num_layers=1", "model.num_heads=2", "objective.clusters=4"],
}


def run(method: str, out, devices: int, extra: tuple[str, ...] = ()) -> None:
    from selfsup import pretrain

    pretrain(method, ["sklearn:digits"], out, max_steps=STEPS, progress=False, quiet=True,
             overrides=COMMON + METHODS[method] + [f"train.devices={devices}", *extra])


def shuffle_and_batchnorm(rank: int) -> dict[str, torch.Tensor]:
    """In a 2-process group: MoCo's shuffle and unshuffle, and GlobalBatchNorm, on this rank's half of a batch."""
    from selfsup.distributed import convert_global_batchnorm, shuffle_across_ranks, unshuffle_across_ranks

    x = torch.arange(12.0).view(6, 2) + 100 * rank
    shuffled, order = shuffle_across_ranks(x, torch.Generator().manual_seed(3))
    back = unshuffle_across_ranks(shuffled * 10, order)
    torch.manual_seed(0)
    bn = convert_global_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3)))
    inputs = torch.randn(8, 2, 4, 4)[rank * 4:(rank + 1) * 4]
    ddp = torch.nn.parallel.DistributedDataParallel(bn)
    out = ddp(inputs)
    (out * torch.arange(out.numel()).view_as(out).float().cos()).sum().backward()  # a loss on this rank's rows
    return {"shuffled": shuffled, "order": order, "back": back, "out": out.detach(),
            "running_mean": bn[1].running_mean, "running_var": bn[1].running_var,
            **{f"grad.{n}": p.grad for n, p in bn.named_parameters()}}


def worker(rank: int, port: int, root: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")  # Lightning then launches nothing (as under torchrun)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.save(shuffle_and_batchnorm(rank), os.path.join(root, f"pieces-{rank}.pt"))
    for method in METHODS:
        run(method, os.path.join(root, f"{method}-2"), WORLD)
    run("moco", os.path.join(root, "moco-shuffled"), WORLD, ("train.sync_batchnorm=false",))
    dist.barrier()  # neither rank tears the group down while the other still talks to it
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every method's 1-process run, then (forked, so nothing is imported again) its 2-process run."""
    root = tmp_path_factory.mktemp("ddp-images")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("selfsup.report.figures.plot_training_curves", lambda *a, **k: None)  # not checked here
        for method in METHODS:
            run(method, root / f"{method}-1", 1)
        mp.start_processes(worker, args=(free_port(), str(root)), nprocs=WORLD, join=True, start_method="fork")
    return root


def weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_processes_equal_one_process_with_the_same_global_batch(method, runs):
    one, two = runs / f"{method}-1", runs / f"{method}-2"
    losses = {tag: [row["loss"] for row in read_logged(out) if "loss" in row] for tag, out in (("1", one), ("2", two))}
    assert len(losses["1"]) == STEPS and losses["2"] == pytest.approx(losses["1"], rel=1e-4, abs=1e-5), losses
    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys()
    for name, value in w1.items():
        torch.testing.assert_close(w2[name], value, rtol=1e-3, atol=1e-4, msg=f"{method}: {name}")


def test_moco_without_synchronized_batchnorm_trains_with_the_key_batch_shuffled_across_ranks(runs):
    out = runs / "moco-shuffled"
    losses = [row["loss"] for row in read_logged(out) if "loss" in row]
    assert len(losses) == STEPS and all(map(math.isfinite, losses))
    state = weights(out)
    assert int(state["objective.queue_ptr"]) == STEPS * 16 % 32  # every rank enqueued the global batch's keys
    # rank-local BatchNorm statistics: not the single-process run (that needs train.sync_batchnorm)
    assert losses != pytest.approx([row["loss"] for row in read_logged(runs / "moco-1") if "loss" in row])


def test_shuffle_unshuffle_and_global_batchnorm_equal_one_process(runs):
    ranks = [torch.load(runs / f"pieces-{r}.pt", weights_only=True) for r in range(WORLD)]
    # MoCo's shuffle: each rank holds 6 rows of the global 12 in one shared random order; unshuffle inverts it
    full = torch.cat([torch.arange(12.0).view(6, 2) + 100 * r for r in range(WORLD)])
    order = ranks[0]["order"]
    assert torch.equal(order, ranks[1]["order"]) and not torch.equal(order, torch.arange(12))
    assert torch.equal(torch.cat([r["shuffled"] for r in ranks]), full[order])
    for r, got in enumerate(ranks):
        assert torch.equal(got["back"], 10 * full[r * 6:(r + 1) * 6])
    # GlobalBatchNorm on two halves = BatchNorm on the whole batch: outputs, running stats, gradients
    torch.manual_seed(0)
    bn = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    out = bn(torch.randn(8, 2, 4, 4))
    weights_ = torch.cat([torch.arange(out[:4].numel()).view_as(out[:4]).float().cos()] * 2)
    (out * weights_).sum().backward()
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out.detach())
    for r in ranks:
        torch.testing.assert_close(r["running_mean"], bn[1].running_mean)
        torch.testing.assert_close(r["running_var"], bn[1].running_var)
        for name, p in bn.named_parameters():  # DDP averages the two ranks' gradients of their summed loss
            torch.testing.assert_close(r[f"grad.{name}"] * WORLD, p.grad, rtol=1e-4, atol=1e-5)


def test_a_slice_of_the_global_views_is_the_view_of_the_slice():
    from selfsup.pretext.views import (apply_view_params, draw_view_params, simclr_pipeline, slice_view_params,
                                       view_seed)

    import kornia.augmentation as K

    pipelines = [simclr_pipeline(16, 1), simclr_pipeline(16, 3),
                 torch.nn.Sequential(K.RandomCrop((16, 16), padding=2, padding_mode="reflect"))]
    for pipeline in pipelines:
        channels = 3 if len(pipeline) == 5 else 1
        x = torch.rand(8, channels, 16, 16)
        params = draw_view_params(pipeline, tuple(x.shape), view_seed(0, 5, 1))
        whole = apply_view_params(pipeline, x, params)
        assert not torch.allclose(whole, x)
        for start, stop in ((0, 4), (4, 8), (2, 7), (0, 8)):
            part = apply_view_params(pipeline, x[start:stop], slice_view_params(params, start, stop))
            torch.testing.assert_close(part, whole[start:stop], rtol=1e-5, atol=1e-6)
        again = draw_view_params(pipeline, tuple(x.shape), view_seed(0, 5, 1))
        assert all(torch.equal(a[k], b[k]) for a, b in zip(params, again) for k in a)
        other = draw_view_params(pipeline, tuple(x.shape), view_seed(0, 6, 1))
        assert any(not torch.equal(a[k], b[k]) for a, b in zip(params, other) for k in a if k != "forward_input_shape")
