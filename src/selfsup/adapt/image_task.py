"""`selfsup finetune --task image-classification`: a linear head on the pooled features of an image encoder
exported by `selfsup pretrain` (ResNet or ViT), cross-entropy, AdamW, evaluated every epoch.

Same verb, options and outputs as the text tasks (`selfsup.adapt.finetune`): `--method full|linear`
(linear freezes the encoder, BatchNorm statistics included), `--init pretrained|scratch` (scratch: the same
architecture, freshly initialized with the seed), few-label subsets with `--train-fraction` / `--shots`
(`selfsup.adapt.tasks.subsample`, the same seeded draw as text), `--seeds N` (mean ± std), the loop recipe
of `FinetuneConfig` (`--set lr=...`, warmup, schedule, clipping). Images are read with
`selfsup.data.images.load_images` at the export's size and channels and normalized with its mean/std.

Image-only `--set` keys: `augment` (`crop` — default: random resized crop, area 0.5–1, no flip, since flips
change digits and text; `crop-flip`; `none`), `crop_scale_min`, `eval_every` (epochs between evaluations).

Outputs (atomic, like text): `model/` = the fine-tuned encoder in HF format (`save_pretrained`, so it still
loads with `load_vision_encoder` / `selfsup evaluate --probe`), `preprocessing.json` (copied),
`head.safetensors` (`weight`, `bias`) and `head.json` (labels, feature size); `metrics.json` (`eval` with
accuracy / macro_f1 / mcc / loss, parameter counts, per-epoch `history`); `curves.png`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from selfsup.config import bounded, from_dict, to_dict
from selfsup.errors import SelfsupError

IMAGE_TASK = "image-classification"
HEAD_WEIGHTS = "head.safetensors"
HEAD_INFO = "head.json"
SUPPORTED = ("resnet", "vit")


@dataclasses.dataclass
class ImageOptions:
    """The image-only `--set` keys (every other key is `FinetuneConfig`'s)."""
    augment: Literal["crop", "crop-flip", "none"] = "crop"
    crop_scale_min: float = bounded(0.5, gt=0, le=1, doc="random resized crop: smallest area fraction")
    eval_every: int = bounded(1, ge=1, doc="evaluate every N epochs (and after the last)")


def _export_folder(model: str | Path) -> Path | None:
    from selfsup.backbones.vision import PREPROCESSING

    p = Path(model)
    for folder in (p / "model", p):
        if (folder / PREPROCESSING).is_file():
            return folder
    return None


def handles(task: str, model: str | Path) -> bool:
    """Does `selfsup finetune` route this call here? (the image task, or any exported image encoder)"""
    return task == IMAGE_TASK or _export_folder(model) is not None


def _split_overrides(pairs: Sequence[str], base: dict) -> tuple[Any, ImageOptions]:
    import yaml

    from selfsup.adapt.finetune import parse_overrides

    own = {f.name for f in dataclasses.fields(ImageOptions)}
    rest, mine = [], {}
    for item in pairs:
        key, eq, value = item.partition("=")
        if eq and key.strip() in own:
            mine[key.strip()] = yaml.safe_load(value)
        else:
            rest.append(item)
    return parse_overrides(rest, base), from_dict(ImageOptions, mine)


# ------------------------------------------------------------------------------------------------ model

def load_encoder(model: str | Path, init: str, seed: int):
    """(VisionEncoder, preprocessing, export folder); `init="scratch"` rebuilds the architecture, seeded."""
    import torch

    from selfsup.adapt.heads import quiet_transformers
    from selfsup.backbones.vision import VisionEncoder, load_vision_encoder

    folder = _export_folder(model)
    if folder is None:
        if not Path(model).exists():
            raise SelfsupError(f"{model}: no such folder (expected a run folder of an image `selfsup pretrain`)")
        raise SelfsupError(f"{model}: not an exported image encoder (no preprocessing.json); "
                           f"--task {IMAGE_TASK} needs a run of an image recipe (simclr, moco, byol, ...)")
    prep = json.loads((folder / "preprocessing.json").read_text())
    kind = prep.get("model_type")
    if kind not in SUPPORTED:
        raise SelfsupError(f"{folder}: --task {IMAGE_TASK} fine-tunes resnet and vit encoders, not {kind!r} "
                           f"(probe its frozen features with `selfsup evaluate --probe linear`)")
    quiet_transformers()
    encoder, prep = load_vision_encoder(folder)
    if kind == "vit":  # AutoModel adds ViT's pooler (absent from the export, never used by the pooled features)
        encoder.model.pooler = None
    if init == "scratch":
        hf = encoder.model
        kwargs = {"add_pooling_layer": False} if getattr(hf, "pooler", "x") is None else {}
        torch.manual_seed(seed)
        encoder = VisionEncoder(type(hf)(hf.config, **kwargs), encoder.pooling if kind == "vit" else "auto")
    return encoder, prep, folder


def build_classifier(encoder, num_labels: int, seed: int):
    """`encoder` (a VisionEncoder) + a seeded linear head: normalized (B, C, S, S) images -> (B, labels) logits."""
    import torch

    class ImageClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            torch.manual_seed(seed)
            self.head = torch.nn.Linear(encoder.feature_dim, num_labels)

        def forward(self, pixel_values):
            return self.head(self.encoder(pixel_values))

    return ImageClassifier()


# ------------------------------------------------------------------------------------------------- data

@dataclasses.dataclass
class _ImageData:
    images_train: Any
    images_eval: Any
    labels: list[str]
    train: list  # TextExample stand-ins (text = image index), so tasks.subsample / label_set apply as for text
    eval: list
    y_eval: Any


def _examples(source: str, images) -> list:
    from selfsup.adapt.tasks import TextExample

    y = images.labels
    if len(y) and (y < 0).any():
        i = int((y < 0).argmax())
        raise SelfsupError(f"{source}: image {i} has no label (class sub-folders, y in the .npz, an IDX labels "
                           "file or a label column)")
    names = images.classes
    return [TextExample(str(i), None, names[int(v)] if names else str(int(v)), f"{source} image {i}")
            for i, v in enumerate(y)]


def load_image_data(train: str, eval: str, prep: dict) -> _ImageData:
    import numpy as np

    from selfsup.adapt.tasks import check_labels, label_set
    from selfsup.data.images import ImageDataConfig, load_images

    cfg = ImageDataConfig(image_size=int(prep["image_size"]), channels=int(prep["channels"]), holdout_fraction=0.0)
    tr, ev = load_images([train], cfg), load_images([eval], cfg)
    train_ex, eval_ex = _examples(train, tr), _examples(eval, ev)
    labels = label_set(train_ex, train)
    check_labels(eval_ex, labels)
    index = {lab: i for i, lab in enumerate(labels)}
    y_eval = np.asarray([index[e.label] for e in eval_ex], np.int64)
    return _ImageData(tr.images, ev.images, labels, train_ex, eval_ex, y_eval)


def _pixels(images, idx, device):
    """uint8 images[idx] (memory-mapped) -> floats in [0, 1] on `device`."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(images[idx])).to(device).float() / 255.0


def _normalize(x, prep: dict):
    import torch

    m = torch.tensor(prep["mean"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(prep["std"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _augmentation(opts: ImageOptions, size: int):
    if opts.augment == "none":
        return None
    import kornia.augmentation as K
    import torch

    steps = [K.RandomResizedCrop((size, size), scale=(opts.crop_scale_min, 1.0))]
    if opts.augment == "crop-flip":
        steps.append(K.RandomHorizontalFlip())
    return torch.nn.Sequential(*steps)


def _evaluate(model, images, y, prep: dict, batch_size: int, device) -> dict[str, float]:
    import numpy as np
    import torch

    from selfsup import metrics as M
    from selfsup.adapt.finetune import _autocast

    was = model.training
    model.eval()
    loss, metric = M.MeanLoss(), M.ClassificationMetrics(int(model.head.out_features))
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(y), batch_size):
            idx = np.arange(i, min(i + batch_size, len(y)))
            logits = model(_normalize(_pixels(images, idx, device), prep)).float()
            target = torch.from_numpy(y[idx]).to(device)
            loss.update(torch.nn.functional.cross_entropy(logits, target).item(), len(idx))
            metric.update(logits.argmax(-1).cpu().numpy(), y[idx])
    model.train(was)
    return {"loss": loss.compute(), **metric.compute(), "examples": int(len(y))}


# ---------------------------------------------------------------------------------------------- training

def _train_one(folder: Path, data: _ImageData, cfg, opts: ImageOptions, *, method: str, init: str, seed: int,
               out: Path, subset: list, source: str, progress: bool) -> dict[str, Any]:
    import numpy as np
    import torch

    from selfsup.adapt.finetune import _autocast, _device, update
    from selfsup.adapt.heads import count_parameters
    from selfsup.engine.module import lr_lambda, param_groups

    encoder, prep, _ = load_encoder(folder, init, seed)
    model = build_classifier(encoder, len(data.labels), seed)
    if method == "linear":
        model.encoder.requires_grad_(False)
    trainable, total = count_parameters(model)
    device = _device(cfg)
    model.to(device)
    index = {lab: i for i, lab in enumerate(data.labels)}
    train_idx = np.asarray([int(e.text) for e in subset], np.int64)
    train_y = np.asarray([index[e.label] for e in subset], np.int64)
    augment = _augmentation(opts, int(prep["image_size"]))

    lr = cfg.lr or (1e-2 if method == "linear" else 1e-3)
    batch_size = min(cfg.batch_size, len(train_idx))
    per_epoch = math.ceil(len(train_idx) / batch_size)
    total_steps = cfg.max_steps or cfg.epochs * per_epoch
    epochs = math.ceil(total_steps / per_epoch)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr, betas=tuple(cfg.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(cfg.schedule, int(cfg.warmup_ratio * total_steps), total_steps))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # kornia's random crops draw from torch's global generator
    params = [p for p in model.parameters() if p.requires_grad]
    history: list[dict[str, Any]] = []
    step, ev = 0, None
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        if method == "linear":
            model.encoder.eval()  # frozen: BatchNorm uses (and keeps) the pretrained statistics
        order = torch.randperm(len(train_idx), generator=gen).numpy()
        loss_sum, correct, n_seen = 0.0, 0, 0
        for b in range(per_epoch):
            if step >= total_steps:
                break
            pick = order[b * batch_size:(b + 1) * batch_size]
            x = _pixels(data.images_train, train_idx[pick], device)
            if augment is not None:
                x = augment(x)
            target = torch.from_numpy(train_y[pick]).to(device)
            with _autocast(device):
                logits = model(_normalize(x, prep)).float()
                loss = torch.nn.functional.cross_entropy(logits, target)
            update(loss, params, opt, sched, cfg.grad_clip, step)
            step += 1
            loss_sum += loss.item() * len(pick)
            correct += int((logits.argmax(-1) == target).sum())
            n_seen += len(pick)
        row: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(1, n_seen),
                               "train_accuracy": correct / max(1, n_seen)}
        if epoch % opts.eval_every == 0 or epoch == epochs:
            ev = _evaluate(model, data.images_eval, data.y_eval, prep, cfg.eval_batch_size, device)
            row.update({"eval_loss": ev["loss"], **{k: v for k, v in ev.items() if k not in ("loss", "examples")}})
            if progress:
                print(f"epoch {epoch}/{epochs} step {step}: train_loss={row['train_loss']:.4f} "
                      f"eval_loss={row['eval_loss']:.4f} accuracy={row['accuracy']:.4f}", file=sys.stderr)
        history.append(row)
    seconds = time.perf_counter() - started
    assert ev is not None
    model.cpu()
    save_model(model, prep, out / "model", folder, data.labels, init=init, method=method)
    metrics = {"task": IMAGE_TASK, "model": str(folder), "init": init, "method": method, "seed": seed,
               "eval": ev, "main_metric": "accuracy", "trainable_parameters": trainable,
               "total_parameters": total, "head_parameters": sum(p.numel() for p in model.head.parameters()),
               "history": history, "steps": step, "epochs": epochs, "lr": lr, "batch_size": batch_size,
               "train_examples": len(subset), "eval_examples": int(len(data.y_eval)), "labels": data.labels,
               "augment": opts.augment, "train_seconds": round(seconds, 2)}
    from selfsup.adapt.plots import plot_history
    from selfsup.fileio import atomic_write_json

    atomic_write_json(out / "metrics.json", metrics)
    plot_history({init: [r for r in history if "eval_loss" in r]}, out / "curves.png", "accuracy", title=IMAGE_TASK)
    return metrics


def save_model(model, prep: dict, folder: Path, source: Path, labels: list[str], **info: Any) -> None:
    """The encoder in HF format + preprocessing.json (so it reloads with `load_vision_encoder`), the head as
    safetensors and its label set in head.json."""
    from safetensors.torch import save_file
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.model.save_pretrained(str(folder), safe_serialization=True)
    shutil.copyfile(source / "preprocessing.json", folder / "preprocessing.json")
    save_file({k: v.detach().contiguous() for k, v in model.head.state_dict().items()}, str(folder / HEAD_WEIGHTS))
    (folder / HEAD_INFO).write_text(json.dumps(
        {"task": IMAGE_TASK, "labels": labels, "feature_dim": int(model.head.in_features),
         "num_labels": len(labels), "pooling": model.encoder.pooling, "source_model": str(source), **info},
        indent=2) + "\n")


def load_classifier(folder: str | Path):
    """(module in eval mode: normalized images -> logits, preprocessing, head info) of a fine-tuned folder."""
    from safetensors.torch import load_file

    p = Path(folder)
    p = p / "model" if (p / "model" / HEAD_INFO).is_file() else p
    if not (p / HEAD_INFO).is_file():
        raise SelfsupError(f"{folder}: not a fine-tuned image model (no {HEAD_INFO})")
    info = json.loads((p / HEAD_INFO).read_text())
    encoder, prep, _ = load_encoder(p, "pretrained", 0)
    model = build_classifier(encoder, info["num_labels"], 0)
    model.head.load_state_dict(load_file(str(p / HEAD_WEIGHTS)))
    return model.eval(), prep, info


def is_classifier(folder: str | Path) -> bool:
    """Is this a `selfsup finetune --task image-classification` run (or its `model/`)?"""
    p = Path(folder)
    return (p / HEAD_INFO).is_file() or (p / "model" / HEAD_INFO).is_file()


def _for_inference(folder: str | Path, source: str, batch_size: int, overrides: Sequence[str]):
    """(classifier on its device, preprocessing, head info, options, images of `source`) for evaluate/predict;
    `--set` keys win over `batch_size`, as for text models."""
    from selfsup.adapt.finetune import _device, _resolve_threads, parse_overrides
    from selfsup.data.images import ImageDataConfig, load_images

    model, prep, info = load_classifier(folder)
    cfg = parse_overrides(overrides, {"eval_batch_size": batch_size})
    _resolve_threads(cfg)
    images = load_images([source], ImageDataConfig(image_size=int(prep["image_size"]), channels=int(prep["channels"]),
                                                   holdout_fraction=0.0))
    return model.to(_device(cfg)), prep, info, cfg, images


def evaluate_image(folder: str | Path, eval_file: str, out: str | Path | None = None, *, batch_size: int = 64,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`selfsup evaluate` for a fine-tuned image classifier: accuracy, macro-F1, MCC and loss on a labeled image
    source (the label set must be the model's)."""
    import numpy as np

    from selfsup.adapt.finetune import write_metrics
    from selfsup.adapt.tasks import check_labels

    model, prep, info, cfg, images = _for_inference(folder, eval_file, batch_size, overrides)
    examples = _examples(eval_file, images)
    check_labels(examples, info["labels"])
    index = {lab: i for i, lab in enumerate(info["labels"])}
    y = np.asarray([index[e.label] for e in examples], np.int64)
    device = next(model.parameters()).device
    metrics = {"task": IMAGE_TASK, "model": str(folder), "eval_file": str(eval_file),
               "eval": _evaluate(model, images.images, y, prep, cfg.eval_batch_size, device)}
    write_metrics(out, metrics)
    return metrics


def predict_image(folder: str | Path, source: str, *, batch_size: int = 64,
                  overrides: Sequence[str] = ()) -> Iterator[dict]:
    """`selfsup predict` for a fine-tuned image classifier: one {"image", "label", "probabilities"} per image of
    `source` (any image source `selfsup` reads; labels there are ignored), batch by batch."""
    import numpy as np
    import torch

    if source == "-":
        raise SelfsupError("-: an image classifier reads images from a file or folder, not from standard input")
    model, prep, info, cfg, images = _for_inference(folder, source, batch_size, overrides)
    device = next(model.parameters()).device
    labels = info["labels"]
    with torch.no_grad():
        for i in range(0, len(images.images), cfg.eval_batch_size):
            idx = np.arange(i, min(i + cfg.eval_batch_size, len(images.images)))
            probs = torch.softmax(model(_normalize(_pixels(images.images, idx, device), prep)).float(), -1)
            for j, p in zip(idx, probs.cpu().numpy()):
                yield {"image": f"{source} image {int(j)}", "label": labels[int(p.argmax())],
                       "probabilities": {lab: round(float(x), 6) for lab, x in zip(labels, p)}}


# ------------------------------------------------------------------------------------------------- verb

def finetune_image(model: str | Path, task: str, train: str, eval: str, out: str | Path, *, method: str = "full",
                   init: str = "pretrained", text_column: str | None = None, pair_column: str | None = None,
                   label_column: str | None = None, epochs: int | None = None, max_steps: int | None = None,
                   seed: int = 0, overrides: Sequence[str] = (), train_fraction: float | None = None,
                   shots: int | None = None, seeds: int = 1, progress: bool = False) -> dict[str, Any]:
    """`selfsup.adapt.finetune.finetune` for `task="image-classification"` (same arguments and outputs)."""
    from selfsup.adapt.finetune import _check_out, _resolve_threads, over_seeds
    from selfsup.adapt.tasks import subsample

    out = Path(out)
    if task != IMAGE_TASK:
        raise SelfsupError(f"{model}: an image encoder; fine-tune it with --task {IMAGE_TASK}, not {task!r}")
    if method not in ("full", "linear"):
        raise SelfsupError(f"--method: {IMAGE_TASK} supports full or linear, got {method!r}")
    if init not in ("pretrained", "scratch"):
        raise SelfsupError(f"--init: expected pretrained or scratch, got {init!r}")
    if text_column or pair_column or label_column:
        raise SelfsupError(f"--text-column/--pair-column/--label-column: not used by {IMAGE_TASK} "
                           "(labels come from the image data)")
    if seeds < 1:
        raise SelfsupError(f"--seeds: must be >= 1, got {seeds}")
    if train_fraction is not None and not 0 < train_fraction <= 1:
        raise SelfsupError(f"--train-fraction: must be in (0, 1], got {train_fraction}")
    if shots is not None and shots < 1:
        raise SelfsupError(f"--shots: must be >= 1, got {shots}")
    base: dict[str, Any] = {}
    if epochs is not None:
        base["epochs"] = epochs
    if max_steps is not None:
        base["max_steps"] = max_steps
    cfg, opts = _split_overrides(overrides, base)
    _check_out(out)
    _, prep, folder = load_encoder(model, "pretrained", seed)  # validates the model before reading data
    data = load_image_data(train, eval, prep)
    for s in range(seed, seed + seeds):  # a too-small class is an error before anything is written
        subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
    _resolve_threads(cfg)

    def train_seed(s: int, run_dir: Path) -> dict[str, Any]:
        subset = subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
        return _train_one(folder, data, cfg, opts, method=method, init=init, seed=s, out=run_dir,
                          subset=subset, source=train, progress=progress)

    return over_seeds(out, seed, seeds, train_seed, {**to_dict(cfg), **to_dict(opts)},
                      shared=("head_parameters", "augment"))
