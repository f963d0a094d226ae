"""SUPERB-style probing of a frozen speech upstream (Yang et al. 2021, "SUPERB: Speech processing Universal
PERformance Benchmark", protocol of s3prl): every layer's hidden states are extracted once from the frozen
model, combined by a learned softmax-weighted sum (s3prl's Featurizer: weights start at 0 = uniform; each layer
optionally layer-normed first, off by default as in s3prl) and read by a light head trained with Adam:

* utterance (keyword spotting, speaker ID): mean over the clip's frames + linear -> `eval.accuracy`; or
  statistics pooling (`pooling="mean+std"`, the x-vector head of Snyder et al. 2018: mean and standard
  deviation over frames, per layer, then the weighted sum) for speaker-dependent tasks;
* frame: linear per frame over labels from an `alignment` column ([[word, start_s, end_s], ...], silence
  elsewhere) at the upstream's own output frame rate -> frame `eval.accuracy`;
* ctc: linear per frame over the train transcripts' characters + blank, CTC loss, greedy decoding ->
  `eval.wer`, `eval.cer` (jiwer).

Eval labels must be train classes (utterance, frame): a clip with an unseen class is refused, one line naming
it; in ctc, characters never seen in training simply cannot be produced and count as errors.
Also the benchmark's references: `logmel_baseline` (mean + std over time of 80 log-mel bands, logistic
regression) and `random_like` (the same architecture with fresh weights).
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.backbones.speech import SpeechEncoder, load_speech_encoder
from selfsup.data.audio import AudioDataConfig, AudioFrontEnd, AudioSet, load_audio
from selfsup.data.audio_features import frame_labels
from selfsup.errors import SelfsupError
from selfsup.objectives.speech_base import lengths_mask, stack_padded

TASKS = ("utterance", "frame", "ctc")
POOLINGS = ("mean", "mean+std")
DEFAULT_COLUMN = {"frame": "alignment", "ctc": "transcript"}
DEFAULT_EPOCHS = {"frame": 30, "ctc": 80}
# utterance heads train for a number of optimizer steps (as SUPERB's recipes do), not epochs: on a few hundred
# clips 60 epochs are 600 steps and leave the head far from converged (speaker ID 0.87 -> 0.97 at 5000 steps,
# training loss 0.3 -> 0.006, docs/benchmarks.md); the pooled features are cached, so a step costs microseconds
DEFAULT_STEPS = {"utterance": 5000}
SILENCE = "<sil>"
BLANK = "<blank>"
CACHE_BYTES = 4 << 30  # hidden states kept in memory (float16) up to this size, else recomputed per batch


class WeightedLayerSum(torch.nn.Module):
    """s3prl's Featurizer weighted sum, softmax(w) . layers over the first axis; w starts at 0 (uniform).
    Written here: s3prl's Featurizer needs an s3prl upstream object; the sum itself is these few lines."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.zeros(num_layers))

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        return torch.tensordot(F.softmax(self.weights, dim=0), stacked, dims=1)

    def normalized(self) -> list[float]:
        return F.softmax(self.weights.detach().float(), dim=0).cpu().tolist()


class SuperbProbe(torch.nn.Module):
    """The only trainable part: the layer weights and a linear head on the weighted sum."""

    def __init__(self, num_layers: int, feature_dim: int, n_outputs: int):
        super().__init__()
        self.featurizer = WeightedLayerSum(num_layers)
        self.head = torch.nn.Linear(feature_dim, n_outputs)

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        """(L, B, D) pooled or (L, B, T, D) frames -> logits (B, C) or (B, T, C)."""
        return self.head(self.featurizer(layers))


# ---- the upstream and its hidden states ------------------------------------------------------------------

def random_like(model: str | Path, seed: int = 0) -> tuple[SpeechEncoder, dict]:
    """The architecture of `model` (its config) with fresh random weights, and the same front end."""
    encoder, front = load_speech_encoder(model)
    torch.manual_seed(seed)
    return SpeechEncoder(type(encoder.model)(encoder.model.config)), front


def resolve_upstream(model: Any) -> tuple[SpeechEncoder, dict, str]:
    """A model folder, or an (encoder, front dict) pair -> (encoder, front, a name for metrics.json)."""
    if isinstance(model, (tuple, list)) and len(model) == 2 and isinstance(model[0], SpeechEncoder):
        return model[0], dict(model[1]), f"<{model[0].type} encoder object>"
    folder = Path(model)
    if not folder.is_dir():
        raise SelfsupError(f"--model {folder}: no such model folder")
    encoder, front = load_speech_encoder(folder)
    return encoder, front, str(folder)


