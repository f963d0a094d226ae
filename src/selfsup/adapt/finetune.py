"""`selfsup finetune`: a task head on any checkpoint, trained on a labeled file, evaluated every epoch.

The loop is a lean PyTorch loop rather than the Lightning engine: fine-tuning is one process on one device,
epoch-based, with a streaming evaluation after each epoch; the loop is ~60 lines, starts instantly (tests run
dozens of tiny fine-tunings) and reuses the engine's optimizer recipe (`param_groups`, `lr_lambda`).

Outputs (written into a temporary sibling folder, renamed into place only on success; an existing non-empty
`--out` is never touched): `model/` (HF format + `task.json` with the label set), `metrics.json`
(final `eval`, `history` of train/eval loss and metrics per epoch, parameter counts), `curves.png`.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

from selfsup.adapt import TASK_KINDS
from selfsup.adapt.peft_methods import EFFICIENT_METHODS
from selfsup.adapt.tasks import IGNORE, Columns, columns_for
from selfsup.config import bounded, from_dict, to_dict
from selfsup.errors import SelfsupError, TrainingDiverged


@dataclasses.dataclass
class FinetuneConfig:
    """Keys settable with `--set key=value`."""
    lr: float | None = bounded(None, gt=0, doc="default 1e-4 (full) or 1e-3 (linear)")
    batch_size: int = bounded(32, ge=1)
    eval_batch_size: int = bounded(64, ge=1)
    epochs: int = bounded(3, ge=1)
    max_steps: int | None = bounded(None, ge=1, doc="optimizer steps; overrides epochs")
    warmup_ratio: float = bounded(0.1, ge=0, lt=1)
    weight_decay: float = bounded(0.01, ge=0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = bounded(1.0, ge=0)
    max_length: int = bounded(128, ge=8, doc="tokens per example (capped at the model's positions)")
    dropout: float | None = bounded(None, ge=0, lt=1, doc="override the checkpoint's dropout")
    threads: int = bounded(0, ge=0, doc="CPU threads (0: torch's default)")
    device: str = "auto"
    doc_stride: int = bounded(64, ge=0, doc="extractive-qa: tokens shared by consecutive windows")
    max_answer_length: int = bounded(30, ge=1, doc="extractive-qa: longest answer in tokens")
    n_best: int = bounded(20, ge=1, doc="extractive-qa: top starts x top ends searched per window")
    lora_r: int = bounded(8, ge=1, doc="--method lora: rank")
    lora_alpha: float = bounded(16, gt=0, doc="--method lora: scale alpha (updates scaled by alpha / r)")
    lora_dropout: float = bounded(0.0, ge=0, lt=1, doc="--method lora: dropout on the LoRA input")
    lora_targets: list[str] | None = dataclasses.field(
        default=None, metadata={"doc": "--method lora: module names (default: the attention query/value)"})
    num_virtual_tokens: int = bounded(10, ge=1, doc="--method prefix|soft-prompt: virtual tokens")
    adapter_size: int = bounded(64, ge=1, doc="--method adapter: bottleneck width")
    template: str | None = dataclasses.field(
        default=None, metadata={"doc": "--method prompt: e.g. '{text} It was {mask}.' (taken as written)"})
    verbalizer: Any = dataclasses.field(
        default=None, metadata={"doc": "--method prompt: {label: word | [words]} (YAML) or a .json/.yaml file"})
    demonstrations: bool = dataclasses.field(
        default=False, metadata={"doc": "--method prompt: LM-BFF, one similar training example per class"})
    exit_training: Literal["joint", "two-stage"] = dataclasses.field(
        default="joint", metadata={"doc": "--method early-exit: joint (PABEE weighted loss) or two-stage (DeeBERT)"})
    exit_threshold: float | None = bounded(None, ge=0, doc="early-exit model (evaluate/predict): exit when the "
                                           "prediction entropy is below this")
    exit_patience: int | None = bounded(None, ge=1, doc="early-exit model (evaluate/predict): exit after this "
                                        "many layers with an unchanged prediction")
    patterns: Any = dataclasses.field(
        default=None, metadata={"doc": "--method pet: templates, one per pattern-verbalizer pair (a YAML list "
                                       "of quoted templates, or a .json/.yaml file holding one)"})
    verbalizers: Any = dataclasses.field(
        default=None, metadata={"doc": "--method pet: one verbalizer per pattern (YAML list); or `verbalizer` "
                                       "shared by all"})
    pet_weighting: Literal["accuracy", "uniform"] = dataclasses.field(
        default="accuracy", metadata={"doc": "--method pet: weight each pattern by its training accuracy "
                                             "before training (PET), or uniformly"})
    pet_temperature: float = bounded(2.0, gt=0, doc="--method pet: soft labels = softmax(ensemble scores / T)")
    pet_final_epochs: int | None = bounded(None, ge=1, doc="--method pet: epochs of the final classifier on the "
                                           "soft labels (default: as the patterns)")
    ipet_rounds: int = bounded(0, ge=0, doc="--method pet: iPET rounds (pattern models retrained on labels "
                                "plus the other patterns' pseudo-labels)")
    ipet_factor: int = bounded(5, ge=2, doc="--method pet: iPET growth d (round r trains on len(labeled) * d^r)")

    def validate(self) -> None:
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda") and self.device != "mps":
            raise SelfsupError(f"device: expected auto, cpu, cuda[:N] or mps, got {self.device!r}")


def parse_overrides(pairs: Sequence[str], base: dict | None = None) -> FinetuneConfig:
    import yaml

    data = dict(base or {})
    for item in pairs:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SelfsupError(f"--set: expected key=value, got {item!r}")
        if key.strip() == "template":  # `{text} It was {mask}.` is text, not YAML
            data["template"] = value
            continue
        try:
            data[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:  # e.g. patterns=[{text} ...] unquoted: one line, not a traceback
            raise SelfsupError(f"{key.strip()}: not valid YAML ({str(e).splitlines()[0]}); quote texts with "
                               f"braces, e.g. '[\"{{text}} It was {{mask}}.\"]'") from None
    return from_dict(FinetuneConfig, data)


# -------------------------------------------------------------------------------------------- features

def model_positions(config, tokenizer) -> int:
    """How many tokens the model can take."""
    limits = []
    mt = getattr(config, "model_type", "")
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if n:
        limits.append(n - (config.pad_token_id or 1) - 1 if mt in ("roberta", "xlm-roberta", "camembert") else n)
    tml = getattr(tokenizer, "model_max_length", None)
    if tml and tml < 1_000_000:
        limits.append(tml)
    return min(limits) if limits else 512


def keep_token_types(config) -> bool:
    return (getattr(config, "type_vocab_size", 0) or 0) > 1


def encode(kind: str, tokenizer, examples: Sequence, labels: list[str] | None, max_length: int, keep_types: bool,
           cfg: FinetuneConfig) -> list[dict]:
    """Examples -> features (python lists; padded per batch by `collate`)."""
    from selfsup.adapt.tasks import first_piece_index, first_piece_labels, join_words, token_word_ids

    if hasattr(tokenizer, "encode_prompts"):  # --method prompt: template + verbalizer (selfsup.adapt.prompting)
        return tokenizer.encode_prompts(examples, labels, max_length)
    if kind == "extractive-qa":
        from selfsup.adapt.qa import encode_qa

        return encode_qa(tokenizer, examples, max_length, min(cfg.doc_stride, max_length // 2), keep_types)
    label2id = {lab: i for i, lab in enumerate(labels or [])}
    feats: list[dict] = []
    if kind == "token-classification":
        texts, spans = zip(*(join_words(s.words) for s in examples))
        enc = tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_token_type_ids=keep_types)
        for i, s in enumerate(examples):
            wids = token_word_ids(enc["offset_mapping"][i], enc.sequence_ids(i), spans[i])
            tag_ids = [label2id[t] for t in s.tags] if s.tags is not None and label2id else None
            f = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 "first_piece": first_piece_index(wids, len(s.words)), "example": i}
            if tag_ids is not None:
                f["labels"] = first_piece_labels(wids, tag_ids)
            if keep_types and "token_type_ids" in enc:
                f["token_type_ids"] = enc["token_type_ids"][i]
            feats.append(f)
        return feats
    texts = [e.text for e in examples]
    pairs = [e.pair for e in examples] if kind == "pair-classification" else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, return_token_type_ids=keep_types)
    for i, e in enumerate(examples):
        f = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "example": i}
        if keep_types and "token_type_ids" in enc:
            f["token_type_ids"] = enc["token_type_ids"][i]
        if e.label is not None:
            f["labels"] = float(e.label) if kind == "sequence-regression" else label2id[e.label]
        feats.append(f)
    return feats


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def collate(feats: Sequence[dict], pad_id: int, device) -> dict:
    """Right-padded tensors of the model inputs and targets present in every feature."""
    import torch

    width = max(len(f["input_ids"]) for f in feats)
    batch: dict[str, Any] = {}
    for key, pad in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in feats[0]:
            batch[key] = torch.tensor([f[key] + [pad] * (width - len(f[key])) for f in feats])
    if "labels" in feats[0]:
        first = feats[0]["labels"]
        if isinstance(first, list):
            batch["labels"] = torch.tensor([f["labels"] + [IGNORE] * (width - len(f["labels"])) for f in feats])
        elif isinstance(first, float):
            batch["labels"] = torch.tensor([f["labels"] for f in feats], dtype=torch.float32)
        else:
            batch["labels"] = torch.tensor([f["labels"] for f in feats])
    for key in ("start_positions", "end_positions"):
        if key in feats[0]:
            batch[key] = torch.tensor([f[key] for f in feats])
    for key in ("teacher_logits", "soft_labels"):  # per-example soft targets (distillation, PET)
        if key in feats[0]:
            batch[key] = torch.tensor([f[key] for f in feats], dtype=torch.float32)
    return {k: v.to(device) for k, v in batch.items()}


def logits_of(model, batch: dict):
    """The model's logits on a collated batch (its inputs only, never its targets)."""
    return model(**{k: v for k, v in batch.items() if k in _MODEL_INPUTS}).logits


