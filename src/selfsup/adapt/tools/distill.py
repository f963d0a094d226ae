"""`selfsup distill`: knowledge distillation of a fine-tuned classifier into a smaller student (Hinton, Vinyals
& Dean 2015, "Distilling the Knowledge in a Neural Network").

The student predicts the teacher's temperature-softened class distribution (and, on labeled rows, the gold
label) from the same text: loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)
(`selfsup.losses.distillation_loss`); rows of `--unlabeled` get the KL term only. The teacher's logits are
computed once, before training (teacher in eval mode, its own tokenization and max_length), and cached per
feature; training is the shared fitting loop (`core.fit`), seeds via `core.runs.over_seeds`.

Student: any checkpoint whose tokenizer has the teacher's vocabulary (built with the teacher's label set), or —
with `--set student_layers=N` and no student (or the teacher itself) — the teacher's own architecture with N
layers initialised from evenly spaced teacher layers, first and last included (DistilBERT-style, Sanh et al.
2019: layers 0, 2, 4, 7, 9, 11 of 12), together with the teacher's embeddings and classifier. With a student
checkpoint, `student_layers` keeps N evenly spaced layers of that checkpoint.

Outputs (a new folder, renamed into place only when complete): `model/` (plain HF format + `task.json`, so
`selfsup evaluate` / `predict` work on it), `metrics.json` (finetune's keys plus `teacher` and `compression`
= teacher parameters / student parameters), `curves.png`, `table.md` / `table.json` (teacher vs student).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

from selfsup.adapt.core.options import FinetuneConfig
from selfsup.config import bounded
from selfsup.errors import SelfsupError

DISTILLABLE_KINDS = ("sequence-classification", "pair-classification")


@dataclasses.dataclass
class DistillConfig(FinetuneConfig):
    """`selfsup finetune`'s keys plus the distillation ones."""
    temperature: float = bounded(2.0, gt=0, doc="T: softens both distributions in the KL term")
    alpha: float = bounded(0.5, ge=0, le=1, doc="weight of the KL term (1 - alpha: the hard-label term)")
    student_layers: int | None = bounded(None, ge=1, doc="keep N evenly spaced layers of the student")


def parse_distill_overrides(pairs: Sequence[str], base: dict | None = None) -> DistillConfig:
    from selfsup.adapt.core.options import parse_overrides

    return parse_overrides(pairs, base, schema=DistillConfig)


def check_same_vocabulary(teacher_tok, student_tok, student: str) -> None:
    """Distillation here feeds both models the same tokens: the vocabularies must be identical."""
    a, b = teacher_tok.get_vocab(), student_tok.get_vocab()
    if a != b:
        differ = len(set(a.items()) ^ set(b.items()))
        raise SelfsupError(f"--student {student}: its tokenizer's vocabulary differs from the teacher's "
                           f"({len(b)} vs {len(a)} tokens, {differ} (token, id) pairs differ); the student must "
                           f"share the teacher's tokenizer")


def teacher_folder(teacher: str | Path) -> Path:
    """The teacher's model folder, found as evaluate/predict/prune find it (a run folder, its model/, or the
    best seed of a multi-seed run)."""
    from selfsup.adapt.core.models import finetuned_folder

    if not Path(teacher).exists():
        raise SelfsupError(f"--teacher {teacher}: no such folder")
    try:
        return finetuned_folder(teacher)
    except SelfsupError as e:
        raise SelfsupError(f"--teacher {e}") from None


def _teacher_info(teacher: str | Path, folder: Path) -> dict:
    """The teacher's task.json, checked: a fine-tuned sequence- or pair-classification model."""
    from selfsup.adapt.core.models import read_task_info

    info = read_task_info(folder)
    if info.get("kind") not in DISTILLABLE_KINDS:
        raise SelfsupError(f"--teacher {teacher}: distillation supports {', '.join(DISTILLABLE_KINDS)} teachers; "
                           f"this one is {info.get('kind')}")
    return info


def _timed_eval(model, feats, examples, kind, labels, cfg, pad_id, device) -> tuple[dict, float]:
    from selfsup.adapt.core.evaluation import run_eval

    started = time.perf_counter()
    ev = run_eval(model, feats, examples, kind, labels, cfg, pad_id, device)
    return ev, round(time.perf_counter() - started, 3)