def audio_config(front: dict) -> AudioDataConfig:
    """How to read new data so the upstream sees what it was trained on (rate, mel bands, window)."""
    return AudioDataConfig(sample_rate=int(front.get("sample_rate", 16000)), n_mels=int(front.get("n_mels", 80)),
                           win_ms=float(front.get("win_ms", 25.0)), hop_ms=float(front.get("hop_ms", 10.0)),
                           crop_seconds=None, holdout_fraction=0.0, label_column=None)


def output_frame_rate(encoder: SpeechEncoder, input_rate: float) -> float:
    """Output frames per second, measured on the model's output length for 100 s of input."""
    n = int(round(input_rate * 100))
    return float(encoder.output_lengths(torch.tensor([n]))[0]) / 100.0


class UpstreamFeatures:
    """Every layer's hidden states of each clip, from the frozen upstream (eval mode, no grad): (L, D) mean-pooled,
    (L, 2D) mean and std (`pool="mean+std"`) or (L, T, D) frames (`pool=None`) per clip; computed once and kept
    as float16 when they fit in `cache_bytes`, else recomputed for every batch. Layer norm (no parameters) is applied per frame here, before pooling."""

    def __init__(self, encoder: SpeechEncoder, data: AudioSet, front: AudioFrontEnd, pool: str | None, layer_norm: bool,
                 device: str, cache_bytes: int = CACHE_BYTES, batch_size: int = 16):
        self.encoder, self.data, self.front = encoder.to(device).eval(), data, front
        self.pool, self.layer_norm, self.device, self.batch_size = pool, layer_norm, device, batch_size
        self.frames = output_frames(encoder, data)
        if (self.frames < 1).any():
            raise SelfsupError(f"{data.names[int(np.argmin(self.frames))]}: too short for the upstream (0 frames)")
        self.mask = encoder.input_kind != "waveform" or getattr(encoder.model.config, "feat_extract_norm",
                                                                 "layer") == "layer"  # as HF's feature extractor
        self.dim = encoder.feature_dim * (2 if pool == "mean+std" else 1)
        size = (len(data) if pool else int(self.frames.sum())) * encoder.num_layers * self.dim * 2
        self.cache = self.compute(range(len(data))) if size <= cache_bytes else None

    def __len__(self) -> int:
        return len(self.data)

    @torch.no_grad()
    def compute(self, indices: Sequence[int]) -> list[torch.Tensor]:
        indices = list(indices)
        order = sorted(range(len(indices)), key=lambda k: len(self.data.raw(indices[k])))  # batches of like lengths
        out: list[torch.Tensor | None] = [None] * len(indices)
        for s in range(0, len(order), self.batch_size):
            chunk = order[s:s + self.batch_size]
            clips = [self.front.apply(self.data.raw(indices[k])) for k in chunk]
            lengths = torch.tensor([len(c) for c in clips])
            x = torch.from_numpy(stack_padded(clips)).to(self.device)
            mask = lengths_mask(lengths, x.shape[1]).to(self.device) if self.mask else None
            h = torch.stack(self.encoder.layers(x, mask)).float()  # (L, B, T, D)
            if self.layer_norm:
                h = F.layer_norm(h, h.shape[-1:])
            for b, k in enumerate(chunk):
                clip = h[:, b, :int(self.frames[indices[k]])]
                out[k] = pooled(clip, self.pool).half().cpu()
        return out  # type: ignore[return-value]

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, B, D) or zero-padded (L, B, T, D) float32 on the device, and the frames per clip (B,)."""
        clips = [self.cache[i] for i in indices] if self.cache is not None else self.compute(indices)
        frames = torch.tensor([int(self.frames[i]) for i in indices])
        if self.pool:
            return torch.stack(clips, 1).to(self.device).float(), frames
        x = torch.zeros(clips[0].shape[0], len(clips), int(frames.max()), clips[0].shape[-1])
        for b, c in enumerate(clips):
            x[:, b, :c.shape[1]] = c.float()
        return x.to(self.device), frames


def pooled(clip: torch.Tensor, pool: str | None) -> torch.Tensor:
    """(L, T, D) -> (L, D) mean, (L, 2D) mean and std over the T frames (0 std for one frame), or unchanged."""
    if pool == "mean+std":
        std = clip.std(1, unbiased=False)
        return torch.cat([clip.mean(1), std], -1)
    return clip.mean(1) if pool == "mean" else clip


# ---- targets -----------------------------------------------------------------------------------------------

def column(data: AudioSet, name: str, task: str, split: str) -> list[str]:
    if name not in data.columns:
        need = {"frame": "an alignment column ([[word, start_s, end_s], ...])", "ctc": "a transcript column"}
        raise SelfsupError(f"--label-column {name!r}: not in the {split} data (columns: {', '.join(data.columns)})"
                           + (f"; --task {task} needs {need[task]}" if task in need else ""))
    values = data.columns[name]
    empty = [i for i, v in enumerate(values) if not v.strip()]
    if empty:
        raise SelfsupError(f"{data.names[empty[0]]}: empty {name!r} ({len(empty)} {split} clips have none)")
    return values


def alignments(data: AudioSet, name: str, split: str) -> list[list]:
    spans = []
    for i, text in enumerate(column(data, name, "frame", split)):
        try:
            value = json.loads(text)
            valid = isinstance(value, list) and all(len(s) == 3 and float(s[2]) >= float(s[1]) for s in value)
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise SelfsupError(f"{data.names[i]}: {name!r} is not an alignment [[word, start_s, end_s], ...]")
        spans.append(value)
    return spans


def class_targets(values: list, classes: list[str] | None, where: list[str], name: str) -> tuple[list, list[str]]:
    """Class ids of `values` (a label per clip, or a list of labels per clip); `classes` given = the train
    classes, and a value outside them is refused."""
    flat = [v for vs in values for v in (vs if isinstance(vs, list) else [vs])]
    if classes is None:
        classes = sorted(set(flat))
        if len(classes) < 2:
            raise SelfsupError(f"--label-column {name!r}: the train data has {len(classes)} class; need at least 2")
    index = {c: i for i, c in enumerate(classes)}
    unseen = sorted(set(flat) - set(index))
    if unseen:
        first = next(i for i, vs in enumerate(values) if set(vs if isinstance(vs, list) else [vs]) & set(unseen))
        raise SelfsupError(f"--label-column {name!r}: eval classes not in the train data: {', '.join(unseen[:5])}"
                           f"{' ...' if len(unseen) > 5 else ''} (first in {where[first]})")
    ids = [np.array([index[v] for v in vs]) if isinstance(vs, list) else index[vs] for vs in values]
    return ids, classes


def targets(data: AudioSet, features_frames: np.ndarray, rate: float, task: str, name: str, split: str,
            classes: list[str] | None = None) -> tuple[list, list[str], list[str]]:
    """(per-clip targets, class names or ctc alphabet with the blank first, reference texts for ctc)."""
    if task == "utterance":
        ids, classes = class_targets(column(data, name, task, split), classes, data.names, name)
        return ids, classes, []
    if task == "frame":
        labels = [frame_labels(a, int(n), rate, SILENCE) for a, n in zip(alignments(data, name, split),
                                                                             features_frames)]
        ids, classes = class_targets(labels, classes, data.names, name)
        return ids, classes, []
    texts = [" ".join(t.split()) for t in column(data, name, task, split)]
    alphabet = classes or [BLANK] + sorted({c for t in texts for c in t})
    index = {c: i for i, c in enumerate(alphabet)}
    return [np.array([index[c] for c in t if c in index]) for t in texts], alphabet, texts


# ---- training and scoring ---------------------------------------------------------------------------------

def probe_loss(logits: torch.Tensor, y: list, frames: torch.Tensor, task: str) -> torch.Tensor:
    device = logits.device
    if task == "utterance":
        return F.cross_entropy(logits, torch.tensor(y, device=device))
    if task == "frame":
        target = torch.from_numpy(stack_padded([np.asarray(t) + 1 for t in y], logits.shape[1]) - 1).to(device)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten().long(), ignore_index=-1)
    log_probs = F.log_softmax(logits, -1).transpose(0, 1)  # (T, B, C)
    flat = torch.from_numpy(np.concatenate(y)).long().to(device)
    return F.ctc_loss(log_probs, flat, frames.to(device), torch.tensor([len(t) for t in y], device=device),
                      blank=0, zero_infinity=True)


def train_probe(features: UpstreamFeatures, y: list, n_outputs: int, task: str, epochs: int, lr: float,
                batch_size: int, seed: int) -> tuple[SuperbProbe, list[float]]:
    """Adam on the layer weights and the head only; returns the probe and the mean loss of every epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = features.encoder
    probe = SuperbProbe(enc.num_layers, features.dim, n_outputs).to(features.device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        losses, order = [], rng.permutation(len(features))
        for s in range(0, len(features), batch_size):
            idx = order[s:s + batch_size].tolist()
            x, frames = features.batch(idx)
            loss = probe_loss(probe(x), [y[i] for i in idx], frames, task)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
    return probe, history


def greedy_ctc_decode(ids: Sequence[int], alphabet: Sequence[str], blank: int = 0) -> str:
    """Best path: collapse repeated symbols, then drop blanks."""
    out, previous = [], None
    for i in ids:
        if i != previous and i != blank:
            out.append(alphabet[i])
        previous = i
    return " ".join("".join(out).split())


@torch.no_grad()
def score(probe: SuperbProbe, features: UpstreamFeatures, y: list, task: str, alphabet: list[str],
          texts: list[str], batch_size: int) -> dict[str, float]:
    correct = total = 0
    hypotheses = []
    for s in range(0, len(features), batch_size):
        idx = list(range(s, min(s + batch_size, len(features))))
        x, frames = features.batch(idx)
        predicted = probe(x).argmax(-1).cpu().numpy()
        for b, i in enumerate(idx):
            if task == "utterance":
                correct, total = correct + int(predicted[b] == y[i]), total + 1
            elif task == "frame":
                correct, total = correct + int((predicted[b, :int(frames[b])] == y[i]).sum()), total + int(frames[b])
            else:
                hypotheses.append(greedy_ctc_decode(predicted[b, :int(frames[b])].tolist(), alphabet))
    if task != "ctc":
        return {"accuracy": correct / max(1, total), **({"n_frames": total} if task == "frame" else {})}
    import jiwer

    return {"wer": float(jiwer.wer(texts, hypotheses)), "cer": float(jiwer.cer(texts, hypotheses)),
            "examples": [{"reference": r, "hypothesis": h} for r, h in list(zip(texts, hypotheses))[:10]]}


# ---- the probe, end to end ----------------------------------------------------------------------------------

def output_frames(encoder: SpeechEncoder, data: AudioSet) -> np.ndarray:
    return encoder.output_lengths(torch.from_numpy(np.diff(data.offsets))).numpy()


@contextlib.contextmanager
def one_cpu_thread(device: str) -> Iterator[None]:
    """The head's ops are too small for intra-op threads: on a busy CPU they only spin (40 s instead of 0.3 s
    for the keyword-spotting probe on 2 shared cores)."""
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_options(task: str, epochs: int, lr: float, batch_size: int, pooling: str = "mean") -> None:
    if task not in TASKS:
        raise SelfsupError(f"--task: must be one of {', '.join(TASKS)}, got {task!r}")
    if pooling not in POOLINGS:
        raise SelfsupError(f"--pooling: must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if pooling != "mean" and task != "utterance":
        raise SelfsupError(f"--pooling {pooling}: only for --task utterance (frame and ctc heads read every frame)")
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise SelfsupError(f"--epochs and --batch-size must be >= 1 and --lr > 0 (got {epochs}, {batch_size}, {lr})")


def superb_probe(model: Any, train_sources: Sequence[str], eval_sources: Sequence[str],
                 label_column: str | None = None, task: str = "utterance", *, epochs: int | None = None,
                 lr: float = 2e-2, batch_size: int = 32, seed: int = 0, layer_norm: bool = False,
                 pooling: str = "mean", out: str | Path | None = None, device: str | None = None,
                 cache_bytes: int = CACHE_BYTES) -> dict[str, Any]:
    """Probe the frozen upstream `model` (a speech model folder, or an (encoder, front dict) pair such as
    `random_like(...)` gives) on `task`; returns metrics.json's dict, also written (with layer_weights.png) to
    `out` when given. `label_column` defaults to `alignment` (frame) and `transcript` (ctc)."""
    check_options(task, 1 if epochs is None else epochs, lr, batch_size, pooling)
    label_column = label_column or DEFAULT_COLUMN.get(task)
    if not label_column:
        raise SelfsupError("--label-column: --task utterance needs the column holding each clip's class "
                           "(e.g. word, speaker)")
    if out is not None and (Path(out) / "metrics.json").exists():
        raise SelfsupError(f"{Path(out) / 'metrics.json'}: already exists; choose another --out")
    started = time.perf_counter()
    encoder, front, name = resolve_upstream(model)
    cfg, front_end = audio_config(front), AudioFrontEnd.from_dict(front)
    train = load_audio(list(map(str, train_sources)), cfg, front["input"])
    held = load_audio(list(map(str, eval_sources)), cfg, front["input"])
    rate = output_frame_rate(encoder, train.rate)
    y_train, classes, _ = targets(train, output_frames(encoder, train), rate, task, label_column, "train")
    y_eval, _, texts = targets(held, output_frames(encoder, held), rate, task, label_column, "eval", classes)
    if epochs is None:
        per_epoch = -(-len(train) // batch_size)
        epochs = -(-DEFAULT_STEPS[task] // per_epoch) if task in DEFAULT_STEPS else DEFAULT_EPOCHS[task]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    features = [UpstreamFeatures(encoder, d, front_end, pooling if task == "utterance" else None, layer_norm, device,
                                 cache_bytes)
                for d in (train, held)]
    with one_cpu_thread(device):
        probe, history = train_probe(features[0], y_train, len(classes), task, epochs, lr, batch_size, seed)
        scores = score(probe, features[1], y_eval, task, classes, texts, batch_size)
    result: dict[str, Any] = {
        "eval": {**scores, "task": task, "label_column": label_column, "n_train": len(train), "n_eval": len(held)},
        "task": task, "n_train": len(train), "n_eval": len(held),
        "layer_weights": probe.featurizer.normalized(),
        "train": {"loss_first": history[0], "loss_last": history[-1], "loss_per_epoch": history},
        "probe": {"kind": "superb", "head": "linear" if task != "utterance" else f"{pooling} pooling + linear",
                  "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "layer_norm": layer_norm,
                  "optimizer": "Adam", "trainable_parameters": sum(p.numel() for p in probe.parameters()),
                  "hidden_states_cached": features[0].cache is not None},
        "classes" if task != "ctc" else "alphabet": classes,
        "upstream": {"model": name, "type": encoder.type, "input": front["input"], "layers": encoder.num_layers,
                     "feature_dim": encoder.feature_dim, "output_frame_rate": rate},
        "train_data": list(map(str, train_sources)), "eval_data": list(map(str, eval_sources)),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if out is not None:
        write_outputs(Path(out), result)
    return result


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    """layer_weights.png, then metrics.json (atomically; its presence means the probe finished)."""
    from selfsup.fileio import atomic_write_json
    from selfsup.report.figures import plot_layer_weights

    metric = ", ".join(f"{k} {result['eval'][k]:.3f}" for k in ("accuracy", "wer", "cer") if k in result["eval"])
    plot_layer_weights(result["layer_weights"], out / "layer_weights.png",
                       f"SUPERB {result['task']} probe ({result['eval']['label_column']}): {metric}")
    atomic_write_json(out / "metrics.json", result)


def pooled_logmel(data: AudioSet, pooling: str = "mean+std") -> np.ndarray:
    """Mean (and standard deviation) over time of every log-mel band: (N, n_mels) or (N, 2 * n_mels)."""
    return np.stack([np.concatenate([x.mean(0), x.std(0)] if pooling == "mean+std" else [x.mean(0)])
                     for x in map(data.raw, range(len(data)))])


def logmel_baseline(train_sources: Sequence[str], eval_sources: Sequence[str], label_column: str,
                    task: str = "utterance", n_mels: int = 80, sample_rate: int = 16000,
                    pooling: str = "mean+std") -> float:
    """Accuracy of logistic regression on log-mel features (no upstream), on the same splits: pooled over time
    (mean and std by default, `pooling="mean"` for the mean only) for an utterance task, one log-mel frame per
    example for a frame task."""
    from selfsup.evaluation.probes import linear_probe

    if task not in ("utterance", "frame"):
        raise SelfsupError(f"--task {task!r}: the log-mel baseline scores utterance and frame tasks")
    cfg = AudioDataConfig(sample_rate=sample_rate, n_mels=n_mels, crop_seconds=None, holdout_fraction=0.0,
                          label_column=None)
    train, held = (load_audio(list(map(str, sources)), cfg, "logmel") for sources in (train_sources, eval_sources))
    if task == "utterance":
        y_train, classes = class_targets(column(train, label_column, task, "train"), None, train.names,
                                         label_column)
        y_eval, _ = class_targets(column(held, label_column, task, "eval"), classes, held.names, label_column)
        return linear_probe(pooled_logmel(train, pooling), np.array(y_train), pooled_logmel(held, pooling),
                            np.array(y_eval))
    n_frames = (np.diff(train.offsets), np.diff(held.offsets))
    y_train, classes, _ = targets(train, n_frames[0], train.rate, task, label_column, "train")
    y_eval, _, _ = targets(held, n_frames[1], held.rate, task, label_column, "eval", classes)
    frames = [np.concatenate([d.raw(i) for i in range(len(d))]) for d in (train, held)]
    return linear_probe(frames[0], np.concatenate(y_train), frames[1], np.concatenate(y_eval))
