"""`selfsup finetune --task table-classification`: a linear head on the bottleneck code of a table auto-encoder
exported by `selfsup pretrain` / `selfsup anomaly fit` (objectives/autoencoder_base.py: autoencoder,
denoising_autoencoder, vae, vqvae, binary_autoencoder, onehot_autoencoder with `model.type: mlp`),
cross-entropy, the shared fitting loop (`adapt.core.fit`), evaluated every epoch.

The rows of the training and evaluation tables (CSV / TSV / Parquet / .npz / `hf:` / `sklearn:breast_cancer`)
are preprocessed with the auto-encoder's SAVED preprocessing (its columns, fill values, means and scales;
`ae_encoder.ae_examples`); the label column is `--label-column` (default: the model's, `label`). The code is
`TableObjective.features` (the VAE's mean, the VQ-VAE's pre-quantization code). `--method full` trains the
encoder and the head (a binary or one-hot code passes no gradient through its threshold / argmax, so there
only the head learns), `--method linear` the head alone.

Outputs (atomic, like every kind): `model/` = the auto-encoder export with the fine-tuned encoder
(`model.safetensors`, `config.json`, `preprocessing.json`: it still loads with `load_table_model` and
`selfsup evaluate --probe`), `head.safetensors`, `task.json`; `metrics.json`, `curves.png`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from selfsup.adapt.core.ae_encoder import AEEncoder, ae_examples, ae_export_folder, load_ae_encoder
from selfsup.errors import SelfsupError

TABLE_TASK = "table-classification"
HEAD_WEIGHTS = "head.safetensors"


class TableClassifier(torch.nn.Module):
    """Preprocessed (B, D) rows -> (B, labels) logits: the auto-encoder's code and a seeded linear head."""

    def __init__(self, encoder: AEEncoder, num_labels: int, seed: int):
        super().__init__()
        self.encoder = encoder
        torch.manual_seed(seed)
        self.head = torch.nn.Linear(encoder.width, num_labels)
        self.num_labels = num_labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def encoder_folder(model: str | Path) -> Path:
    """The export folder of a table auto-encoder that `--task table-classification` can fine-tune (checked)."""
    from selfsup.data.tables import TablePreprocessor

    folder = ae_export_folder(model)
    if folder is None:
        if not Path(model).exists():
            raise SelfsupError(f"{model}: no such folder (expected a run folder of an auto-encoder)")
        raise SelfsupError(f"{model}: not an auto-encoder export; --task {TABLE_TASK} needs a run of autoencoder, "
                           "denoising_autoencoder, vae, vqvae, binary_autoencoder or onehot_autoencoder on a table")
    encoder, _ = load_ae_encoder(folder)
    if not isinstance(encoder.preprocessor, TablePreprocessor):
        raise SelfsupError(f"{folder}: an auto-encoder of {encoder.ae.preprocessor.to_dict()['modality']} data; "
                           f"--task {TABLE_TASK} fine-tunes table auto-encoders (probe it with `selfsup evaluate "
                           "--probe linear`)")
    return folder


class TableData:
    """Preprocessed rows and TextExample stand-ins (text = row index) so tasks.subsample / label_set apply."""

    def __init__(self, x_train: np.ndarray, x_eval: np.ndarray, labels: list[str], train: list, eval: list,
                 y_eval: np.ndarray):
        self.x_train, self.x_eval, self.labels, self.train, self.eval, self.y_eval = \
            x_train, x_eval, labels, train, eval, y_eval


def _examples(encoder: AEEncoder, source: str, label_column: str | None, labeled: bool = True):
    from selfsup.adapt.core.tasks import TextExample

    x, values = ae_examples(encoder, [source], label_column, require_labels=labeled)
    if labeled and "" in values:
        i = values.index("")
        raise SelfsupError(f"{source}: row {i + 1} has no label")
    return x, [TextExample(str(i), None, v, f"{source} row {i + 1}") for i, v in enumerate(values)]


def load_table_data(train: str, eval: str, source: Path, label_column: str | None) -> TableData:
    from selfsup.adapt.core.tasks import check_labels, label_set

    encoder, _ = load_ae_encoder(source)
    x_train, train_ex = _examples(encoder, train, label_column)
    x_eval, eval_ex = _examples(encoder, eval, label_column)
    labels = label_set(train_ex, train)
    check_labels(eval_ex, labels)
    index = {lab: i for i, lab in enumerate(labels)}
    return TableData(x_train, x_eval, labels, train_ex, eval_ex,
                     np.asarray([index[e.label] for e in eval_ex], np.int64))