def _batches(feats: Sequence[dict], size: int) -> Iterator[Sequence[dict]]:
    for i in range(0, len(feats), size):
        yield feats[i:i + size]


def _device(cfg: FinetuneConfig):
    import torch

    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _autocast(device):
    import contextlib

    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------- evaluate

def run_eval(model, feats: Sequence[dict], examples: Sequence, kind: str, labels: list[str] | None,
             cfg: FinetuneConfig, pad_id: int, device, predictions: list | None = None) -> dict[str, float]:
    """Streaming evaluation: loss and the task's metrics, accumulated batch by batch. With `predictions`
    (a list), also appends one prediction dict per example (for `selfsup predict`)."""
    import numpy as np
    import torch

    from selfsup import metrics as M

    was_training = model.training
    model.eval()
    loss = M.MeanLoss()
    labeled = bool(feats) and ("labels" in feats[0] or "start_positions" in feats[0])
    if kind == "extractive-qa":
        from selfsup.adapt.qa import QAPostProcessor

        post = QAPostProcessor(cfg.max_answer_length, cfg.n_best)
        labeled = labeled and all(ex.answers for ex in examples)
    metric: Any = {"sequence-regression": M.RegressionMetrics, "token-classification": M.TaggingMetrics,
                   "extractive-qa": M.QAMetrics}.get(kind)
    metric = metric() if metric else M.ClassificationMetrics(len(labels or []))
    with torch.no_grad(), _autocast(device):
        for chunk in _batches(feats, cfg.eval_batch_size):
            batch = collate(chunk, pad_id, device)
            if not labeled:
                batch = {k: v for k, v in batch.items() if k in _MODEL_INPUTS}
            out = model(**batch)
            if labeled and out.loss is not None:
                loss.update(out.loss.item(), len(chunk))
            if kind == "extractive-qa":
                post.update(chunk, out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy())
                continue
            logits = out.logits.float()
            if kind == "sequence-regression":
                scores = logits[:, 0].cpu().numpy()
                if labeled:
                    metric.update(scores, [f["labels"] for f in chunk])
                if predictions is not None:
                    predictions.extend({"score": float(s)} for s in scores)
            elif kind == "token-classification":
                probs = torch.softmax(logits, -1).cpu().numpy()
                pred_tags, gold_tags = [], []
                for f, p in zip(chunk, probs):
                    idx = [p[j].argmax() if j is not None else None for j in f["first_piece"]]
                    tags = [labels[k] if k is not None else None for k in idx]
                    pred_tags.append(tags)
                    ex = examples[f["example"]]
                    if ex.tags is not None:
                        gold_tags.append(ex.tags)
                    if predictions is not None:
                        conf = [round(float(p[j].max()), 6) if j is not None else None for j in f["first_piece"]]
                        predictions.append({"words": ex.words, "tags": tags, "probabilities": conf})
                if labeled:
                    metric.update(pred_tags, gold_tags)
            else:
                probs = torch.softmax(logits, -1).cpu().numpy()
                pred = probs.argmax(-1)
                if labeled:
                    metric.update(pred, np.asarray([f["labels"] for f in chunk]))
                if predictions is not None:
                    for p in probs:
                        predictions.append({"label": labels[int(p.argmax())],
                                            "probabilities": {lab: round(float(x), 6) for lab, x in zip(labels, p)}})
    if kind == "extractive-qa":
        answers = []
        for i, ex in enumerate(examples):
            text, a, b, score = post.answer(i, ex.context)
            answers.append(text)
            if predictions is not None:
                predictions.append({"id": ex.id, "answer": text, "start": a, "end": b, "score": round(score, 4)})
        if labeled:
            metric.update(answers, [[t for t, _ in ex.answers] for ex in examples])
    model.train(was_training)
    result: dict[str, float] = {}
    if labeled:
        result["loss"] = loss.compute()
        result.update(metric.compute())
    result["examples"] = len(examples)
    return result


