"""Early exit (`--method early-exit`): one classifier per encoder layer, trained jointly as PABEE (Zhou et al.
2020, "BERT Loses Patience": loss = sum_i i * CE_i / sum_i i) or in two stages as DeeBERT (Xin et al. 2020:
backbone + last head first, then the intermediate heads on the frozen model); `exit_refit_epochs` then refits
the intermediate heads on the frozen model's cached states at a head's lr (1e-3). Predicts the label of a text
from the first token's state after each layer; at inference a row exits at the first layer whose prediction
entropy is below `exit_threshold`, or whose prediction stayed the same `exit_patience` layers. The model and
rules live in `selfsup.adapt.shared.exit_heads` / `exit_model`, shared with the `selfsup early-exit` sweep."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

from selfsup.adapt.core.run import Run
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method
from selfsup.adapt.shared.exit_heads import KINDS
from selfsup.config import bounded


@dataclasses.dataclass
class EarlyExitOptions:
    exit_training: Literal["joint", "two-stage"] = dataclasses.field(
        default="joint", metadata={"doc": "joint (PABEE weighted loss) or two-stage (DeeBERT)"})
    exit_refit_epochs: int = bounded(0, ge=0, doc="after training, refit the intermediate exit heads on the "
                                     "frozen model's cached states for this many epochs at lr 1e-3 (0: off)")
    exit_threshold: float | None = bounded(None, ge=0, doc="evaluate/predict: exit when the prediction entropy "
                                           "is below this")
    exit_patience: int | None = bounded(None, ge=1, doc="evaluate/predict: exit after this many layers with an "
                                        "unchanged prediction")


@register_method("early-exit")
class EarlyExit(AdaptMethod):
    help = "a classifier on every layer; exit early when confident (PABEE / DeeBERT)"
    kinds = KINDS
    Options = EarlyExitOptions
    whole_model = False
    shared_keys = ("trainable_percent",)

    def check(self, family: str, kind: str, opts: Any) -> None:
        from selfsup.adapt.shared.exit_heads import check_supported

        check_supported(family, kind)

    def load(self, folder: Path, info: dict, tokenizer) -> tuple[Any, Any]:
        from selfsup.adapt.shared.exit_heads import load_early_exit

        return load_early_exit(folder, info), tokenizer

    def for_inference(self, model, opts: Any):
        from selfsup.adapt.shared.exit_heads import set_exit_rule

        set_exit_rule(model, opts.exit_threshold, opts.exit_patience)
        return model

    def train_seed(self, run: Run, seed: int, folder: Path, subset: list) -> dict[str, Any]:
        """Train (joint or two-stage), evaluate the full depth and every exit head, save `model/`."""
        from selfsup.adapt.core.evaluation import run_eval
        from selfsup.adapt.core.features import collate, encode, keep_token_types, model_positions
        from selfsup.adapt.core.kinds import main_metric
        from selfsup.adapt.core.models import count_parameters, load_tokenizer, save_task
        from selfsup.adapt.core.runs import seed_record, write_seed
        from selfsup.adapt.shared import exit_heads as ee

        cfg, data, opts = run.cfg, run.data, run.opts
        tok = load_tokenizer(run.source)
        model = ee.build_early_exit(run.source, data.labels, tok, init=run.init, seed=seed, dropout=cfg.dropout)
        trainable, total = count_parameters(model)
        max_length = min(cfg.max_length, model_positions(model.config, tok))
        types = keep_token_types(model.config)
        train_feats = encode(data.kind, tok, subset, data.labels, max_length, types, cfg)
        eval_feats = encode(data.kind, tok, data.eval, data.labels, max_length, types, cfg)
        pad_id, metric = tok.pad_token_id, main_metric(data.kind)
        lr = cfg.lr or self.default_lr
        common = dict(lr=lr, seed=seed, collate_fn=lambda chunk, dev: collate(chunk, pad_id, dev),
                      eval_fn=lambda m: run_eval(m, eval_feats, data.eval, data.kind, data.labels, cfg, pad_id,
                                                 next(m.parameters()).device),
                      main_metric=metric, progress=run.progress)
        started = time.perf_counter()
        curves: dict[str, list] = {}
        steps = epochs = 0
        best_epoch = None
        for stage in (("joint",) if opts.exit_training == "joint" else ("last", "intermediate")):
            result = ee.run_stage(model, stage, train_feats, cfg, **common)
            curves[{"joint": "joint", "last": "stage 1", "intermediate": "stage 2"}[stage]] = result.history
            steps, epochs, best_epoch = steps + result.steps, epochs + result.epochs, result.best_epoch
        refit_losses = None
        if opts.exit_refit_epochs:  # shallow heads at the backbone's lr stay weak: DeeBERT's stage 2, cached
            train_batches = [collate(train_feats[i:i + cfg.batch_size], pad_id)
                             for i in range(0, len(train_feats), cfg.batch_size)]
            refit_losses = ee.refit_exit_heads(model, train_batches, epochs=opts.exit_refit_epochs, seed=seed)
        seconds = time.perf_counter() - started
        ee.set_trainable(model, "joint")
        eval_batches = [collate(eval_feats[i:i + cfg.eval_batch_size], pad_id)
                        for i in range(0, len(eval_feats), cfg.eval_batch_size)]
        per_layer = ee.layer_accuracies(model, eval_batches)
        heads_bytes = ee.save_early_exit(model, folder / "model")
        tok.save_pretrained(str(folder / "model"))
        save_task(folder / "model", {"kind": data.kind, "labels": data.labels, "text_column": data.columns.text,
                                     "pair_column": data.columns.pair, "label_column": data.columns.label,
                                     "max_length": max_length, "source_model": str(run.source), "init": run.init,
                                     "method": self.name, "exit_training": opts.exit_training,
                                     "num_layers": model.num_layers})
        history = [row for rows in curves.values() for row in rows]
        head_params = sum(p.numel() for p in model.heads.parameters())
        record = seed_record(kind=data.kind, source=run.source, init=run.init, method=self.name, seed=seed,
                             eval=dict(result.eval), main_metric=metric, trainable=trainable, total=total,
                             history=history, steps=steps, epochs=epochs, lr=lr, train_examples=len(subset),
                             eval_examples=len(data.eval), labels=data.labels, seconds=seconds,
                             best_epoch=best_epoch, exit_training=opts.exit_training, layer_accuracy=per_layer,
                             exit_refit_losses=refit_losses,
                             backbone_parameters=total - head_params, trainable_percent=100.0,
                             artifact_bytes=None, exit_heads_bytes=heads_bytes)
        return write_seed(folder, record, curves, title=f"{data.kind}, early exit")
