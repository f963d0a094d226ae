"""Streaming text for corpora larger than memory or disk: shards read, tokenized and packed on the fly.

Shards: every local file is one shard; an `hf:` source (streamed through `datasets`) gives one shard per data
file (`IterableDataset.shard`). Readers: R = world size x max(1, DataLoader workers). The shards are walked in an
endless sequence of per-epoch seeded permutations, and visit j of that sequence belongs to reader j mod R, so
every visit is read by exactly one reader (nothing duplicated, nothing skipped). Blocks are packed within a
shard (its last partial block is dropped), so the set of blocks does not depend on R. Held out (when
`holdout_fraction` > 0): the first blocks of the first shards in list order, as many as the held-out loss uses
(train.eval_batches x train.batch_size), because a fraction of a corpus of unknown size cannot be taken without
reading all of it; training skips exactly those blocks.

A reader's whole position is small: the visit, paragraphs read in its shard, the block counter, the tokens
left over from packing, the shuffle buffer and its draw counter. It travels with each batch and is saved in the
checkpoint (`engine/streaming.py`), so a resumed run reads on from exactly where the killed one stopped (the
current shard is re-read up to the saved paragraph, without tokenizing). Each block's pretext noise is seeded by
its global position (micro-batch m of rank r: m*B*W + r*B + i), as in `engine/stream.py`.
(Hand-written: `datasets`' own state_dict/split_dataset_by_node cover neither local files nor packing.)
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Iterator

import numpy as np
import torch

from selfsup.data.corpus import word_starts
from selfsup.data.text import Paragraph, expand_sources, read_paragraphs, row_paragraphs
from selfsup.errors import SelfsupError

SHARD_ORDER_SALT, SHUFFLE_SALT = 2, 5
TOKENIZER_SHARDS = 32  # shards a streaming tokenizer sample is spread over


@dataclasses.dataclass(frozen=True)
class Shard:
    """One unit of reading: a local file, or shard `index` of the `count` shards of an `hf:` data set."""

    source: str
    index: int = 0
    count: int = 1


def list_shards(sources: list[str]) -> list[Shard]:
    """Every shard of the sources, in a fixed order (folders sorted; an `hf:` set's shards in its own order)."""
    from selfsup.data.hub import load_hub

    shards: list[Shard] = []
    for s in expand_sources(sources):
        if s.startswith("hf:"):
            n = int(getattr(load_hub(s, streaming=True), "num_shards", 1) or 1)
            shards.extend(Shard(s, i, n) for i in range(n))
        else:
            shards.append(Shard(s))
    return shards


def shard_paragraphs(shard: Shard, column: str, opened: dict[str, Any] | None = None) -> Iterator[Paragraph]:
    """The shard's paragraphs, streamed (an `hf:` shard through `IterableDataset.shard`, never downloaded whole)."""
    if not shard.source.startswith("hf:"):
        yield from read_paragraphs([shard.source], column)
        return
    from selfsup.data.hub import hub_rows, load_hub

    opened = {} if opened is None else opened
    if shard.source not in opened:
        opened[shard.source] = load_hub(shard.source, streaming=True)
    ds = opened[shard.source]
    if shard.count > 1:
        ds = ds.shard(num_shards=shard.count, index=shard.index)
    yield from row_paragraphs(hub_rows(f"{shard.source} shard {shard.index}", ds), column, 0)


def shard_sample(shards: list[Shard], column: str, budget: int) -> Iterator[str]:
    """About `budget` characters of paragraphs for training a tokenizer: the beginnings of up to 32 shards spread
    evenly over the list, an equal share each, so the sample is bounded whatever the corpus size."""
    picks = sorted({int(i) for i in np.linspace(0, len(shards) - 1, min(TOKENIZER_SHARDS, len(shards)))})
    share = max(1, budget // len(picks))
    for i in picks:
        used = 0
        for para in shard_paragraphs(shards[i], column):
            text = " ".join(para.sentences)
            yield text
            used += len(text)
            if used >= share:
                break


@dataclasses.dataclass
class StreamSpec:
    """What every reader needs (picklable, so DataLoader workers get it)."""

    shards: list[Shard]
    column: str
    tokenizer: Any
    window: int  # tokens per block before the objective's special tokens
    separator: int
    seed: int
    shuffle_buffer: int = 0
    heldout: tuple[int, ...] = ()  # held-out blocks at the start of shard 0, 1, ... (set by `heldout_blocks`)

    def held_out(self, shard: int, block: int) -> bool:
        return shard < len(self.heldout) and block < self.heldout[shard]

    def shard_at(self, visit: int) -> int:
        """Shard index of visit `visit` of the endless walk (epoch = visit // n_shards, seeded permutation)."""
        epoch, offset = divmod(visit, len(self.shards))
        return int(np.random.default_rng([self.seed, SHARD_ORDER_SALT, epoch]).permutation(len(self.shards))[offset])

    def in_order(self, visit: int) -> int:
        """Shard index of visit `visit` of a walk in list order (the held-out blocks)."""
        return visit % len(self.shards)


def encode_paragraph(backend, para: Paragraph) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (int32) and word-start flags (uint8) of a paragraph's sentences, back to back."""
    encs = backend.encode_batch(list(para.sentences), add_special_tokens=False)
    ids = [np.asarray(e.ids, dtype=np.int32) for e in encs if e.ids]
    if not ids:
        return np.zeros(0, np.int32), np.zeros(0, np.uint8)
    return np.concatenate(ids), np.concatenate([word_starts(e) for e in encs if e.ids])


class BlockReader:
    """One reader's walk over its shard visits (slot, slot + R, slot + 2R, ...): paragraphs tokenized and packed
    into blocks of `window` tokens, the held-out ones skipped; endless unless `epochs` is given."""

    def __init__(self, spec: StreamSpec, slot: int, n_slots: int, state: dict | None = None,
                 epochs: int | None = None, visits: Callable[[int], int] | None = None):
        self.spec, self.slot, self.n_slots, self.epochs = spec, slot, n_slots, epochs
        self.visits = visits or spec.shard_at
        self.backend = spec.tokenizer.backend_tokenizer
        self.opened: dict[str, Any] = {}
        st = state or {}
        self.visit = int(st.get("visit", slot))
        self.paragraphs = int(st.get("paragraphs", 0))
        self.block = int(st.get("block", 0))
        self.tokens = np.asarray(st.get("tokens", np.zeros(0, np.int32)), dtype=np.int32)
        self.word_start = np.asarray(st.get("word_start", np.zeros(0, np.uint8)), dtype=np.uint8)
        self.last_doc = st.get("last_doc")
        self.pool_tokens = list(st.get("pool_tokens", []))
        self.pool_word_start = list(st.get("pool_word_start", []))
        self.draws = int(st.get("draws", 0))
        self.batches = int(st.get("batches", 0))
        self._stream: Iterator[Paragraph] | None = None
        self._empty_visits, self._found = 0, False
        self._shard = (-1, -1)  # (visit, shard index) of the visit being read

    def state(self) -> dict[str, Any]:
        """The position to continue from (numpy arrays; `engine/streaming.py` stores them as tensors)."""
        return {"visit": self.visit, "paragraphs": self.paragraphs, "block": self.block, "tokens": self.tokens,
                "word_start": self.word_start, "last_doc": self.last_doc, "draws": self.draws,
                "batches": self.batches, "pool_tokens": np.asarray(self.pool_tokens, np.int32).reshape(
                    len(self.pool_tokens), self.spec.window),
                "pool_word_start": np.asarray(self.pool_word_start, np.uint8).reshape(
                    len(self.pool_word_start), self.spec.window)}

    def _finished(self) -> bool:
        return self.epochs is not None and self.visit >= self.epochs * len(self.spec.shards)

    def _shard_index(self) -> int:
        if self._shard[0] != self.visit:
            self._shard = (self.visit, self.visits(self.visit))
        return self._shard[1]

    def _open(self) -> Iterator[Paragraph]:
        shard = self.spec.shards[self._shard_index()]
        stream = shard_paragraphs(shard, self.spec.column, self.opened)
        return itertools.islice(stream, self.paragraphs, None)  # a resumed reader skips what it had read

    def _next_shard(self) -> None:
        self._empty_visits, self._found = 0 if self._found else self._empty_visits + 1, False
        if self._empty_visits > 2 * len(self.spec.shards):
            raise SelfsupError(f"data: no shard holds a training block of {self.spec.window} tokens (lower "
                               "data.block_size, or give more text: the held-out blocks come first)")
        self.visit += self.n_slots
        self.paragraphs = self.block = 0
        self.tokens, self.word_start = np.zeros(0, np.int32), np.zeros(0, np.uint8)
        self.last_doc, self._stream = None, None

    def _fill(self) -> bool:
        """Read paragraphs until a block's worth of tokens is buffered; False when the walk is over."""
        while len(self.tokens) < self.spec.window:
            if self._finished():
                return False
            if self._stream is None:
                self._stream = self._open()
            para = next(self._stream, None)
            if para is None:  # end of shard: close its last document, drop the partial block, go on
                self._next_shard()
                continue
            self.paragraphs += 1
            ids, starts = encode_paragraph(self.backend, para)
            if self.last_doc is not None and para.doc != self.last_doc:
                ids = np.r_[np.int32(self.spec.separator), ids]
                starts = np.r_[np.uint8(1), starts]
            self.last_doc = para.doc
            self.tokens = np.concatenate([self.tokens, ids]).astype(np.int32)
            self.word_start = np.concatenate([self.word_start, starts]).astype(np.uint8)
        return True

    def _packed(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The next training block in shard order, or None at the end of a finite walk."""
        while self._fill():
            w = self.spec.window
            tokens, starts = self.tokens[:w].copy(), self.word_start[:w].copy()  # not views of a long paragraph
            self.tokens, self.word_start = self.tokens[w:], self.word_start[w:]
            shard, block = self._shard_index(), self.block
            self.block += 1
            if not self.spec.held_out(shard, block):
                self._found = True
                return tokens, starts
        return None

    def next_block(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The next block, drawn at random from a pool of `shuffle_buffer` blocks (seeded by the reader's draw
        count, so resume-exact); None when a finite walk is over and the pool is empty."""
        size = self.spec.shuffle_buffer
        while len(self.pool_tokens) < max(1, size):
            block = self._packed()
            if block is None:
                break
            self.pool_tokens.append(block[0])
            self.pool_word_start.append(block[1])
        if not self.pool_tokens:
            return None
        pick = 0 if size <= 1 else int(np.random.default_rng(
            [self.spec.seed, SHUFFLE_SALT, self.slot, self.draws]).integers(len(self.pool_tokens)))
        self.draws += 1
        return self.pool_tokens.pop(pick), self.pool_word_start.pop(pick)


def heldout_blocks(spec: StreamSpec, n: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], StreamSpec]:
    """The first `n` blocks, shards in list order (read once per process, n blocks and no more), and the spec
    whose training readers skip them."""
    if n <= 0:
        return [], dataclasses.replace(spec, heldout=())
    everything = dataclasses.replace(spec, shuffle_buffer=0, heldout=())
    reader = BlockReader(everything, 0, 1, epochs=1, visits=everything.in_order)
    out, counts = [], [0] * len(spec.shards)
    while len(out) < n:
        block = reader.next_block()
        if block is None:
            break
        out.append(block)
        counts[reader.visit] += 1  # in list order, visit i is shard i
    if len(out) < n:
        raise SelfsupError(f"data: the whole corpus is {len(out)} blocks of {spec.window} tokens, and the held-out "
                           f"loss takes the first {n} (train.eval_batches x train.batch_size); lower "
                           "train.eval_batches, or set data.holdout_fraction=0")
    last = max(i for i, c in enumerate(counts) if c)
    return out, dataclasses.replace(spec, heldout=tuple(counts[:last + 1]))


class StreamingBlocks(torch.utils.data.IterableDataset):
    """Micro-batches for one rank: each DataLoader worker runs one reader and yields whole micro-batches
    `{"items": [(block, global position, micro step)], "slot", "state"}`. The DataLoader hands batches out
    round-robin over its workers, so worker w yields micro-steps m = c*N + w; after a resume at micro-step M
    worker w plays logical worker (w + M) mod N, whose saved position continues exactly there."""

    def __init__(self, spec: StreamSpec, micro_batch: int, world: int, rank: int, workers: int,
                 collate: Callable[[list], dict] | None = None, epochs: int | None = None):
        self.spec, self.b, self.world, self.rank, self.workers = spec, micro_batch, world, rank, max(1, workers)
        self.collate, self.epochs = collate, epochs
        self.start_micro = 0
        self.positions: dict[int, dict] = {}  # slot -> reader state, set by a resume before iteration

    @property
    def n_readers(self) -> int:
        return self.world * self.workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        n = info.num_workers if info is not None else 1
        if n != self.workers:
            raise SelfsupError(f"train.num_workers: the stream was set up for {self.workers} readers per process, "
                               f"the DataLoader runs {n}")
        logical = ((info.id if info is not None else 0) + self.start_micro) % n
        slot = self.rank * n + logical
        if len(self.spec.shards) < self.n_readers:
            raise SelfsupError(f"data.streaming: {len(self.spec.shards)} shard(s) for {self.n_readers} readers "
                               "(devices x num_nodes x max(1, num_workers)); give more files or fewer workers")
        reader = BlockReader(self.spec, slot, self.n_readers, self.positions.get(slot), epochs=self.epochs)
        try:
            yield from self._batches(reader, n, logical, slot)
        except SelfsupError as e:  # bad data met mid-stream: one line for the main process, not a worker traceback
            if info is None:
                raise
            yield {"stream_error": str(e)}

    def _batches(self, reader: BlockReader, n: int, logical: int, slot: int) -> Iterator[dict[str, Any]]:
        while True:
            items = []
            m = reader.batches * n + logical
            first = m * self.b * self.world + self.rank * self.b
            for i in range(self.b):
                block = reader.next_block()
                if block is None:
                    break
                items.append((block, first + i, m))
            if not items:
                return
            reader.batches += 1
            batch = {"items": items} if self.collate is None else self.collate(items)
            yield {**batch, "stream_slot": slot, "stream_state": reader.state()}