MAIN_METRIC = {"sequence-classification": "accuracy", "pair-classification": "accuracy",
               "sequence-regression": "pearson", "token-classification": "token_accuracy",
               "extractive-qa": "f1"}


# ---------------------------------------------------------------------------------------------- training

@dataclasses.dataclass
class _Data:
    kind: str
    columns: Columns
    labels: list[str] | None
    train: list
    eval: list


def load_data(kind: str, train: str, eval: str, columns: Columns) -> _Data:
    """Read and validate both files (labels of the eval file must occur in the training file)."""
    from selfsup.adapt.tasks import check_labels, label_set, read_task

    if kind not in TASK_KINDS:
        raise SelfsupError(f"--task: unknown kind {kind!r} (known: {', '.join(TASK_KINDS)})")
    train_ex = read_task(train, kind, columns)
    eval_ex = read_task(eval, kind, columns)
    labels = None
    if kind in ("sequence-classification", "pair-classification", "token-classification"):
        labels = label_set(train_ex, train)
        check_labels(eval_ex, labels)
    return _Data(kind, columns, labels, train_ex, eval_ex)


def _train_one(source: Path, data, cfg: FinetuneConfig, *, method: str, init: str, seed: int, out: Path,
               train_examples: list, progress: bool) -> dict[str, Any]:
    import torch

    from selfsup.adapt.heads import build_model, count_parameters, freeze_backbone, load_tokenizer, save_task

    tok = load_tokenizer(source)
    model, head = build_model(source, data.kind, data.labels, tok, init=init, seed=seed, dropout=cfg.dropout)
    if method == "linear":
        freeze_backbone(model, head)
    backbone = None
    torch.manual_seed(seed)  # LoRA / adapter / prompt initialisation: reproducible for a given --seed
    if method in EFFICIENT_METHODS:
        from selfsup.adapt.peft_methods import wrap

        model, backbone = wrap(model, method, head, data.kind, cfg, source)
    trainable, total = count_parameters(model)
    device = _device(cfg)
    model.to(device)
    from selfsup.adapt.peft_methods import DEFAULT_LR, reserved_positions, save_artifact

    max_length = min(cfg.max_length, model_positions(model.config, tok) - reserved_positions(model))
    types = keep_token_types(model.config)
    train_feats = encode(data.kind, tok, train_examples, data.labels, max_length, types, cfg)
    eval_feats = encode(data.kind, tok, data.eval, data.labels, max_length, types, cfg)
    pad_id = tok.pad_token_id

    lr = cfg.lr or DEFAULT_LR.get(method) or (1e-3 if method == "linear" else 1e-4)
    started = time.perf_counter()
    history, ev, step, epochs = fit(
        model, train_feats, cfg, lr=lr, seed=seed, device=device,
        loss_fn=lambda m, batch: m(**batch).loss,
        collate_fn=lambda chunk: collate(chunk, pad_id, device),
        eval_fn=lambda m: run_eval(m, eval_feats, data.eval, data.kind, data.labels, cfg, pad_id, device),
        main_metric=MAIN_METRIC[data.kind] if progress else None)
    seconds = time.perf_counter() - started
    final = {k: v for k, v in ev.items()}
    model.cpu()
    artifact_bytes = save_artifact(model, method, out / "model")  # peft / adapter methods: only the artifact
    tok.save_pretrained(str(out / "model"))
    save_task(out / "model", {"kind": data.kind, "labels": data.labels, "text_column": data.columns.text,
                              "pair_column": data.columns.pair, "label_column": data.columns.label,
                              "max_length": max_length, "doc_stride": cfg.doc_stride,
                              "max_answer_length": cfg.max_answer_length, "n_best": cfg.n_best,
                              "source_model": str(source), "init": init, "method": method})
    metrics = {"task": data.kind, "model": str(source), "init": init, "method": method, "seed": seed,
               "eval": final, "main_metric": MAIN_METRIC[data.kind], "trainable_parameters": trainable,
               "total_parameters": total, "backbone_parameters": backbone or total,
               "trainable_percent": round(100 * trainable / (backbone or total), 4),
               "artifact_bytes": artifact_bytes, "history": history, "steps": step, "epochs": epochs, "lr": lr,
               "train_examples": len(train_examples), "eval_examples": len(data.eval),
               "labels": data.labels, "train_seconds": round(seconds, 2)}
    from selfsup.fileio import atomic_write_json

    atomic_write_json(out / "metrics.json", metrics)
    from selfsup.adapt.plots import plot_history

    plot_history({f"{init}": history}, out / "curves.png", MAIN_METRIC[data.kind], title=data.kind)
    return metrics


