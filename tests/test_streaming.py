"""Streaming text (`data.streaming: true`): shards read, tokenized and packed on the fly. The blocks that ranks
and DataLoader workers read partition the one-reader stream, a resumed run repeats the uninterrupted losses,
`hf:` data sets stream shard by shard, nothing reads ahead of what it packs, and the scaling page's keys exist."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY
from selfsup import pretrain
from selfsup.data import streaming
from selfsup.data.corpus import get_tokenizer
from selfsup.data.streaming import BlockReader, StreamingBlocks, StreamSpec, heldout_blocks, list_shards, shard_sample
from selfsup.data.tokenizer import TokenizerConfig
from selfsup.engine.logs import read_logged
from selfsup.errors import SelfsupError

N_SHARDS = 5


@pytest.fixture(scope="module")
def shards(tmp_path_factory, persuasion) -> Path:
    """Persuasion dealt paragraph by paragraph into 5 plain-text files of unequal length."""
    folder = tmp_path_factory.mktemp("shards")
    paras = [p for p in persuasion.read_text().split("\n\n") if p.strip()]
    for i in range(N_SHARDS):
        (folder / f"part-{i}.txt").write_text("\n\n".join(paras[i::N_SHARDS][:40 + 12 * i]))
    return folder


@pytest.fixture(scope="module")
def tokenizer(shards):
    return get_tokenizer(TokenizerConfig(vocab_size=600), [str(shards)], "text",
                         sample=lambda budget: shard_sample(list_shards([str(shards)]), "text", budget))


def _spec(shards, tokenizer, held: int = 0, **kw) -> StreamSpec:
    """A spec over the shards whose first `held` blocks are held out."""
    args = dict(window=30, separator=tokenizer.sep_token_id, seed=3, shuffle_buffer=0)
    args.update(kw)
    return heldout_blocks(StreamSpec(list_shards([str(shards)]), "text", tokenizer, **args), held)[1]


def _key(block) -> bytes:
    return np.asarray(block[0]).tobytes() + np.asarray(block[1]).tobytes()


def _walk(spec, slot, n_slots, epochs=1):
    reader, out = BlockReader(spec, slot, n_slots, epochs=epochs), []
    while (block := reader.next_block()) is not None:
        out.append(block)
    return out


def _batches(dataset, workers=0):
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=lambda b: b, num_workers=workers)
    return list(loader)


@pytest.mark.parametrize("shuffle", [0, 7])
def test_ranks_and_workers_partition_the_one_reader_blocks(shards, tokenizer, shuffle):
    spec = _spec(shards, tokenizer, held=300, shuffle_buffer=shuffle)
    assert len(spec.heldout) >= 2  # the held-out blocks span more than the first shard
    one = Counter(map(_key, _walk(spec, 0, 1)))
    assert sum(one.values()) > 100
    # 2 readers: each reads its own shard visits, together exactly the one reader's blocks
    parts = [Counter(map(_key, _walk(spec, s, 2))) for s in range(2)]
    assert all(parts) and parts[0] + parts[1] == one
    # the same through the data set: rank 0 and rank 1 of world 2 in this process, and 2 DataLoader workers
    for runs in ([_batches(StreamingBlocks(spec, 4, 2, r, 0, epochs=1)) for r in range(2)],
                 [_batches(StreamingBlocks(spec, 4, 1, 0, 2, epochs=1), workers=2)]):
        items = [item for batches in runs for b in batches for item in b["items"]]
        assert Counter(_key(block) for block, _, _ in items) == one
        positions = [k for _, k, _ in items]
        assert len(set(positions)) == len(positions)  # each example's noise seed is its own
    # training and held-out blocks split the blocks of a stream that holds nothing out
    everything = _spec(shards, tokenizer, shuffle_buffer=shuffle)
    held = Counter(map(_key, heldout_blocks(everything, 300)[0]))
    assert sum(held.values()) == 300 and held + one == Counter(map(_key, _walk(everything, 0, 1)))
    with pytest.raises(SelfsupError, match=r"the whole corpus is \d+ blocks of 30 tokens.*takes the first 100000"):
        heldout_blocks(everything, 100_000)


def test_a_reader_restored_from_its_state_continues_exactly(shards, tokenizer):
    spec = _spec(shards, tokenizer, shuffle_buffer=5)
    full = BlockReader(spec, 1, 2)
    expected = [_key(full.next_block()) for _ in range(400)]  # endless: several shards and a second epoch
    first = BlockReader(spec, 1, 2)
    got = [_key(first.next_block()) for _ in range(137)]
    resumed = BlockReader(spec, 1, 2, state=first.state())
    got += [_key(resumed.next_block()) for _ in range(400 - 137)]
    assert got == expected


def test_workers_resume_at_an_odd_micro_step_in_round_robin_order(shards, tokenizer):
    """After micro-step 3 with 2 workers, worker 0 must continue logical worker 1's stream (step 3)."""
    spec = _spec(shards, tokenizer, shuffle_buffer=3)
    full = _batches(StreamingBlocks(spec, 4, 1, 0, 2, epochs=1), workers=2)
    assert [b["items"][0][2] for b in full[:8]] == list(range(8))
    positions = {b["stream_slot"]: b["stream_state"] for b in full[:3]}
    resumed = StreamingBlocks(spec, 4, 1, 0, 2, epochs=1)
    resumed.positions, resumed.start_micro = positions, 3
    later = _batches(resumed, workers=2)
    assert [[(_key(x), k, m) for x, k, m in b["items"]] for b in later] == \
        [[(_key(x), k, m) for x, k, m in b["items"]] for b in full[3:]]