def _evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int, device) -> dict[str, float]:
    from selfsup import metrics as M

    was = model.training
    model.eval()
    loss, metric = M.MeanLoss(), M.ClassificationMetrics(int(model.num_labels))
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            logits = model(torch.from_numpy(x[i:i + batch_size]).to(device)).float()
            target = torch.from_numpy(y[i:i + batch_size]).to(device)
            loss.update(torch.nn.functional.cross_entropy(logits, target).item(), len(target))
            metric.update(logits.argmax(-1).cpu().numpy(), y[i:i + batch_size])
    model.train(was)
    return {"loss": loss.compute(), **metric.compute(), "examples": int(len(y))}


def train_table_seed(method, run, seed: int, out: Path, subset: list) -> dict[str, Any]:
    """A linear head on the auto-encoder's code, adapted by `method` (full: encoder and head train; linear: the
    head alone), trained by the shared fitting loop."""
    import dataclasses

    from selfsup.adapt.core.fit import classification_loss, fit, frozen_norms_eval
    from selfsup.adapt.core.models import count_parameters
    from selfsup.adapt.core.runs import seed_record, write_seed

    cfg, data = run.cfg, run.data
    encoder, _ = load_ae_encoder(run.source)
    if run.init == "scratch":  # the same architecture, freshly initialized with the seed
        torch.manual_seed(seed)
        for layer in encoder.encoder.modules():
            if hasattr(layer, "reset_parameters") and layer is not encoder.encoder:
                layer.reset_parameters()
    model = TableClassifier(encoder, len(data.labels), seed)
    model, _ = method.prepare(model, {"head.weight", "head.bias"}, TABLE_TASK, run.opts, run.source)
    trainable, total = count_parameters(model)
    index = {lab: i for i, lab in enumerate(data.labels)}
    feats = [{"row": int(e.text), "label": index[e.label]} for e in subset]
    lr = cfg.lr or method.table_lr or method.image_lr
    if cfg.batch_size > len(feats):  # a few-shot set smaller than a batch: one batch of all of it
        cfg = dataclasses.replace(cfg, batch_size=max(len(feats) // (cfg.devices * cfg.num_nodes * cfg.accumulate)
                                                      * cfg.devices * cfg.num_nodes * cfg.accumulate, 1))

    def collate(chunk, device):
        rows = np.asarray([f["row"] for f in chunk])
        return {"x": torch.from_numpy(data.x_train[rows]).to(device),
                "target": torch.tensor([f["label"] for f in chunk], device=device)}

    def loss_fn(m, batch):
        return classification_loss(m(batch["x"]), batch["target"])

    started = time.perf_counter()
    result = fit(model, feats, cfg, lr=lr, seed=seed, loss_fn=loss_fn, collate_fn=collate,
                 eval_fn=lambda m: _evaluate(m, data.x_eval, data.y_eval, cfg.eval_batch_size,
                                             next(m.parameters()).device),
                 main_metric="accuracy", progress=run.progress, train_mode=frozen_norms_eval)
    seconds = time.perf_counter() - started
    save_model(model.cpu(), out / "model", run.source, data.labels, init=run.init, method=method.name)
    record = seed_record(kind=TABLE_TASK, source=run.source, init=run.init, method=method.name, seed=seed,
                         eval=result.eval, main_metric="accuracy", trainable=trainable, total=total,
                         history=result.history, steps=result.steps, epochs=result.epochs, lr=lr,
                         train_examples=len(subset), eval_examples=int(len(data.y_eval)), labels=data.labels,
                         seconds=seconds, best_epoch=result.best_epoch, batch_size=cfg.batch_size,
                         head_parameters=sum(p.numel() for p in model.head.parameters()))
    return write_seed(out, record, {run.init: result.history}, title=TABLE_TASK)


def save_model(model: TableClassifier, folder: Path, source: Path, labels: list[str], **info: Any) -> None:
    """The auto-encoder export (fine-tuned encoder) + head.safetensors + task.json."""
    from safetensors.torch import save_file

    from selfsup.adapt.core.models import save_task

    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.ae.export(folder)
    save_file({k: v.detach().contiguous() for k, v in model.head.state_dict().items()}, str(folder / HEAD_WEIGHTS))
    save_task(folder, {"kind": TABLE_TASK, "labels": labels, "num_labels": len(labels),
                       "feature_dim": int(model.head.in_features), "source_model": str(source), **info})