def distill(teacher: str | Path, student: str | Path | None, train: str, eval: str, out: str | Path, *,
            unlabeled: str | None = None, init: str = "pretrained", epochs: int | None = None,
            max_steps: int | None = None, seed: int = 0, seeds: int = 1, overrides: Sequence[str] = (),
            text_column: str | None = None, pair_column: str | None = None, label_column: str | None = None,
            progress: bool = False) -> dict[str, Any]:
    """Distill the fine-tuned `teacher` (a `selfsup finetune` folder) into `student` (a checkpoint; None:
    the teacher's own architecture, usually with `--set student_layers=N`) on `train` (+ `unlabeled`),
    evaluating on `eval`. Returns what is written to `out/metrics.json`."""
    from selfsup.adapt.core.artifacts import load_finetuned
    from selfsup.adapt.core.evaluation import predict_logits
    from selfsup.adapt.core.features import encode, keep_token_types
    from selfsup.adapt.core.kinds import Columns, main_metric
    from selfsup.adapt.core.models import count_parameters, load_tokenizer, resolve_checkpoint
    from selfsup.adapt.core.options import run_options
    from selfsup.adapt.core.runs import check_out, device_of, over_seeds, resolve_threads
    from selfsup.adapt.core.tasks import check_labels, read_task
    from selfsup.adapt.registry import get_method
    from selfsup.config import to_dict

    out = Path(out)
    base = run_options(init=init, seeds=seeds, epochs=epochs, max_steps=max_steps)
    cfg = parse_distill_overrides(overrides, base)
    check_out(out)
    teacher_dir = teacher_folder(teacher)
    info = _teacher_info(teacher, teacher_dir)  # cheap checks first: nothing heavy is loaded yet
    kind = info["kind"]
    if student is None or Path(student).resolve() in (Path(teacher).resolve(), teacher_dir.resolve()):
        if not get_method(info.get("method") or "full").whole_model:
            raise SelfsupError(f"--teacher {teacher}: a --method {info['method']} artifact has no full model to "
                               f"shrink; name a --student checkpoint")
        source = teacher_dir
    else:
        source = resolve_checkpoint(student)
    if cfg.student_layers is not None:
        depth = json.loads((source / "config.json").read_text()).get("num_hidden_layers")
        if depth is not None and cfg.student_layers > depth:
            raise SelfsupError(f"student_layers: the student ({source}) has {depth} layers; "
                               f"got {cfg.student_layers}")
    t_tok, s_tok = load_tokenizer(teacher_dir), load_tokenizer(source)
    check_same_vocabulary(t_tok, s_tok, str(student or teacher))
    labels = list(info["labels"])
    columns = Columns(text_column or info.get("text_column") or "text", pair_column or info.get("pair_column"),
                      label_column or info.get("label_column") or "label")
    train_ex = read_task(train, kind, columns)
    eval_ex = read_task(eval, kind, columns)
    check_labels(train_ex, labels)
    check_labels(eval_ex, labels)
    extra_ex = read_task(unlabeled, kind, columns, labeled=False) if unlabeled else []
    for ex in extra_ex:  # transfer data: the teacher's soft labels only, even where the file has labels
        ex.label = None
    resolve_threads(cfg)
    device = device_of(cfg)
    t_model, t_tok, info = load_finetuned(teacher)

    # the teacher: its logits on every training row (its own tokenization), its eval metrics and size
    t_model.to(device)
    t_types = keep_token_types(t_model.config)
    t_feats = encode(kind, t_tok, train_ex + extra_ex, labels, info["max_length"], t_types, cfg)
    soft = predict_logits(t_model, t_feats, cfg.eval_batch_size, t_tok.pad_token_id, device)
    t_eval_feats = encode(kind, t_tok, eval_ex, labels, info["max_length"], t_types, cfg)
    t_eval, t_seconds = _timed_eval(t_model, t_eval_feats, eval_ex, kind, labels, cfg, t_tok.pad_token_id, device)
    t_params = count_parameters(t_model)[1]
    t_model.cpu()
    del t_feats, t_eval_feats
    teacher_info = {"model": str(teacher), "eval": t_eval, "parameters": t_params, "eval_seconds": t_seconds,
                    "layers": getattr(t_model.config, "num_hidden_layers", None)}

    def train_seed(s: int, folder: Path) -> dict[str, Any]:
        return _train_student(source, s_tok, kind, labels, columns, cfg, init=init, seed=s, out=folder,
                              train_ex=train_ex, extra_ex=extra_ex, eval_ex=eval_ex, soft=soft,
                              teacher_info=teacher_info, progress=progress)

    result = over_seeds(out, seed, seeds, train_seed, to_dict(cfg),
                        shared=("teacher", "compression", "student_layers", "temperature", "alpha",
                                "unlabeled_examples", "eval_seconds"))
    _write_tables(out, result, main_metric(kind))
    return result


