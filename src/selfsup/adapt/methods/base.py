"""The contract every adaptation method follows (the counterpart of `selfsup.objectives.base`).

A method is a class registered by name (`@register_method("lora")`, listed in `selfsup.adapt.registry`) with:

* `help` (one line, shown by `selfsup finetune --help`), `kinds` (task kinds it supports), `default_lr`,
  `Options` (a dataclass of its own `--set` keys, validated like recipes);
* `check(family, kind, opts)`: a one-line error for a model family or kind it cannot adapt, before any work;
* `prepare(model, head, kind, opts, source)`: turn a freshly built task model (`head`: names of the
  parameters the task head adds) into the model to train — freeze, wrap with peft, insert adapters; returns
  (model, backbone parameter count or None);
* `save(model, folder)` -> artifact bytes, and `load(folder, info, tokenizer)` -> (model, tokenizer);
* `for_inference(model, opts)`: apply inference-time options (e.g. an exit threshold).

Methods that train differently (prompt, PET, early exit) override `train_seed(run, seed, folder, subset)`;
the default trains a task head through the one fitting loop (`selfsup.adapt.core.fit`) for text kinds, the
image classifier (`selfsup.adapt.core.images`) for image kinds and the audio classifier
(`selfsup.adapt.core.audio`) for speech kinds.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from selfsup.adapt.core.kinds import TEXT_KINDS, main_metric
from selfsup.adapt.core.options import NoOptions
from selfsup.adapt.core.run import Run
from selfsup.adapt.core.runs import seed_record, write_seed


class AdaptMethod:
    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = TEXT_KINDS
    default_lr: ClassVar[float] = 1e-4
    image_lr: ClassVar[float] = 1e-3  # default lr on image and audio kinds
    table_lr: ClassVar[float | None] = None  # default lr on table kinds; None: image_lr
    Options: ClassVar[type] = NoOptions
    needs_pretrained: ClassVar[bool] = False  # the artifact loads onto the checkpoint it was made on
    whole_model: ClassVar[bool] = True  # saves a whole HF task model (distill and prune can take it)
    shared_keys: ClassVar[tuple[str, ...]] = ("trainable_percent", "artifact_bytes")  # same for every seed
    requires: ClassVar[tuple[str, ...]] = ()  # optional packages (their pip extra is named the same)
    uses_unlabeled: ClassVar[bool] = False  # takes `--unlabeled` examples (PET)

    # ------------------------------------------------------------------------------- hooks to override
    def text_lr(self, model) -> float:
        """The default learning rate on text kinds for this task model (`--set lr` overrides it)."""
        return self.default_lr

    def check(self, family: str, kind: str, opts: Any) -> None:
        """Refuse a model family or task kind this method cannot adapt (one-line SelfsupError)."""

    def prepare(self, model, head: set[str], kind: str, opts: Any, source: Path) -> tuple[Any, int | None]:
        return model, None

    def save(self, model, folder: Path) -> int:
        """Write the fine-tuned model into `folder`; returns the artifact's size in bytes."""
        folder = Path(folder)
        model.save_pretrained(str(folder), safe_serialization=True)
        return sum((folder / f).stat().st_size for f in ("config.json", "model.safetensors"))

    def load(self, folder: Path, info: dict, tokenizer) -> tuple[Any, Any]:
        from selfsup.adapt.core.models import load_task_model

        return load_task_model(folder, info["kind"]), tokenizer

    def for_inference(self, model, opts: Any):
        return model

    def reserved_positions(self, model) -> int:
        """Positions the method takes from the text (virtual tokens)."""
        return 0

    def before_seeds(self, run: Run) -> dict[str, Any]:
        """Checks and preparation shared by every seed, before anything is written (kept in `run.extra`)."""
        return {}

    def summarize(self, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """A method's own aggregates over seeds (added to the multi-seed metrics.json)."""
        return {}

    # ------------------------------------------------------------------------------------- training
    def train_seed(self, run: Run, seed: int, folder: Path, subset: list) -> dict[str, Any]:
        if run.kind.modality == "image":
            from selfsup.adapt.core.images import train_image_seed

            return train_image_seed(self, run, seed, folder, subset)
        if run.kind.modality == "speech":
            from selfsup.adapt.core.audio import train_audio_seed

            return train_audio_seed(self, run, seed, folder, subset)
        if run.kind.modality == "table":
            from selfsup.adapt.core.table_tasks import train_table_seed

            return train_table_seed(self, run, seed, folder, subset)
        return train_head(self, run, seed, folder, subset)


def train_head(method: AdaptMethod, run: Run, seed: int, folder: Path, subset: list) -> dict[str, Any]:
    """A task head (transformers' own) on the checkpoint, adapted by `method`, trained by the fitting loop."""
    import torch

    from selfsup.adapt.core.evaluation import run_eval
    from selfsup.adapt.core.features import collate, encode, keep_token_types, model_positions
    from selfsup.adapt.core.fit import fit, frozen_norms_eval
    from selfsup.adapt.core.models import build_model, count_parameters, load_tokenizer, save_task

    cfg, data = run.cfg, run.data
    tok = load_tokenizer(run.source)
    model, head = build_model(run.source, data.kind, data.labels, tok, init=run.init, seed=seed,
                              dropout=cfg.dropout)
    torch.manual_seed(seed)  # LoRA / adapter / prompt initialisation: reproducible for a given --seed
    model, backbone = method.prepare(model, head, data.kind, run.opts, run.source)
    trainable, total = count_parameters(model)
    max_length = min(cfg.max_length, model_positions(model.config, tok) - method.reserved_positions(model))
    types = keep_token_types(model.config)
    train_feats = encode(data.kind, tok, subset, data.labels, max_length, types, cfg)
    eval_feats = encode(data.kind, tok, data.eval, data.labels, max_length, types, cfg)
    pad_id = tok.pad_token_id
    metric = main_metric(data.kind)
    lr = cfg.lr or method.text_lr(model)
    started = time.perf_counter()
    result = fit(model, train_feats, cfg, lr=lr, seed=seed, main_metric=metric, progress=run.progress,
                 loss_fn=lambda m, batch: m(**batch).loss,
                 collate_fn=lambda chunk, dev: collate(chunk, pad_id, dev),
                 eval_fn=lambda m: run_eval(m, eval_feats, data.eval, data.kind, data.labels, cfg, pad_id,
                                            next(m.parameters()).device),
                 train_mode=frozen_norms_eval)
    seconds = time.perf_counter() - started
    artifact_bytes = method.save(model, folder / "model")
    tok.save_pretrained(str(folder / "model"))
    save_task(folder / "model", {"kind": data.kind, "labels": data.labels, "text_column": data.columns.text,
                                 "pair_column": data.columns.pair, "label_column": data.columns.label,
                                 "max_length": max_length, "doc_stride": cfg.doc_stride,
                                 "max_answer_length": cfg.max_answer_length, "n_best": cfg.n_best,
                                 "source_model": str(run.source), "init": run.init, "method": method.name})
    record = seed_record(kind=data.kind, source=run.source, init=run.init, method=method.name, seed=seed,
                         eval=result.eval, main_metric=metric, trainable=trainable, total=total,
                         history=result.history, steps=result.steps, epochs=result.epochs, lr=lr,
                         train_examples=len(subset), eval_examples=len(data.eval), labels=data.labels,
                         seconds=seconds, best_epoch=result.best_epoch, backbone_parameters=backbone or total,
                         trainable_percent=round(100 * trainable / (backbone or total), 4),
                         artifact_bytes=artifact_bytes)
    return write_seed(folder, record, {run.init: result.history})