def fit(model, train_feats: Sequence, cfg: FinetuneConfig, *, lr: float, seed: int, device,
        loss_fn: Callable[[Any, dict], Any], collate_fn: Callable[[Sequence], dict],
        eval_fn: Callable[[Any], dict[str, float]], main_metric: str | None = None,
        params: Sequence | None = None) -> tuple[list[dict[str, Any]], dict[str, float], int, int]:
    """The fine-tuning loop shared by every text method: seeded shuffles, AdamW on the trainable parameters
    (`param_groups`: no decay on biases and norms), warm-up + decay, `update` (NaN guard, clipping), and
    `eval_fn(model)` after each epoch. `loss_fn(model, batch)` is the method's loss. Returns (history rows,
    the last evaluation, optimizer steps, epochs); with `main_metric`, prints one line per epoch."""
    import torch

    from selfsup.engine.module import lr_lambda, param_groups

    per_epoch = math.ceil(len(train_feats) / cfg.batch_size)
    total_steps = cfg.max_steps or cfg.epochs * per_epoch
    epochs = math.ceil(total_steps / per_epoch)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr, betas=tuple(cfg.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(cfg.schedule, int(cfg.warmup_ratio * total_steps), total_steps))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    history: list[dict[str, Any]] = []
    step = 0
    ev: dict[str, float] = {}
    trainable_params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_feats), generator=gen).tolist()
        loss_sum, n_seen = 0.0, 0
        for b in range(per_epoch):
            if step >= total_steps:
                break
            chunk = [train_feats[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            batch = collate_fn(chunk)
            with _autocast(device):
                loss = loss_fn(model, batch)
            update(loss, trainable_params, opt, sched, cfg.grad_clip, step)
            step += 1
            loss_sum += loss.item() * len(chunk)
            n_seen += len(chunk)
        ev = eval_fn(model)
        row = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(1, n_seen),
               "eval_loss": ev.get("loss"), **{k: v for k, v in ev.items() if k not in ("loss", "examples")}}
        history.append(row)
        if main_metric:
            print(f"epoch {epoch}/{epochs} step {step}: train_loss={row['train_loss']:.4f} "
                  f"eval_loss={(row['eval_loss'] if row['eval_loss'] is not None else float('nan')):.4f} "
                  f"{main_metric}={row.get(main_metric, float('nan')):.4f}", file=sys.stderr)
    return history, ev, step, epochs


def run_options(*, init: str, seeds: int, epochs: int | None, max_steps: int | None,
                train_fraction: float | None = None, shots: int | None = None) -> dict[str, Any]:
    """Check the options every fine-tuning verb shares; returns the config keys they set (`epochs`, `max_steps`)."""
    if init not in ("pretrained", "scratch"):
        raise SelfsupError(f"--init: expected pretrained or scratch, got {init!r}")
    if seeds < 1:
        raise SelfsupError(f"--seeds: must be >= 1, got {seeds}")
    if train_fraction is not None and not 0 < train_fraction <= 1:
        raise SelfsupError(f"--train-fraction: must be in (0, 1], got {train_fraction}")
    if shots is not None and shots < 1:
        raise SelfsupError(f"--shots: must be >= 1, got {shots}")
    return {k: v for k, v in (("epochs", epochs), ("max_steps", max_steps)) if v is not None}


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelfsupError(f"{out}: already exists and is not empty; choose another --out")


def _resolve_threads(cfg: FinetuneConfig) -> None:
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)


