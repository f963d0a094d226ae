"""`selfsup finetune --task image-classification`: a linear head on the pooled features of an image encoder
exported by `selfsup pretrain` (ResNet or ViT), cross-entropy, AdamW, evaluated every epoch.

Same verb, options and outputs as the text tasks (`selfsup.adapt.core.run.finetune`): `--method full|linear`
(linear freezes the encoder, BatchNorm statistics included), `--init pretrained|scratch` (scratch: the same
architecture, freshly initialized with the seed), few-label subsets with `--train-fraction` / `--shots`
(`selfsup.adapt.core.tasks.subsample`, the same seeded draw as text), `--seeds N` (mean ± std), the loop recipe
of `FinetuneConfig` (`--set lr=...`, warmup, schedule, clipping). Images are read with
`selfsup.data.images.load_images` at the export's size and channels and normalized with its mean/std.

Image-only `--set` keys: `augment` (`crop` — default: random resized crop, area 0.5–1, no flip, since flips
change digits and text; `crop-flip`; `none`), `crop_scale_min`; `eval_every` (epochs between evaluations) is shared with text.

Outputs (atomic, like text): `model/` = transformers' own classifier (`ResNetForImageClassification`;
`ViTForImageClassification` for a [CLS]-pooled ViT, `Dinov2ForImageClassification` for a mean-pooled one;
`image_model.py` says why each is exact) with id2label / label2id, `preprocessor_config.json`
(`AutoImageProcessor`), `preprocessing.json` (copied: the folder still loads as an encoder with
`load_vision_encoder` / `selfsup evaluate --probe`, and fine-tunes again), `task.json` and a model card
(README.md); `metrics.json` (`eval` with accuracy / macro_f1 / mcc / loss, parameter counts, per-epoch
`history`); `curves.png`. Folders of the older format (encoder + `head.safetensors` + `head.json`) still load.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from selfsup.config import bounded
from selfsup.adapt.core.encoders import image_export_folder
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


def is_image_encoder(model: str | Path) -> bool:
    """Is `model` an image encoder exported by an image `selfsup pretrain` (it has preprocessing.json)?"""
    return image_export_folder(model) is not None


# ------------------------------------------------------------------------------------------------ model

def load_encoder(model: str | Path, init: str, seed: int, check_only: bool = False):
    """(VisionEncoder, preprocessing, export folder); `init="scratch"` rebuilds the architecture, seeded.
    `check_only`: validate the export and return its folder without loading weights."""
    import torch

    from selfsup.adapt.core.encoders import load_image_encoder
    from selfsup.adapt.core.models import quiet_transformers
    from selfsup.backbones.vision import VisionEncoder

    folder = image_export_folder(model)
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
    if check_only:
        return folder
    quiet_transformers()
    encoder, prep = load_image_encoder(folder)
    if kind == "vit" and hasattr(encoder.model, "pooler"):  # AutoModel adds ViT's pooler (absent from the
        encoder.model.pooler = None  # export, never used by the pooled features); DINOv2 has none
    if init == "scratch":
        hf = encoder.model
        kwargs = {"add_pooling_layer": False} if getattr(hf, "pooler", "x") is None else {}
        torch.manual_seed(seed)
        encoder = VisionEncoder(type(hf)(hf.config, **kwargs), encoder.pooling if kind == "vit" else "auto")
    return encoder, prep, folder


def build_classifier(encoder, num_labels: int, seed: int):
    """`encoder` (a VisionEncoder) + a seeded linear head: normalized (B, C, S, S) images -> (B, labels) logits."""
    from selfsup.adapt.core.image_model import ImageClassifier

    return ImageClassifier(encoder, num_labels, seed)


# ------------------------------------------------------------------------------------------------- data

@dataclasses.dataclass
class ImageData:
    images_train: Any
    images_eval: Any
    labels: list[str]
    train: list  # TextExample stand-ins (text = image index), so tasks.subsample / label_set apply as for text
    eval: list
    y_eval: Any


def _examples(source: str, images) -> list:
    from selfsup.adapt.core.tasks import TextExample

    y = images.labels
    if len(y) and (y < 0).any():
        i = int((y < 0).argmax())
        raise SelfsupError(f"{source}: image {i} has no label (class sub-folders, y in the .npz, an IDX labels "
                           "file or a label column)")
    names = images.classes
    return [TextExample(str(i), None, names[int(v)] if names else str(int(v)), f"{source} image {i}")
            for i, v in enumerate(y)]


def load_image_data(train: str, eval: str, prep: dict) -> ImageData:
    import numpy as np

    from selfsup.adapt.core.tasks import check_labels, label_set
    from selfsup.data.images import ImageDataConfig, load_images

    cfg = ImageDataConfig(image_size=int(prep["image_size"]), channels=int(prep["channels"]), holdout_fraction=0.0)
    tr, ev = load_images([train], cfg), load_images([eval], cfg)
    train_ex, eval_ex = _examples(train, tr), _examples(eval, ev)
    labels = label_set(train_ex, train)
    check_labels(eval_ex, labels)
    index = {lab: i for i, lab in enumerate(labels)}
    y_eval = np.asarray([index[e.label] for e in eval_ex], np.int64)
    return ImageData(tr.images, ev.images, labels, train_ex, eval_ex, y_eval)


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
    from selfsup.adapt.core.runs import autocast

    was = model.training
    model.eval()
    loss, metric = M.MeanLoss(), M.ClassificationMetrics(int(model.num_labels))
    with torch.no_grad(), autocast(device):
        for i in range(0, len(y), batch_size):
            idx = np.arange(i, min(i + batch_size, len(y)))
            logits = model(_normalize(_pixels(images, idx, device), prep)).float()
            target = torch.from_numpy(y[idx]).to(device)
            loss.update(torch.nn.functional.cross_entropy(logits, target).item(), len(idx))
            metric.update(logits.argmax(-1).cpu().numpy(), y[idx])
    model.train(was)
    return {"loss": loss.compute(), **metric.compute(), "examples": int(len(y))}


# ---------------------------------------------------------------------------------------------- training

def encoder_folder(model: str | Path) -> Path:
    """The export folder of an image encoder that `--task image-classification` can fine-tune (checked)."""
    return load_encoder(model, "pretrained", 0, check_only=True)


def preprocessing(folder: Path) -> dict:
    return json.loads((Path(folder) / "preprocessing.json").read_text())


def encoder_family(folder: Path) -> str:
    return json.loads((Path(folder) / "preprocessing.json").read_text()).get("model_type", "")


def train_image_seed(method, run, seed: int, out: Path, subset: list) -> dict[str, Any]:
    """A linear head on the encoder's pooled features, adapted by `method` (full: everything trains; linear:
    the encoder is frozen, BatchNorm statistics included), trained by the shared fitting loop."""
    import numpy as np
    import torch

    from selfsup.adapt.core.fit import classification_loss, fit, frozen_norms_eval
    from selfsup.adapt.core.models import count_parameters
    from selfsup.adapt.core.runs import seed_record, write_seed

    cfg, data, opts = run.cfg, run.data, run.modality_opts or ImageOptions()
    encoder, prep, _ = load_encoder(run.source, run.init, seed)
    model = build_classifier(encoder, len(data.labels), seed)
    model, _ = method.prepare(model, {"head.weight", "head.bias"}, IMAGE_TASK, run.opts, run.source)
    trainable, total = count_parameters(model)
    index = {lab: i for i, lab in enumerate(data.labels)}
    feats = [{"image": int(e.text), "label": index[e.label]} for e in subset]
    augment = _augmentation(opts, int(prep["image_size"]))
    lr = cfg.lr or method.image_lr
    if cfg.batch_size > len(feats):  # a few-shot set smaller than a batch: one batch of all of it
        cfg = dataclasses.replace(cfg, batch_size=max(len(feats) // (cfg.devices * cfg.num_nodes * cfg.accumulate)
                                                      * cfg.devices * cfg.num_nodes * cfg.accumulate, 1))

    def collate(chunk, device):
        x = _pixels(data.images_train, np.asarray([f["image"] for f in chunk]), device)
        if augment is not None:
            x = augment(x)
        return {"pixels": _normalize(x, prep), "target": torch.tensor([f["label"] for f in chunk], device=device)}

    def loss_fn(m, batch):
        return classification_loss(m(batch["pixels"]), batch["target"])

    started = time.perf_counter()
    result = fit(model, feats, cfg, lr=lr, seed=seed, loss_fn=loss_fn, collate_fn=collate,
                 eval_fn=lambda m: _evaluate(m, data.images_eval, data.y_eval, prep, cfg.eval_batch_size,
                                             next(m.parameters()).device),
                 main_metric="accuracy", progress=run.progress, train_mode=frozen_norms_eval)
    seconds = time.perf_counter() - started
    save_model(model, prep, out / "model", run.source, data.labels, init=run.init, method=method.name)
    record = seed_record(kind=IMAGE_TASK, source=run.source, init=run.init, method=method.name, seed=seed,
                         eval=result.eval, main_metric="accuracy", trainable=trainable, total=total,
                         history=result.history, steps=result.steps, epochs=result.epochs, lr=lr,
                         train_examples=len(subset), eval_examples=int(len(data.y_eval)), labels=data.labels,
                         seconds=seconds, best_epoch=result.best_epoch, batch_size=cfg.batch_size,
                         head_parameters=sum(p.numel() for p in model.head.parameters()), augment=opts.augment)
    return write_seed(out, record, {run.init: result.history}, title=IMAGE_TASK)


def save_model(model, prep: dict, folder: Path, source: Path, labels: list[str], **info: Any) -> None:
    """transformers' own image classifier (`image_model.to_transformers`: config with id2label / label2id,
    `preprocessor_config.json` for `AutoImageProcessor`), preprocessing.json (so the folder is still an encoder
    export for `load_vision_encoder` / `--probe`) and task.json. A ViT that no transformers class computes (an MLP
    width DINOv2 cannot express) keeps selfsup's format: the encoder + head.safetensors."""
    from safetensors.torch import save_file
    from transformers.utils import logging as hf_logging

    from selfsup.adapt.core.image_model import to_transformers
    from selfsup.adapt.core.models import save_task

    hf_logging.disable_progress_bar()
    folder.mkdir(parents=True, exist_ok=True)
    native = to_transformers(model, labels)
    if native is not None:
        native.save_pretrained(str(folder), safe_serialization=True)
        image_processor(prep).save_pretrained(str(folder))
    else:
        model.encoder.model.save_pretrained(str(folder), safe_serialization=True)
        save_file({k: v.detach().contiguous() for k, v in model.head.state_dict().items()}, str(folder / HEAD_WEIGHTS))
    shutil.copyfile(source / "preprocessing.json", folder / "preprocessing.json")
    save_task(folder, {"kind": IMAGE_TASK, "labels": labels, "feature_dim": int(model.head.in_features),
                       "num_labels": len(labels), "pooling": model.encoder.pooling, "source_model": str(source),
                       "format": "transformers" if native is not None else "selfsup", **info})