def test_reading_is_lazy_and_writes_no_token_cache(shards, tokenizer, monkeypatch, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(f"Paragraph {i} of a long file. Anne walked to the shop." for i in range(20000)))
    pulled = {"n": 0}
    original = streaming.read_paragraphs

    def counting(sources, column="text"):
        for para in original(sources, column):
            pulled["n"] += 1
            yield para

    monkeypatch.setattr(streaming, "read_paragraphs", counting)
    spec = _spec(shards, tokenizer, shuffle_buffer=4)
    spec.shards = list_shards([str(big)])
    reader = BlockReader(spec, 0, 1)
    for _ in range(5):
        reader.next_block()
    assert 0 < pulled["n"] < 30  # a few paragraphs, not the 20,000 of the file
    assert len(reader.pool_tokens) <= 4 and len(reader.tokens) < 2 * spec.window  # bounded buffers


def test_bad_data_met_by_a_worker_mid_stream_is_one_line_in_the_main_process(shards, tokenizer, tmp_path):
    from selfsup.engine.streaming import StreamPositions

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"A good first line of text here.\n\nAnother fine paragraph.\n\ncaf\xe9 au lait\n")
    spec = _spec(shards, tokenizer)
    spec.shards = list_shards([str(bad)])
    dataset = StreamingBlocks(spec, 2, 1, 0, 1)
    (batch,) = _batches(dataset, workers=1)
    assert set(batch) == {"stream_error"} and batch["stream_error"].endswith(":5: invalid UTF-8 at byte 3 of the line")
    with pytest.raises(SelfsupError, match=r"bad.txt:5: invalid UTF-8"):
        StreamPositions(dataset).on_train_batch_start(None, None, batch, 0)


def _clm_jsonl(folder: Path, persuasion: Path, n_files: int = 3) -> Path:
    folder.mkdir()
    paras = [p for p in persuasion.read_text().split("\n\n") if p.strip()]
    for i in range(n_files):
        with open(folder / f"rows-{i}.jsonl", "w") as f:
            for p in paras[i::n_files][:60]:
                f.write(json.dumps({"text": " ".join(p.split())}) + "\n")
    return folder