def update(loss, params, opt, sched, grad_clip: float, step: int) -> None:
    """One fine-tuning update: NaN/inf guard, backward, gradient clipping, optimizer and schedule step."""
    import torch

    if not torch.isfinite(loss.detach()):
        raise TrainingDiverged(f"loss is {loss.item()} at step {step + 1}; stopped (lower lr with --set lr=...)")
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def finetune(model: str | Path, task: str, train: str, eval: str, out: str | Path, *, method: str = "full",
             init: str = "pretrained", text_column: str | None = None, pair_column: str | None = None,
             label_column: str | None = None, epochs: int | None = None, max_steps: int | None = None,
             seed: int = 0, overrides: Sequence[str] = (), train_fraction: float | None = None,
             shots: int | None = None, seeds: int = 1, progress: bool = False,
             unlabeled: str | None = None) -> dict[str, Any]:
    """Fine-tune `model` on `task`; returns what is written to `out/metrics.json`.

    With `seeds > 1` the run repeats with seeds seed, seed+1, ... (each in `out/seed-S/`, the few-label
    subset re-drawn per seed) and `metrics.json` reports the mean and standard deviation of each metric.
    `unlabeled` (a file like `train`, labels ignored) is for `method="pet"` only."""
    from selfsup.adapt import image_task

    if unlabeled is not None and method != "pet":
        raise SelfsupError(f"--unlabeled: only --method pet uses unlabeled examples (got --method {method})")
    if image_task.handles(task, model):  # image-classification, or an image encoder given a text task
        return image_task.finetune_image(
            model, task, train, eval, out, method=method, init=init, text_column=text_column,
            pair_column=pair_column, label_column=label_column, epochs=epochs, max_steps=max_steps, seed=seed,
            overrides=overrides, train_fraction=train_fraction, shots=shots, seeds=seeds, progress=progress)
    if method == "pet":  # pattern ensembles soft-label --unlabeled; a classifier learns them (selfsup.adapt.pet)
        from selfsup.adapt.pet import finetune_pet

        return finetune_pet(
            model, task, train, eval, out, unlabeled=unlabeled, init=init, text_column=text_column,
            pair_column=pair_column, label_column=label_column, epochs=epochs, max_steps=max_steps, seed=seed,
            overrides=overrides, train_fraction=train_fraction, shots=shots, seeds=seeds, progress=progress)
    if method == "prompt":  # the LM head fills a template's blank: no new head (selfsup.adapt.prompting)
        from selfsup.adapt.prompting import finetune_prompt

        return finetune_prompt(
            model, task, train, eval, out, init=init, text_column=text_column, pair_column=pair_column,
            label_column=label_column, epochs=epochs, max_steps=max_steps, seed=seed, overrides=overrides,
            train_fraction=train_fraction, shots=shots, seeds=seeds, progress=progress)
    from selfsup.adapt.heads import resolve_checkpoint
    from selfsup.adapt.tasks import subsample

    out = Path(out)
    if method not in ("full", "linear", "early-exit") + EFFICIENT_METHODS:
        raise SelfsupError(f"--method: expected one of full, linear, early-exit, {', '.join(EFFICIENT_METHODS)}, "
                           f"got {method!r}")
    if method in EFFICIENT_METHODS and init != "pretrained":
        raise SelfsupError(f"--method {method}: needs --init pretrained (the artifact loads onto the checkpoint)")
    base = run_options(init=init, seeds=seeds, epochs=epochs, max_steps=max_steps, train_fraction=train_fraction,
                       shots=shots)
    cfg = parse_overrides(overrides, base)
    _check_out(out)
    source = resolve_checkpoint(model)
    if method in EFFICIENT_METHODS:  # an unsupported method/family/task is an error before any work
        from selfsup.adapt.heads import _model_type
        from selfsup.adapt.peft_methods import check_supported

        check_supported(method, _model_type(source), task)
    if method == "early-exit":  # one exit head per layer (selfsup.adapt.early_exit): family/kind checked first
        from selfsup.adapt.early_exit import check_supported as check_early_exit
        from selfsup.adapt.heads import _model_type

        check_early_exit(_model_type(source), task)
    columns = columns_for(task, text_column, pair_column, label_column)
    data = load_data(task, train, eval, columns)
    for s in range(seed, seed + seeds):  # a too-small class is an error before anything is written
        subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
    _resolve_threads(cfg)

    def train_seed(s: int, folder: Path) -> dict[str, Any]:
        subset = subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
        if method == "early-exit":
            from selfsup.adapt.early_exit import train_early_exit

            return train_early_exit(source, data, cfg, init=init, seed=s, out=folder, train_examples=subset,
                                    progress=progress)
        return _train_one(source, data, cfg, method=method, init=init, seed=s, out=folder,
                          train_examples=subset, progress=progress)

    return over_seeds(out, seed, seeds, train_seed, to_dict(cfg),
                      shared=("trainable_percent", "artifact_bytes"))