def image_processor(prep: dict):
    """transformers' ViTImageProcessor doing selfsup's preprocessing: resize to the model's size (bilinear, as
    selfsup's readers), pixels / 255, then (x - mean) / std per channel. Grey models (1 channel) take grey
    images: (H, W) or (1, H, W) arrays, PIL "L" images (the processor never converts to RGB)."""
    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    size = int(prep["image_size"])
    return ViTImageProcessor(do_resize=True, size={"height": size, "width": size},
                             resample=PILImageResampling.BILINEAR, do_rescale=True, rescale_factor=1 / 255,
                             do_normalize=True, image_mean=list(prep["mean"]), image_std=list(prep["std"]))


def _model_folder(folder: str | Path, pick_seed: bool = True) -> Path | None:
    """The `model/` folder of a fine-tuned image run (a multi-seed run: its best seed, or with `pick_seed=False`
    its first, said nowhere), or None."""
    from selfsup.adapt.core.models import TASK_FILE, finetuned_folder

    p = Path(folder)
    for f in (p, p / "model"):
        if (f / HEAD_INFO).is_file():  # written before task.json: encoder + head.safetensors
            return f
        if (f / TASK_FILE).is_file():
            return f if _kind(f / TASK_FILE) == IMAGE_TASK else None
    seeds = sorted(p.glob(f"seed-*/model/{TASK_FILE}"))
    if not seeds or _kind(seeds[0]) != IMAGE_TASK:
        return None
    return finetuned_folder(p) if pick_seed else seeds[0].parent


