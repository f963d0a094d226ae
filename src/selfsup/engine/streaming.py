"""The engine side of streaming text (`data.streaming: true`): the DataLoader over one rank's readers, and the
readers' positions carried from the batches they made into the checkpoint and back (resume-exact).

Each batch brings the position its reader reached after making it; `StreamPositions` keeps the latest one per
reader *when the batch is trained on* (Lightning fetches a batch ahead, so the loader's own view would be one
batch early), gathers every rank's readers when a checkpoint is written, and hands them back to the data set on
resume, before its workers start.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from selfsup.data.streaming import StreamingBlocks, StreamSpec
from selfsup.engine.stream import TRAIN, Collate
from selfsup.errors import SelfsupError


def unbatched(batch: dict) -> dict:
    """The DataLoader's collate_fn: the data set already yields whole, collated micro-batches."""
    return batch


def stream_loader(objective, spec: StreamSpec, micro_batch: int, world: int, num_workers: int,
                  seed: int) -> tuple[torch.utils.data.DataLoader, "StreamPositions"]:
    """An endless DataLoader of micro-batches over the shards (rank set later: `loader.dataset.rank = r`)."""
    readers = world * max(1, num_workers)
    if len(spec.shards) < readers:
        raise SelfsupError(f"data.streaming: {len(spec.shards)} shard(s) for {readers} readers (train.devices x "
                           "train.num_nodes x max(1, train.num_workers)); give more files or fewer workers")
    dataset = StreamingBlocks(spec, micro_batch, world, 0, num_workers, collate=Collate(objective, seed, TRAIN))
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=unbatched, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    return loader, StreamPositions(dataset)


def _saveable(state: dict[str, Any]) -> dict[str, Any]:
    """numpy arrays as tensors (a checkpoint loads with weights_only=True)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in state.items()}


class StreamPositions(L.Callback):
    """Every reader's position, in the checkpoint under `callbacks["StreamPositions"]`."""

    def __init__(self, dataset: StreamingBlocks):
        self.dataset = dataset
        self.latest: dict[int, dict[str, Any]] = {}
        self.next_micro = 0

    def on_train_batch_start(self, trainer, pl_module, batch: dict, batch_idx: int) -> None:
        if "stream_error" in batch:  # a reader in a DataLoader worker met bad data
            raise SelfsupError(batch["stream_error"])
        self.latest[int(batch.pop("stream_slot"))] = batch.pop("stream_state")
        self.next_micro = int(batch["micro_step"]) + 1

    def state_dict(self) -> dict[str, Any]:
        d = self.dataset
        own = {s: st for s, st in self.latest.items() if s // d.workers == d.rank}
        if torch.distributed.is_available() and torch.distributed.is_initialized() and d.world > 1:
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, own)  # every rank writes a checkpoint's state together
            own = {s: st for part in parts for s, st in part.items()}
        return {"readers": d.n_readers, "workers": d.workers, "micro": self.next_micro,
                "positions": {str(s): _saveable(st) for s, st in sorted(own.items())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_readers(state, self.dataset.n_readers, self.dataset.workers)
        self.latest = {int(s): {k: v.numpy() if torch.is_tensor(v) else v for k, v in st.items()}
                       for s, st in state["positions"].items()}
        self.next_micro = int(state["micro"])
        self.dataset.positions = dict(self.latest)
        self.dataset.start_micro = self.next_micro


def check_readers(state: dict[str, Any] | None, readers: int, workers: int) -> None:
    """A stream resumes only with the readers that wrote it (the shards are dealt out per reader)."""
    if state is not None and (int(state["readers"]), int(state["workers"])) != (readers, max(1, workers)):
        raise SelfsupError(f"data.streaming: the checkpoint's stream was read by {state['readers']} readers "
                           f"({state['workers']} per process); resume with the same train.devices, "
                           f"train.num_nodes and train.num_workers (now {readers}, {max(1, workers)} per process)")


def check_stream_resume(checkpoint: Path, world: int, num_workers: int) -> None:
    """Before anything is written: the checkpoint holds a stream position made by as many readers as now."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    positions = state.get("callbacks", {}).get(StreamPositions.__qualname__)
    if positions is None and state.get("global_step", 0) > 0:
        raise SelfsupError(f"{checkpoint}: written by a run without data.streaming; start a new run to stream")
    check_readers(positions, world * max(1, num_workers), num_workers)
