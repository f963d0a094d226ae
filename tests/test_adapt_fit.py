"""The one fitting loop (`selfsup.adapt.core.fit`) on the Lightning engine: the per-rank batches partition the
1-process batches, a 2-process DDP run equals a 1-process run of the same global batch (toy model and a real
fine-tune), gradient accumulation equals the big batch, the best epoch's weights are kept, the NaN guard
stops a diverging run, and option mistakes are one-line errors naming the key."""
from __future__ import annotations

import json

import pytest
import torch

from selfsup.adapt.core.fit import EpochBatches, fit
from selfsup.adapt.core.options import FinetuneConfig, split_overrides
from selfsup.adapt.core.run import finetune
from selfsup.adapt.registry import get_method, option_owners
from selfsup.data.austen import austen_novels_task
from selfsup.errors import SelfsupError, TrainingDiverged
from test_adapt_heads import make_checkpoint


def _toy(n: int = 64):
    torch.manual_seed(0)
    x = torch.randn(n, 4)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y, [{"x": x[i], "y": y[i]} for i in range(n)]


def _collate(chunk, device):
    return {"x": torch.stack([c["x"] for c in chunk]).to(device), "y": torch.stack([c["y"] for c in chunk]).to(device)}


def _loss(m, b):
    return torch.nn.functional.cross_entropy(m(b["x"]), b["y"])


def _train(cfg: FinetuneConfig, eval_fn=None, loss=_loss):
    x, y, feats = _toy()
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    eval_fn = eval_fn or (lambda m: {"accuracy": float((m(x).argmax(-1) == y).float().mean())})
    result = fit(model, feats, cfg, lr=0.05, seed=0, loss_fn=loss, collate_fn=_collate, eval_fn=eval_fn,
                 main_metric="accuracy")
    return result, model


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_rank_batches_partition_the_single_process_batches(monkeypatch):
    one = list(EpochBatches(50, 16, 1, seed=3))
    assert [len(b) for b in one] == [16, 16, 16, 2]
    assert sorted(i for b in one for i in b) == list(range(50))  # every example once per epoch
    assert list(EpochBatches(50, 16, 1, seed=3)) == one  # a pure function of (seed, epoch)
    again = EpochBatches(50, 16, 1, seed=3)
    list(again)
    assert list(again) != one  # the next epoch is another permutation

    def rank_batches(world: int, rank: int, accumulate: int):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: world)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda: rank)
        return list(EpochBatches(48, 16, accumulate, seed=3))

    single = list(EpochBatches(48, 16, 1, seed=3))
    for world, acc in ((2, 1), (2, 2), (1, 4)):
        per_rank = [rank_batches(world, r, acc) for r in range(world)]
        monkeypatch.undo()
        for step, full in enumerate(single):
            micro = [i for r in range(world) for i in sum(per_rank[r][step * acc:(step + 1) * acc], [])]
            assert sorted(micro) == sorted(full)  # one optimizer step sees exactly the 1-process batch
            assert len({len(b) for r in range(world) for b in per_rank[r][step * acc:(step + 1) * acc]}) == 1


def test_two_processes_equal_one_process_of_the_same_global_batch():
    one, m1 = _train(FinetuneConfig(batch_size=16, epochs=3, threads=1))
    two, m2 = _train(FinetuneConfig(batch_size=16, epochs=3, threads=1, devices=2))
    assert _max_diff(m1, m2) < 1e-5
    assert [r["train_loss"] for r in two.history] == pytest.approx([r["train_loss"] for r in one.history], abs=1e-5)
    assert two.eval == one.eval and two.steps == one.steps == 12


def test_gradient_accumulation_equals_the_big_batch():
    one, m1 = _train(FinetuneConfig(batch_size=16, epochs=2, threads=1))
    acc, m2 = _train(FinetuneConfig(batch_size=16, epochs=2, threads=1, accumulate=4))
    assert _max_diff(m1, m2) < 1e-5 and acc.steps == one.steps