def _kind(task_file: Path) -> str | None:
    try:
        return json.loads(task_file.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def load_classifier(folder: str | Path):
    """(module in eval mode: normalized images -> logits, preprocessing, task info) of a fine-tuned folder."""
    from safetensors.torch import load_file

    from selfsup.adapt.core.image_model import NativeImageClassifier
    from selfsup.adapt.core.models import TASK_FILE, load_error, quiet_transformers, read_task_info

    p = _model_folder(folder)
    if p is None:
        raise SelfsupError(f"{folder}: not a fine-tuned image model (no {TASK_FILE} of --task {IMAGE_TASK})")
    info = read_task_info(p) if (p / TASK_FILE).is_file() else json.loads((p / HEAD_INFO).read_text())
    if info.get("format") == "transformers":
        from transformers import AutoModelForImageClassification

        quiet_transformers()
        try:
            model = NativeImageClassifier(AutoModelForImageClassification.from_pretrained(str(p)))
        except Exception as e:
            raise load_error(p, e, "cannot load the fine-tuned model") from None
        return model.eval(), preprocessing(p), info
    encoder, prep, _ = load_encoder(p, "pretrained", 0)
    model = build_classifier(encoder, info["num_labels"], 0)
    model.head.load_state_dict(load_file(str(p / HEAD_WEIGHTS)))
    return model.eval(), prep, info


def is_classifier(folder: str | Path) -> bool:
    """Is this a `selfsup finetune --task image-classification` run (its folder, `model/`, a multi-seed run)?"""
    try:
        return _model_folder(folder, pick_seed=False) is not None
    except SelfsupError:
        return False


def _for_inference(folder: str | Path, source: str, batch_size: int, overrides: Sequence[str]):
    """(classifier on its device, preprocessing, head info, options, images of `source`) for evaluate/predict;
    `--set` keys win over `batch_size`, as for text models."""
    from selfsup.adapt.core.options import parse_overrides
    from selfsup.adapt.core.runs import device_of, resolve_threads
    from selfsup.data.images import ImageDataConfig, load_images

    model, prep, info = load_classifier(folder)
    cfg = parse_overrides(overrides, {"eval_batch_size": batch_size})
    resolve_threads(cfg)
    images = load_images([source], ImageDataConfig(image_size=int(prep["image_size"]), channels=int(prep["channels"]),
                                                   holdout_fraction=0.0))
    return model.to(device_of(cfg)), prep, info, cfg, images


def evaluate_image(folder: str | Path, eval_file: str, out: str | Path | None = None, *, batch_size: int = 64,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`selfsup evaluate` for a fine-tuned image classifier: accuracy, macro-F1, MCC and loss on a labeled image
    source (the label set must be the model's)."""
    import numpy as np

    from selfsup.adapt.core.runs import write_metrics
    from selfsup.adapt.core.tasks import check_labels

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

    if isinstance(source, str) and source == "-":
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