def _model_folder(folder: str | Path, pick_seed: bool = True) -> Path | None:
    """The `model/` folder of a fine-tuned table run (a multi-seed run: its best seed), or None."""
    from selfsup.adapt.core.models import TASK_FILE, finetuned_folder, read_task_info

    p = Path(folder)
    for f in (p, p / "model"):
        if (f / TASK_FILE).is_file() and (f / HEAD_WEIGHTS).is_file():
            return f if read_task_info(f).get("kind") == TABLE_TASK else None
    seeds = sorted(p.glob(f"seed-*/model/{HEAD_WEIGHTS}"))
    if not seeds or read_task_info(seeds[0].parent).get("kind") != TABLE_TASK:
        return None
    return finetuned_folder(p) if pick_seed else seeds[0].parent


def is_table_classifier(folder: str | Path) -> bool:
    """Is this a `selfsup finetune --task table-classification` run (its folder, `model/`, a multi-seed run)?"""
    try:
        return _model_folder(folder, pick_seed=False) is not None
    except SelfsupError:
        return False


def load_classifier(folder: str | Path) -> tuple[TableClassifier, dict[str, Any]]:
    """(classifier in eval mode on the CPU, task info) of a fine-tuned table folder."""
    from safetensors.torch import load_file

    from selfsup.adapt.core.models import read_task_info

    p = _model_folder(folder)
    if p is None:
        raise SelfsupError(f"{folder}: not a fine-tuned table model (no task.json of --task {TABLE_TASK})")
    info = read_task_info(p)
    encoder, _ = load_ae_encoder(p)
    model = TableClassifier(encoder, int(info["num_labels"]), 0)
    model.head.load_state_dict(load_file(str(p / HEAD_WEIGHTS)))
    return model.eval(), info


def _for_inference(folder: str | Path, batch_size: int, overrides: Sequence[str]):
    from selfsup.adapt.core.options import parse_overrides
    from selfsup.adapt.core.runs import device_of, resolve_threads

    model, info = load_classifier(folder)
    cfg = parse_overrides(overrides, {"eval_batch_size": batch_size})
    resolve_threads(cfg)
    return model.to(device_of(cfg)), info, cfg


def evaluate_table(folder: str | Path, eval_file: str, out: str | Path | None = None, *,
                   label_column: str | None = None, batch_size: int = 64,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`selfsup evaluate` for a fine-tuned table classifier: accuracy, macro-F1, MCC and loss on a labelled
    table (its rows preprocessed with the saved preprocessing; the label set must be the model's)."""
    from selfsup.adapt.core.runs import write_metrics
    from selfsup.adapt.core.tasks import check_labels

    model, info, cfg = _for_inference(folder, batch_size, overrides)
    x, examples = _examples(model.encoder, eval_file, label_column)
    check_labels(examples, info["labels"])
    index = {lab: i for i, lab in enumerate(info["labels"])}
    y = np.asarray([index[e.label] for e in examples], np.int64)
    metrics = {"task": TABLE_TASK, "model": str(folder), "eval_file": str(eval_file),
               "eval": _evaluate(model, x, y, cfg.eval_batch_size, next(model.parameters()).device)}
    write_metrics(out, metrics)
    return metrics


def predict_table(folder: str | Path, source: str, *, batch_size: int = 64,
                  overrides: Sequence[str] = ()) -> Iterator[dict]:
    """`selfsup predict` for a fine-tuned table classifier: one {"row", "label", "probabilities"} per row of
    `source` (labels there are ignored)."""
    if isinstance(source, str) and source == "-":
        raise SelfsupError("-: a table classifier reads a table file, not standard input")
    model, info, cfg = _for_inference(folder, batch_size, overrides)
    x, _ = ae_examples(model.encoder, [source], require_labels=False)
    device, labels = next(model.parameters()).device, info["labels"]
    with torch.no_grad():
        for i in range(0, len(x), cfg.eval_batch_size):
            probs = torch.softmax(model(torch.from_numpy(x[i:i + cfg.eval_batch_size]).to(device)).float(), -1)
            for j, p in enumerate(probs.cpu().numpy(), start=i):
                yield {"row": f"{source} row {j + 1}", "label": labels[int(p.argmax())],
                       "probabilities": {lab: round(float(v), 6) for lab, v in zip(labels, p)}}