def test_the_best_epoch_is_kept():
    scores = iter([0.2, 0.9, 0.5])
    snapshots = []

    def eval_fn(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"accuracy": next(scores), "loss": 1.0}

    result, model = _train(FinetuneConfig(batch_size=16, epochs=3, threads=1), eval_fn=eval_fn)
    assert result.best_epoch == 2 and result.eval["accuracy"] == 0.9
    assert [r["accuracy"] for r in result.history] == [0.2, 0.9, 0.5]  # the history shows every epoch
    assert all(torch.equal(v, snapshots[1][k]) for k, v in model.state_dict().items())
    scores = iter([0.2, 0.9, 0.5])
    last, model = _train(FinetuneConfig(batch_size=16, epochs=3, threads=1, keep_best=False),
                         eval_fn=lambda m: {"accuracy": next(scores)})
    assert last.best_epoch is None and last.eval["accuracy"] == 0.5


def test_the_nan_guard_stops_a_diverging_run():
    with pytest.raises(TrainingDiverged, match="loss is nan at step 1"):
        _train(FinetuneConfig(batch_size=16, epochs=1, threads=1), loss=lambda m, b: _loss(m, b) * float("nan"))


def test_option_mistakes_name_the_key():
    lora = get_method("lora")
    with pytest.raises(SelfsupError, match="lora_r: only for a model fine-tuned with --method lora"):
        split_overrides(["lora_r=4"], own=(get_method("full").Options,), owners=option_owners())
    with pytest.raises(SelfsupError, match="lora_r: must be >= 1"):
        split_overrides(["lora_r=0"], own=(lora.Options,))
    with pytest.raises(SelfsupError, match="no_such_key: unknown key"):
        split_overrides(["no_such_key=1"], own=(lora.Options,))
    with pytest.raises(SelfsupError, match="batch_size: 30 must be a multiple of devices"):
        split_overrides(["batch_size=30", "devices=4"])
    cfg, (opts,) = split_overrides(["lora_r=4", "lr=0.01"], own=(lora.Options,))
    assert opts.lora_r == 4 and cfg.lr == 0.01


def test_a_two_process_finetune_equals_one_process(tmp_path, persuasion):
    texts = [t for t in persuasion.read_text().split("\n\n")[:200] if t.strip()]
    bert = make_checkpoint(tmp_path / "ck", "bert", texts)
    task = austen_novels_task(tmp_path / "task", train_per_class=16, eval_per_class=8,
                              novels=["persuasion", "northangerabbey"])
    sets = ["threads=1", "max_length=32", "batch_size=8", "dropout=0", "lr=1e-3"]
    one = finetune(bert, "sequence-classification", task["train"], task["eval"], tmp_path / "one", epochs=2,
                   overrides=sets)
    two = finetune(bert, "sequence-classification", task["train"], task["eval"], tmp_path / "two", epochs=2,
                   overrides=sets + ["devices=2"])
    # the same computation up to the order of the gradient all-reduce's float sums
    assert [r["train_loss"] for r in two["history"]] == pytest.approx([r["train_loss"] for r in one["history"]],
                                                                       abs=2e-4)
    assert two["eval"]["loss"] == pytest.approx(one["eval"]["loss"], abs=2e-4)
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["config"]["devices"] == 2


def test_a_missing_optional_package_is_a_pip_install_line(monkeypatch, tmp_path, capsys):
    import importlib.util

    from selfsup.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    data = tmp_path / "x.jsonl"  # a file that exists: a missing one is refused first (test_cli.py)
    data.write_text('{"text": "Anne walked.", "label": "a"}\n')
    code = main(["finetune", "--model", str(tmp_path), "--task", "sequence-classification", "--train", str(data),
                 "--eval", str(data), "--out", str(tmp_path / "run"), "--method", "lora"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'selfsup[peft]'" in err
    assert not (tmp_path / "run").exists()