def _train_student(source: Path, tok, kind: str, labels: list[str], columns, cfg: DistillConfig, *, init: str,
                   seed: int, out: Path, train_ex: list, extra_ex: list, eval_ex: list, soft: list[list[float]],
                   teacher_info: dict, progress: bool) -> dict[str, Any]:
    from selfsup.adapt.core.evaluation import run_eval
    from selfsup.adapt.core.features import collate, encode, keep_token_types, logits_of, model_positions
    from selfsup.adapt.core.fit import fit
    from selfsup.adapt.core.kinds import main_metric
    from selfsup.adapt.core.models import build_model, count_parameters, save_task
    from selfsup.adapt.core.runs import device_of, seed_record, write_seed
    from selfsup.adapt.core.tasks import IGNORE
    from selfsup.adapt.shared.surgery import encoder_blocks, evenly_spaced, keep_layers
    from selfsup.losses import distillation_loss

    model, _ = build_model(source, kind, labels, tok, init=init, seed=seed, dropout=cfg.dropout)
    kept = None
    if cfg.student_layers is not None:
        _, blocks = encoder_blocks(model, f"--student {source}")
        if cfg.student_layers > len(blocks):
            raise SelfsupError(f"student_layers: the student ({source}) has {len(blocks)} layers; "
                               f"got {cfg.student_layers}")
        kept = evenly_spaced(len(blocks), cfg.student_layers)
        model = keep_layers(model, kept, f"--student {source}").train()
    trainable, total = count_parameters(model)
    device = device_of(cfg)
    max_length = min(cfg.max_length, model_positions(model.config, tok))
    types = keep_token_types(model.config)
    feats = encode(kind, tok, train_ex + extra_ex, labels, max_length, types, cfg)
    for f, logits in zip(feats, soft):
        f["teacher_logits"] = logits
        f.setdefault("labels", IGNORE)  # unlabeled rows: the KL term only
    eval_feats = encode(kind, tok, eval_ex, labels, max_length, types, cfg)
    pad_id = tok.pad_token_id

    def loss_fn(m, batch: dict):
        return distillation_loss(logits_of(m, batch), batch["teacher_logits"], batch["labels"], cfg.temperature,
                                 cfg.alpha)

    lr = cfg.lr or 1e-4
    metric = main_metric(kind)
    started = time.perf_counter()
    result = fit(model, feats, cfg, lr=lr, seed=seed, loss_fn=loss_fn, main_metric=metric, progress=progress,
                 collate_fn=lambda chunk, dev: collate(chunk, pad_id, dev),
                 eval_fn=lambda m: run_eval(m, eval_feats, eval_ex, kind, labels, cfg, pad_id,
                                            next(m.parameters()).device))
    seconds = time.perf_counter() - started
    model.to(device)
    _, eval_seconds = _timed_eval(model, eval_feats, eval_ex, kind, labels, cfg, pad_id, device)
    model.cpu()
    model.save_pretrained(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    save_task(out / "model", {"kind": kind, "labels": labels, "text_column": columns.text,
                              "pair_column": columns.pair, "label_column": columns.label, "max_length": max_length,
                              "doc_stride": cfg.doc_stride, "max_answer_length": cfg.max_answer_length,
                              "n_best": cfg.n_best, "source_model": str(source), "init": init, "method": "distill",
                              "teacher": teacher_info["model"], "temperature": cfg.temperature, "alpha": cfg.alpha,
                              "kept_layers": kept})
    record = seed_record(kind=kind, source=source, init=init, method="distill", seed=seed, eval=result.eval,
                         main_metric=metric, trainable=trainable, total=total, history=result.history,
                         steps=result.steps, epochs=result.epochs, lr=lr, train_examples=len(train_ex),
                         eval_examples=len(eval_ex), labels=labels, seconds=seconds, best_epoch=result.best_epoch,
                         teacher=teacher_info, compression=round(teacher_info["parameters"] / total, 4),
                         student_layers=getattr(model.config, "num_hidden_layers", None), kept_layers=kept,
                         temperature=cfg.temperature, alpha=cfg.alpha, unlabeled_examples=len(extra_ex),
                         eval_seconds=eval_seconds)
    return write_seed(out, record, {"student": result.history}, title=f"distill {kind}")


def _write_tables(out: Path, result: dict, metric: str) -> None:
    """`table.md` / `table.json`: teacher vs student (mean over seeds where there are several)."""
    from selfsup.fileio import atomic_write_json, atomic_write_text

    teacher = result["teacher"]
    student_params = result["total_parameters"]
    rows = [{"model": f"teacher ({teacher['model']})", "layers": teacher.get("layers"),
             "parameters": teacher["parameters"], "size_percent": 100.0, metric: teacher["eval"].get(metric),
             "eval_loss": teacher["eval"].get("loss"), "eval_seconds": teacher["eval_seconds"]},
            {"model": f"student ({result['model']}, T={result['temperature']}, alpha={result['alpha']})",
             "layers": result.get("student_layers"), "parameters": student_params,
             "size_percent": round(100 * student_params / teacher["parameters"], 2),
             metric: result["eval"].get(metric), "eval_loss": result["eval"].get("loss"),
             "eval_seconds": result.get("eval_seconds"),
             **({f"{metric}_std": result["eval_std"].get(metric)} if "eval_std" in result else {})}]

    def num(x: Any, fmt: str) -> str:
        return "—" if x is None else format(x, fmt)

    lines = [f"| model | layers | parameters | size | {metric} | eval loss | eval s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        score = num(r[metric], ".4f") + (f" ± {r[f'{metric}_std']:.4f}" if r.get(f"{metric}_std") is not None
                                         else "")
        lines.append(f"| {r['model']} | {num(r['layers'], 'd')} | {r['parameters']:,} | {r['size_percent']:.1f}% | "
                     f"{score} | {num(r['eval_loss'], '.4f')} | {num(r['eval_seconds'], '.3f')} |")
    atomic_write_json(out / "table.json", rows)
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n" + f"\ncompression (teacher / student parameters): "
                      f"{result['compression']}x\n")
