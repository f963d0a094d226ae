"""`selfsup finetune --task audio-classification`: one label per clip (keyword spotting, speaker or emotion
classes) from a speech encoder — a `selfsup pretrain` speech run (mockingjay, wav2vec2, hubert, apc, ...) or
a Hugging Face wav2vec2 / HuBERT / data2vec-audio / WavLM / Wav2Vec2Bert folder.

The classifier is transformers' own audio-classification head on the encoder (`audio_model.py`: a linear
projection of the last layer, the mean over real frames, a linear classifier), adapted by the method (`full`,
`linear`, `bitfit`, `lora`) and trained by the shared fitting loop (`core.fit`). Clips are read with
`selfsup.data.audio.load_audio` (WAV/FLAC/OGG files, class sub-folders, CSV/TSV/JSONL manifests with a `path`
column, `hf:`, `selfsup:speech-words`) and turned into the encoder's own input — the waveform or log-mel
frames at its sample rate, normalized with the statistics in its `preprocessing.json` (`AudioFrontEnd`).
`--label-column` names the class column (default `label`: class sub-folders); `--text-column` the path column.

The default learning rate is the method's non-text one (`image_lr`: 1e-3 full / lora, 1e-2 linear). Audio-only
`--set` key: `crop_seconds` (training clips are randomly cropped to at most this long; default:
whole clips). Outputs: `model/` = the fine-tuned `*ForSequenceClassification` in HF format (it loads with
`transformers.AutoModelForAudioClassification`; LoRA: peft's artifact on the encoder it was made on) +
`preprocessing.json` (the front end) + `task.json`; `metrics.json`, `curves.png`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from selfsup.adapt.core.kinds import KINDS
from selfsup.config import bounded
from selfsup.errors import SelfsupError

AUDIO_TASK = "audio-classification"
PREPROCESSING = "preprocessing.json"
# HF config model_type of the speech encoders this task fine-tunes
SPEECH_MODEL_TYPES = ("wav2vec2", "hubert", "data2vec-audio", "wavlm", "wav2vec2-bert", "selfsup-gru")


@dataclasses.dataclass
class AudioOptions:
    """The audio-only `--set` keys (every other key is `FinetuneConfig`'s)."""
    crop_seconds: float | None = bounded(None, gt=0, doc="training: a random window of at most this many seconds "
                                         "per clip (default: whole clips)")


# ------------------------------------------------------------------------------------------------ model

def _config_folder(model: str | Path) -> Path | None:
    p = Path(model)
    return next((f for f in (p / "model", p) if (f / "config.json").is_file()), None)


def _model_type(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError) as e:
        raise SelfsupError(f"{folder / 'config.json'}: unreadable ({e})") from None


def is_speech_encoder(model: str | Path) -> bool:
    """Is `model` (a run folder or an HF folder) a speech encoder this task can fine-tune?"""
    folder = _config_folder(model)
    return folder is not None and _model_type(folder) in SPEECH_MODEL_TYPES


def encoder_folder(model: str | Path) -> Path:
    """The HF folder of a speech encoder that `--task audio-classification` can fine-tune (checked)."""
    folder = _config_folder(model)
    if folder is None:
        if not Path(model).exists():
            raise SelfsupError(f"{model}: no such folder (expected a speech run folder of `selfsup pretrain` or an "
                               "HF speech model folder)")
        raise SelfsupError(f"{model}: not a checkpoint (no config.json, and no model/config.json of a selfsup run)")
    kind = _model_type(folder)
    if kind not in SPEECH_MODEL_TYPES:
        raise SelfsupError(f"{folder}: a {kind!r} model is not a speech encoder; --task {AUDIO_TASK} needs a run of "
                           f"a speech recipe (mockingjay, wav2vec2, hubert, ...) or an HF folder of "
                           f"{', '.join(SPEECH_MODEL_TYPES)}")
    return folder


def encoder_family(folder: Path) -> str:
    return _model_type(Path(folder))


def front_end(folder: Path) -> dict[str, Any]:
    """The encoder's front end: its preprocessing.json, or an HF waveform model's feature-extractor settings."""
    if (Path(folder) / PREPROCESSING).is_file():
        return json.loads((Path(folder) / PREPROCESSING).read_text())
    from selfsup.backbones.speech import load_speech_encoder

    return {"modality": "speech", **load_speech_encoder(folder)[1]}


# ------------------------------------------------------------------------------------------------- data

@dataclasses.dataclass
class AudioData:
    train_set: Any  # selfsup.data.audio.AudioSet
    eval_set: Any
    front: Any  # AudioFrontEnd
    labels: list[str]
    train: list  # TextExample stand-ins (text = clip index), so tasks.subsample / label_set apply as for text
    eval: list
    y_eval: Any
    path_column: str
    label_column: str


def read_clips(source: str, front, path_column: str = "path"):
    """Every clip of `source` as the encoder's input (waveform or frames at its rate), cached."""
    from selfsup.data.audio import AudioDataConfig, load_audio

    spec = front.spec
    cfg = AudioDataConfig(sample_rate=spec.sample_rate, n_mels=spec.n_mels, win_ms=spec.win_ms, hop_ms=spec.hop_ms,
                          normalize="none", crop_seconds=None, holdout_fraction=0.0, path_column=path_column,
                          label_column=None)
    return load_audio([source], cfg, front.kind)


def clip_examples(source: str, clips, column: str) -> list:
    """One TextExample per clip (text = its index, label = its `column`); a missing column or empty label names
    the source or the clip."""
    from selfsup.adapt.core.tasks import TextExample

    if column not in clips.columns:
        raise SelfsupError(f"{source}: no label column {column!r} (columns: {', '.join(clips.columns) or 'none'}; "
                           "class sub-folders give 'label', or set --label-column)")
    values = clips.columns[column]
    for i, v in enumerate(values):
        if not str(v).strip():
            raise SelfsupError(f"{clips.names[i]}: empty label {column!r}")
    return [TextExample(str(i), None, str(v), clips.names[i]) for i, v in enumerate(values)]


def load_audio_data(train: str, eval: str, front_dict: dict, path_column: str | None,
                    label_column: str | None) -> AudioData:
    import numpy as np

    from selfsup.adapt.core.tasks import check_labels, label_set
    from selfsup.data.audio import AudioFrontEnd

    columns = KINDS[AUDIO_TASK].columns
    path_column, label_column = path_column or columns.text, label_column or columns.label
    front = AudioFrontEnd.from_dict(front_dict)
    tr, ev = read_clips(train, front, path_column), read_clips(eval, front, path_column)
    train_ex, eval_ex = clip_examples(train, tr, label_column), clip_examples(eval, ev, label_column)
    labels = label_set(train_ex, train)
    check_labels(eval_ex, labels)
    index = {lab: i for i, lab in enumerate(labels)}
    y_eval = np.asarray([index[e.label] for e in eval_ex], np.int64)
    return AudioData(tr, ev, front, labels, train_ex, eval_ex, y_eval, path_column, label_column)


def clip_batch(clips, front, idx: Sequence[int], device, crop: int | None = None) -> dict[str, Any]:
    """Normalized clips `idx` zero-padded into the model's inputs + attention mask; `crop`: a random window of
    at most that many values per clip (torch's generator, which the fitting loop seeds per epoch)."""
    import numpy as np
    import torch

    arrays = []
    for i in idx:
        x = front.apply(clips.raw(int(i)))
        if crop and len(x) > crop:
            start = int(torch.randint(0, len(x) - crop + 1, ()).item())
            x = x[start:start + crop]
        arrays.append(x)
    longest = max(len(a) for a in arrays)
    inputs = np.zeros((len(arrays), longest, *arrays[0].shape[1:]), np.float32)
    mask = np.zeros((len(arrays), longest), np.int64)
    for row, a in enumerate(arrays):
        inputs[row, :len(a)], mask[row, :len(a)] = a, 1
    key = "input_values" if front.kind == "waveform" else "input_features"
    return {key: torch.from_numpy(inputs).to(device), "attention_mask": torch.from_numpy(mask).to(device)}


def score(model, clips, front, y, labels: list[str], batch_size: int, device,
          predictions: list | None = None) -> dict[str, float]:
    """Streaming loss / accuracy / macro-F1 / MCC over `clips` (`y`: label ids, or None: predictions only)."""
    import numpy as np
    import torch

    from selfsup import metrics as M
    from selfsup.adapt.core.runs import autocast

    was = model.training
    model.eval()
    loss, metric = M.MeanLoss(), M.ClassificationMetrics(len(labels))
    with torch.no_grad(), autocast(device):
        for start in range(0, len(clips), batch_size):
            idx = np.arange(start, min(start + batch_size, len(clips)))
            logits = model(**clip_batch(clips, front, idx, device)).logits.float()
            if y is not None:
                target = torch.from_numpy(y[idx]).to(device)
                loss.update(torch.nn.functional.cross_entropy(logits, target).item(), len(idx))
                metric.update(logits.argmax(-1).cpu().numpy(), y[idx])
            if predictions is not None:
                for j, p in zip(idx, torch.softmax(logits, -1).cpu().numpy()):
                    predictions.append({"clip": clips.names[int(j)], "label": labels[int(p.argmax())],
                                        "probabilities": {lab: round(float(x), 6) for lab, x in zip(labels, p)}})
    model.train(was)
    return {"loss": loss.compute(), **metric.compute(), "examples": int(len(clips))} if y is not None else {}


# ---------------------------------------------------------------------------------------------- training

def train_audio_seed(method, run, seed: int, out: Path, subset: list) -> dict[str, Any]:
    """The audio classifier on the encoder, adapted by `method` (full, linear, bitfit, lora), trained by the
    shared fitting loop; saves `model/` (HF format or the method's artifact) with its front end and task.json."""
    import torch

    from selfsup.adapt.core.fit import fit, frozen_norms_eval
    from selfsup.adapt.core.models import build_model, count_parameters
    from selfsup.adapt.core.runs import seed_record, write_seed

    cfg, data, opts = run.cfg, run.data, run.modality_opts or AudioOptions()
    model, head = build_model(run.source, AUDIO_TASK, data.labels, None, init=run.init, seed=seed,
                              dropout=cfg.dropout)
    torch.manual_seed(seed)  # LoRA initialisation: reproducible for a given --seed
    model, backbone = method.prepare(model, head, AUDIO_TASK, run.opts, run.source)
    trainable, total = count_parameters(model)
    index = {lab: i for i, lab in enumerate(data.labels)}
    feats = [{"clip": int(e.text), "label": index[e.label]} for e in subset]
    crop = int(round(opts.crop_seconds * data.train_set.rate)) if opts.crop_seconds else None
    lr = cfg.lr or method.image_lr  # the non-text default (1e-3 full / lora, 1e-2 linear): tiny speech encoders,
    # like the image ones, need larger steps than a text checkpoint (full at 1e-4: 0.60 vs 0.91 on keywords)
    world = cfg.devices * cfg.num_nodes * cfg.accumulate
    if cfg.batch_size > len(feats):  # a few-shot set smaller than a batch: one batch of all of it
        cfg = dataclasses.replace(cfg, batch_size=max(len(feats) // world * world, world))

    def collate(chunk, device):
        batch = clip_batch(data.train_set, data.front, [f["clip"] for f in chunk], device, crop)
        return {**batch, "labels": torch.tensor([f["label"] for f in chunk], device=device)}

    def loss_fn(m, batch):
        target = batch.pop("labels")
        logits = m(**batch).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, target)
        return {"loss": loss, "accuracy": (logits.argmax(-1) == target).float().mean().detach()}

    started = time.perf_counter()
    result = fit(model, feats, cfg, lr=lr, seed=seed, loss_fn=loss_fn, collate_fn=collate,
                 eval_fn=lambda m: score(m, data.eval_set, data.front, data.y_eval, data.labels,
                                         cfg.eval_batch_size, next(m.parameters()).device),
                 main_metric="accuracy", progress=run.progress, train_mode=frozen_norms_eval)
    seconds = time.perf_counter() - started
    artifact_bytes = save_audio_model(method, model, out / "model", run, data, opts)
    record = seed_record(kind=AUDIO_TASK, source=run.source, init=run.init, method=method.name, seed=seed,
                         eval=result.eval, main_metric="accuracy", trainable=trainable, total=total,
                         history=result.history, steps=result.steps, epochs=result.epochs, lr=lr,
                         train_examples=len(subset), eval_examples=int(len(data.y_eval)), labels=data.labels,
                         seconds=seconds, best_epoch=result.best_epoch, batch_size=cfg.batch_size,
                         backbone_parameters=backbone or total,
                         trainable_percent=round(100 * trainable / (backbone or total), 4),
                         artifact_bytes=artifact_bytes, crop_seconds=opts.crop_seconds)
    return write_seed(out, record, {run.init: result.history}, title=AUDIO_TASK)


def save_audio_model(method, model, folder: Path, run, data: AudioData, opts: AudioOptions) -> int:
    """The method's artifact (a whole HF audio classifier, or LoRA's), the front end and task.json."""
    from selfsup.adapt.core.models import save_task
    from selfsup.fileio import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    artifact_bytes = method.save(model, folder)
    atomic_write_text(folder / PREPROCESSING, json.dumps(front_end(run.source), indent=2) + "\n")
    save_task(folder, {"kind": AUDIO_TASK, "labels": data.labels, "path_column": data.path_column,
                       "label_column": data.label_column, "source_model": str(run.source), "init": run.init,
                       "method": method.name, "crop_seconds": opts.crop_seconds})
    return artifact_bytes


# ------------------------------------------------------------------------------------- evaluate / predict

def is_audio_classifier(model_dir: str | Path) -> bool:
    """Is this a `selfsup finetune --task audio-classification` run (its folder, `model/`, or a multi-seed run)?"""
    from selfsup.adapt.core.models import TASK_FILE

    p = Path(model_dir)
    for task in (p / TASK_FILE, p / "model" / TASK_FILE, *sorted(p.glob(f"seed-*/model/{TASK_FILE}"))[:1]):
        if task.is_file():
            try:
                return json.loads(task.read_text()).get("kind") == AUDIO_TASK
            except (OSError, ValueError, AttributeError):
                return False
    return False


def load_for_inference(model_dir: str | Path, batch_size: int, overrides: Sequence[str]):
    """(classifier on its device, task info, front end, options, model folder) of a fine-tuned audio folder;
    the method named in task.json loads it and takes its inference keys from `--set`."""
    from selfsup.adapt.core.artifacts import load_finetuned
    from selfsup.adapt.core.models import finetuned_folder
    from selfsup.adapt.core.options import split_overrides
    from selfsup.adapt.core.runs import device_of, resolve_threads
    from selfsup.adapt.registry import option_owners
    from selfsup.data.audio import AudioFrontEnd

    folder = finetuned_folder(model_dir)
    model, _, info, method = load_finetuned(folder, with_method=True)
    cfg, (opts,) = split_overrides(overrides, {"eval_batch_size": batch_size}, own=(method.Options,),
                                   owners=option_owners())
    resolve_threads(cfg)
    front = AudioFrontEnd.from_dict(front_end(folder))
    return method.for_inference(model, opts).to(device_of(cfg)), info, front, cfg, folder


def evaluate_audio(model_dir: str | Path, eval_file: str, out: str | Path | None = None, *,
                   path_column: str | None = None, label_column: str | None = None, batch_size: int = 64,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`selfsup evaluate` of a fine-tuned audio classifier: loss, accuracy, macro-F1, MCC on labeled clips (their
    labels must be the model's)."""
    import numpy as np

    from selfsup.adapt.core.runs import write_metrics
    from selfsup.adapt.core.tasks import check_labels
    from selfsup.data.memory import source_name

    model, info, front, cfg, _ = load_for_inference(model_dir, batch_size, overrides)
    clips = read_clips(eval_file, front, path_column or info.get("path_column") or "path")
    examples = clip_examples(eval_file, clips, label_column or info.get("label_column") or "label")
    check_labels(examples, info["labels"])
    index = {lab: i for i, lab in enumerate(info["labels"])}
    y = np.asarray([index[e.label] for e in examples], np.int64)
    device = next(model.parameters()).device
    metrics = {"task": AUDIO_TASK, "model": str(model_dir), "eval_file": source_name(eval_file),
               "eval": score(model, clips, front, y, info["labels"], cfg.eval_batch_size, device)}
    write_metrics(out, metrics)
    return metrics


def predict_audio(model_dir: str | Path, source: str, *, path_column: str | None = None, batch_size: int = 64,
                  overrides: Sequence[str] = ()) -> Iterator[dict]:
    """`selfsup predict` of a fine-tuned audio classifier: one {"clip", "label", "probabilities"} per clip of
    `source` (an audio file, folder or manifest; labels there are ignored), batch by batch."""
    if isinstance(source, str) and source == "-":
        raise SelfsupError("-: an audio classifier reads clips from a file, folder or manifest, not from standard "
                           "input")
    model, info, front, cfg, _ = load_for_inference(model_dir, batch_size, overrides)
    clips = read_clips(source, front, path_column or info.get("path_column") or "path")
    device = next(model.parameters()).device
    size = cfg.eval_batch_size
    for start in range(0, len(clips), size):
        preds: list[dict] = []
        score(model, _Window(clips, start, size), front, None, info["labels"], size, device, predictions=preds)
        yield from preds


class _Window:
    """Clips start .. start + size of an AudioSet, indexed from 0 (what `score` reads: len, raw, names)."""

    def __init__(self, clips, start: int, size: int):
        self.clips, self.start = clips, start
        self.stop = min(start + size, len(clips))
        self.names = clips.names[start:self.stop]

    def __len__(self) -> int:
        return self.stop - self.start

    def raw(self, i: int):
        return self.clips.raw(self.start + i)