def over_seeds(out: Path, seed: int, seeds: int, train_seed: Callable[[int, Path], dict[str, Any]],
               config: dict[str, Any], shared: Sequence[str] = (),
               summarize: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run `train_seed(s, folder)` for s = seed, seed+1, ... inside an atomically renamed `out` (one `seed-S/`
    sub-folder each when there are several) and write `metrics.json`: the single run's metrics, or the mean
    and standard deviation of every eval metric with the per-seed runs. `shared` names extra keys that are the
    same for every seed and are copied from the first run; `summarize(runs)` adds a method's own aggregates."""
    import numpy as np

    from selfsup.fileio import atomic_dir, atomic_write_json

    if out.is_dir():
        out.rmdir()  # empty (checked by the caller): the finished run is renamed into its place
    runs = []
    with atomic_dir(out) as tmp:
        for s in range(seed, seed + seeds):
            folder = tmp if seeds == 1 else tmp / f"seed-{s}"
            folder.mkdir(parents=True, exist_ok=True)
            runs.append(train_seed(s, folder))
        if seeds == 1:
            result = dict(runs[0])
        else:
            keys = [k for k, v in runs[0]["eval"].items() if isinstance(v, (int, float)) and k != "examples"]
            mean = {k: float(np.mean([r["eval"][k] for r in runs])) for k in keys}
            std = {k: float(np.std([r["eval"][k] for r in runs], ddof=1)) for k in keys}
            result = {key: runs[0][key] for key in ("task", "model", "init", "method", "main_metric",
                                                     "trainable_parameters", "total_parameters", "labels",
                                                     "train_examples", "eval_examples", *shared)}
            result.update({"seeds": [r["seed"] for r in runs], "eval": mean, "eval_std": std,
                           "eval_mean_std": {k: f"{mean[k]:.4f} ± {std[k]:.4f}" for k in keys},
                           "runs": [{"seed": r["seed"], "folder": f"seed-{r['seed']}", "eval": r["eval"],
                                     "history": r["history"]} for r in runs]})
            if summarize is not None:  # a method's own per-seed results, aggregated (e.g. PET's ensemble)
                result.update(summarize(runs))
        result["config"] = config
        atomic_write_json(tmp / "metrics.json", result)
    return result


def evaluate_finetuned(model_dir: str | Path, eval_file: str, out: str | Path | None = None, *,
                       text_column: str | None = None, pair_column: str | None = None,
                       label_column: str | None = None, batch_size: int = 64,
                       overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A fine-tuned model (from `selfsup finetune`) on a labeled file -> metrics (written to `out`, a JSON
    file path or a folder that gets `metrics.json`)."""
    from selfsup.adapt import image_task
    from selfsup.adapt.tasks import check_labels, read_task

    if image_task.is_classifier(model_dir):  # `finetune --task image-classification`: its own reader and head
        return image_task.evaluate_image(model_dir, eval_file, out, batch_size=batch_size, overrides=overrides)
    model, tok, info, cfg, columns = _load_for_inference(model_dir, text_column, pair_column, label_column,
                                                         batch_size, overrides)
    examples = read_task(eval_file, info["kind"], columns, labeled=True)
    if info["labels"]:
        check_labels(examples, info["labels"])
    device = _device(cfg)
    model.to(device)
    feats = encode(info["kind"], tok, examples, info["labels"], info["max_length"],
                   keep_token_types(model.config), cfg)
    metrics = {"task": info["kind"], "model": str(model_dir), "eval_file": str(eval_file),
               "eval": run_eval(model, feats, examples, info["kind"], info["labels"], cfg, tok.pad_token_id, device)}
    write_metrics(out, metrics)
    return metrics


def write_metrics(out: str | Path | None, metrics: dict[str, Any]) -> None:
    """`selfsup evaluate --out`: a .json path, or a folder that gets metrics.json (atomically); None: nothing."""
    from selfsup.fileio import atomic_write_json

    if out is not None:
        path = Path(out)
        atomic_write_json(path if path.suffix == ".json" else path / "metrics.json", metrics)


def _load_for_inference(model_dir, text_column, pair_column, label_column, batch_size, overrides):
    from selfsup.adapt.heads import load_finetuned

    model, tok, info = load_finetuned(model_dir)
    base = {"eval_batch_size": batch_size, "max_length": info["max_length"]}
    for key in ("doc_stride", "max_answer_length", "n_best"):
        if info.get(key) is not None:
            base[key] = info[key]
    cfg = parse_overrides(overrides, base)
    _resolve_threads(cfg)
    if info.get("method") == "early-exit" or cfg.exit_threshold is not None or cfg.exit_patience is not None:
        from selfsup.adapt.early_exit import set_exit_rule

        set_exit_rule(model, cfg.exit_threshold, cfg.exit_patience)
    columns = Columns(text_column or info.get("text_column") or "text", pair_column or info.get("pair_column"),
                      label_column or info.get("label_column") or "label")
    return model, tok, info, cfg, columns


def predict(model_dir: str | Path, source: str, *, text_column: str | None = None, pair_column: str | None = None,
            batch_size: int = 64, overrides: Sequence[str] = (), stdin=None) -> Iterator[dict]:
    """Predictions for a file (same formats as training, labels optional) or `-` for stdin (JSONL rows, or
    plain lines: one text per line, `text<TAB>pair` for pair tasks, space-separated words for tagging).
    Yields one dict per example, in batches of `batch_size`, so a long input never sits in memory whole."""
    from selfsup.adapt import image_task
    from selfsup.adapt.tasks import read_task

    if image_task.is_classifier(model_dir):
        yield from image_task.predict_image(model_dir, source, batch_size=batch_size, overrides=overrides)
        return
    model, tok, info, cfg, columns = _load_for_inference(model_dir, text_column, pair_column, None, batch_size,
                                                         overrides)
    kind = info["kind"]
    device = _device(cfg)
    model.to(device)
    types = keep_token_types(model.config)
    if source == "-":
        chunks = _stdin_examples(stdin or sys.stdin, kind, columns, cfg.eval_batch_size)
    else:
        examples = read_task(source, kind, columns, labeled=False)
        chunks = (examples[i:i + cfg.eval_batch_size] for i in range(0, len(examples), cfg.eval_batch_size))
    for chunk in chunks:
        for ex in chunk:  # prediction ignores any labels the file has
            if hasattr(ex, "label"):
                ex.label = None
            if hasattr(ex, "tags"):
                ex.tags = None
            if hasattr(ex, "answers"):
                ex.answers = []
        feats = encode(kind, tok, chunk, info["labels"], info["max_length"], types, cfg)
        preds: list[dict] = []
        run_eval(model, feats, chunk, kind, info["labels"], cfg, tok.pad_token_id, device, predictions=preds)
        yield from preds


def _stdin_examples(stream, kind: str, columns: Columns, size: int) -> Iterator[list]:
    import json

    from selfsup.adapt.tasks import TaggedSentence, TextExample, _qa_example, _text

    chunk: list = []
    for lineno, line in enumerate(stream, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        where = f"<stdin>:{lineno}"
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SelfsupError(f"{where}: invalid JSON ({e.msg})") from None
        elif kind == "pair-classification":
            a, _, b = line.partition("\t")
            row = {columns.text: a, columns.pair: b}
        elif kind == "token-classification":
            row = {columns.text: line.split()}
        elif kind == "extractive-qa":
            raise SelfsupError(f"{where}: extractive-qa reads JSON lines with question and context")
        else:
            row = {columns.text: line}
        if kind == "token-classification":
            words = row.get(columns.text)
            words = words.split() if isinstance(words, str) else words
            if not words:
                raise SelfsupError(f"{where}: empty text")
            ex: Any = TaggedSentence(list(words), None, where)
        elif kind == "extractive-qa":
            ex = _qa_example(row.get("id", lineno), row.get(columns.pair or "question"), row.get(columns.text), [],
                             where, labeled=False)
        else:
            ex = TextExample(_text(row, columns.text, where),
                             _text(row, columns.pair, where) if kind == "pair-classification" else None, None, where)
        chunk.append(ex)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