def test_hf_spec_streams_each_shard_through_datasets(tmp_path, persuasion, tokenizer, monkeypatch):
    import datasets

    folder = _clm_jsonl(tmp_path / "hfdata", persuasion)
    calls = []
    original = datasets.load_dataset

    def spy(*args, **kwargs):
        calls.append(kwargs.get("streaming"))
        return original(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    hub = list_shards([f"hf:{folder}"])
    assert [(s.index, s.count) for s in hub] == [(0, 3), (1, 3), (2, 3)]
    spec = _spec(folder, tokenizer)
    local = Counter(map(_key, _walk(spec, 0, 1)))
    spec.shards = hub
    assert Counter(map(_key, _walk(spec, 0, 1))) == local and local
    assert calls and all(calls)  # every load was a streaming one


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shards):
    """12 steps uninterrupted; a run killed (SIGKILL) at step 7 after its step-5 checkpoint; both with 2
    DataLoader workers (5 is odd: worker 0 must continue worker 1's stream)."""
    import signal
    import subprocess
    import sys
    import textwrap

    from selfsup.data.corpus import cache_root

    root = tmp_path_factory.mktemp("stream-runs")
    caches = lambda: sorted(p.name for p in (cache_root() / "corpora").glob("*"))  # noqa: E731
    before = caches()
    sets = TINY + ["data.streaming=true", "data.shuffle_buffer=16", "data.block_size=32", "train.log_every=1",
                   "train.num_workers=2", "train.lr=3e-3", "train.schedule=constant", "train.threads=1",
                   "train.checkpoint_every=5"]
    full = pretrain("mlm", [str(shards)], root / "full", max_steps=12, progress=False, overrides=sets)
    script = textwrap.dedent(f"""
        import os, signal
        import lightning as L
        from selfsup import pretrain

        class KillAfter(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == 7:
                    os.kill(os.getpid(), signal.SIGKILL)

        pretrain("mlm", [{str(shards)!r}], {str(root / "part")!r}, max_steps=12, progress=False,
                 overrides={sets!r}, callbacks=[KillAfter()])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert torch.load(root / "part/checkpoints/last.ckpt", weights_only=True)["global_step"] == 5
    assert caches() == before  # no token cache written: the text was tokenized on the fly
    return root, full, sets


def _losses(run: Path) -> dict[int, float]:
    return {int(r["step"]): r["loss"] for r in read_logged(run) if "loss" in r}


def test_streaming_run_learns_and_resumes_to_the_same_losses(runs, shards):
    root, full, sets = runs
    a = _losses(root / "full")
    assert len(a) == 12 and np.mean([a[s] for s in sorted(a)[-3:]]) < a[min(a)] - 0.3
    assert "heldout_loss" in full and (root / "full" / "model" / "model.safetensors").is_file()
    pretrain("mlm", [str(shards)], root / "part", max_steps=12, progress=False, overrides=sets, resume=True)
    b = _losses(root / "part")
    assert sorted(b) == sorted(a)
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-5)


def test_other_readers_on_resume_unsupported_objectives_and_fsdp_on_cpu_are_one_line_errors(runs, shards, tmp_path):
    root, _, sets = runs
    with pytest.raises(SelfsupError, match=r"data.streaming: the checkpoint's stream was read by 2 readers"):
        pretrain("mlm", [str(shards)], root / "full", max_steps=14, progress=False,
                 overrides=sets + ["train.num_workers=3"], resume=True)
    with pytest.raises(SelfsupError, match=r"data.streaming: mlm reads sentence chunks"):
        pretrain("mlm", [str(shards)], tmp_path / "nsp", max_steps=2, progress=False,
                 overrides=TINY + ["data.streaming=true", "objective.sentence_task=nsp"])
    with pytest.raises(SelfsupError, match=r"data.streaming: unknown key"):
        pretrain("simclr", [str(shards)], tmp_path / "img", max_steps=2, progress=False,
                 overrides=["data.streaming=true"])
    with pytest.raises(SelfsupError, match=r"data.streaming: 5 shard\(s\) for 6 readers"):
        pretrain("mlm", [str(shards)], tmp_path / "few", max_steps=2, progress=False,
                 overrides=sets + ["train.num_workers=6"])
    if not torch.cuda.is_available():
        with pytest.raises(SelfsupError, match=r"train.strategy: fsdp shards the model over CUDA GPUs"):
            pretrain("mlm", [str(shards)], tmp_path / "fsdp", max_steps=2, progress=False,
                     overrides=sets + ["train.strategy=fsdp"])
    assert not any((tmp_path / name).exists() for name in ("nsp", "img", "few", "fsdp"))


def test_only_global_rank_zero_owns_the_run_folder(monkeypatch):
    from selfsup.engine.pretrain import _launched_child

    for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert not _launched_child()
    for key, value in (("RANK", "5"), ("SLURM_PROCID", "3"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
        assert _launched_child()
        monkeypatch.delenv(key)


def test_every_key_the_scaling_page_sets_exists():
    from selfsup.recipes import load_recipe

    text = (ROOT / "docs" / "scaling.md").read_text()
    commands = [" ".join(line.strip() for line in block.replace("\\\n", " ").splitlines())
                for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)]
    checked = 0
    for command in " ".join(commands).split("selfsup pretrain ")[1:]:
        recipe = command.split()[0]
        sets = re.findall(r"--set[= ](\S+=\S+)", command.split(" selfsup ")[0])
        load_recipe(recipe, sets)  # an unknown key or a bad value raises, naming the key
        checked += 1
    assert checked >= 5


@pytest.mark.slow
def test_two_process_ddp_checkpoint_holds_both_ranks_reader_positions(shards, tmp_path):
    """2-process DDP (gloo): rank 1's reader position reaches rank 0's checkpoint (gathered), and equals the
    position a reader computed here reaches after the same 3 steps. (Resume from such positions: the tests above.)"""
    from transformers import AutoTokenizer

    from conftest import run_cli

    sets = [f"--set={o}" for o in TINY + ["data.streaming=true", "data.block_size=32", "data.shuffle_buffer=8",
                                           "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp"]]
    out = tmp_path / "ddp"
    proc = run_cli("pretrain", "mlm", "--data", str(shards), "--out", str(out), "--max-steps", "3", "--no-progress",
                   *sets)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = torch.load(out / "checkpoints/last.ckpt", weights_only=True)["callbacks"]["StreamPositions"]
    assert (saved["readers"], saved["micro"], sorted(saved["positions"])) == (2, 3, ["0", "1"])
    from selfsup.recipes import load_recipe

    tok, r = AutoTokenizer.from_pretrained(out / "model"), load_recipe(str(out / "config.yaml"))
    spec = StreamSpec(list_shards([str(shards)]), "text", tok, 30, tok.sep_token_id, r.train.seed, 8)
    spec = heldout_blocks(spec, r.train.eval_batches * r.train.batch_size)[1]
    for slot in (0, 1):
        reader = BlockReader(spec, slot, 2)
        for _ in range(3 * 8):  # 3 micro-batches of 16 / 2 ranks
            reader.next_block()
        reader.batches = 3
        mine, theirs = reader.state(), saved["positions"][str(slot)]
        assert set(mine) == set(theirs)
        for key, value in mine.items():
            np.testing.assert_array_equal(np.asarray(theirs[key]) if theirs[key] is not None else None, value,
                                          err_msg=f"slot {slot} {key}")
