"""Evaluation and prediction of fine-tuned models: streaming metrics batch by batch (never all logits in
memory), one prediction dict per example, and the `selfsup evaluate` / `selfsup predict` entry points for
every method and kind (the method named in the folder's task.json loads the model). Inference batches hold
examples of similar length (sorted, `length_groups`), so padding wastes few positions; predictions come back
in input order."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from selfsup.adapt.core.features import MODEL_INPUTS, collate, encode, keep_token_types
from selfsup.adapt.core.kinds import Columns, task_kind
from selfsup.adapt.core.options import split_overrides
from selfsup.adapt.core.runs import autocast, device_of, resolve_threads, write_metrics
from selfsup.data.symbol_map import map_examples
from selfsup.errors import SelfsupError


def run_eval(model, feats: Sequence[dict], examples: Sequence, kind: str, labels: list[str] | None,
             cfg: Any, pad_id: int, device, predictions: list | None = None) -> dict[str, float]:
    """Streaming evaluation: loss and the task's metrics, accumulated batch by batch (batches of similar
    lengths: the features sorted by length, except QA windows, whose ties between windows keep input order).
    With `predictions` (a list), also appends one prediction dict per example, in the order of `feats`
    (for `selfsup predict`)."""
    import numpy as np
    import torch

    from selfsup import metrics as M
    from selfsup.adapt.core.length_groups import length_sorted_positions

    was_training = model.training
    model.eval()
    loss = M.MeanLoss()
    labeled = bool(feats) and ("labels" in feats[0] or "start_positions" in feats[0])
    if kind == "extractive-qa":
        from selfsup.adapt.core.qa import QAPostProcessor

        post = QAPostProcessor(cfg.max_answer_length, cfg.n_best)
        labeled = labeled and all(ex.answers for ex in examples)
    metric_cls = getattr(M, task_kind(kind).metric)
    metric = metric_cls(len(labels or [])) if metric_cls is M.ClassificationMetrics else metric_cls()
    positions = list(range(len(feats))) if kind == "extractive-qa" else length_sorted_positions(feats)
    slots: list = [None] * len(feats)  # predictions by input position (batches run in length order)
    with torch.inference_mode(), autocast(device):
        for start in range(0, len(positions), cfg.eval_batch_size):
            where = positions[start:start + cfg.eval_batch_size]
            chunk = [feats[i] for i in where]
            batch = collate(chunk, pad_id, device)
            if not labeled:
                batch = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
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
                for i, s in zip(where, scores):
                    slots[i] = {"score": float(s)}
            elif kind == "token-classification":
                probs = torch.softmax(logits, -1).cpu().numpy()
                pred_tags, gold_tags = [], []
                for i, f, p in zip(where, chunk, probs):
                    idx = [p[j].argmax() if j is not None else None for j in f["first_piece"]]
                    tags = [labels[k] if k is not None else None for k in idx]
                    pred_tags.append(tags)
                    ex = examples[f["example"]]
                    if ex.tags is not None:
                        gold_tags.append(ex.tags)
                    if predictions is not None:
                        conf = [round(float(p[j].max()), 6) if j is not None else None for j in f["first_piece"]]
                        slots[i] = {"words": ex.words, "tags": tags, "probabilities": conf}
                if labeled:
                    metric.update(pred_tags, gold_tags)
            else:
                probs = torch.softmax(logits, -1).cpu().numpy()
                pred = probs.argmax(-1)
                if labeled:
                    metric.update(pred, np.asarray([f["labels"] for f in chunk]))
                if predictions is not None:
                    for i, p in zip(where, probs):
                        slots[i] = {"label": labels[int(p.argmax())],
                                    "probabilities": {lab: round(float(x), 6) for lab, x in zip(labels, p)}}
    if predictions is not None and kind != "extractive-qa":
        predictions.extend(slots)
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


def evaluate_finetuned(model_dir: str | Path, eval_file: str, out: str | Path | None = None, *,
                       text_column: str | None = None, pair_column: str | None = None,
                       label_column: str | None = None, batch_size: int = 64,
                       overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A fine-tuned model (from `selfsup finetune`) on a labeled file -> metrics (written to `out`, a JSON
    file path or a folder that gets `metrics.json`)."""
    from selfsup.adapt.core import audio, images, table_tasks
    from selfsup.adapt.core.runs import check_metrics_out
    from selfsup.adapt.core.tasks import check_labels, read_task
    from selfsup.data.memory import source_name

    check_metrics_out(out)
    if table_tasks.is_table_classifier(model_dir):  # `finetune --task table-classification`: rows, saved scaling
        return table_tasks.evaluate_table(model_dir, eval_file, out, label_column=label_column,
                                          batch_size=batch_size, overrides=overrides)
    if images.is_classifier(model_dir):  # `finetune --task image-classification`: its own reader and head
        return images.evaluate_image(model_dir, eval_file, out, batch_size=batch_size, overrides=overrides)
    if audio.is_audio_classifier(model_dir):  # `finetune --task audio-classification`: clips, not text
        return audio.evaluate_audio(model_dir, eval_file, out, path_column=text_column, label_column=label_column,
                                    batch_size=batch_size, overrides=overrides)
    model, tok, info, cfg, columns = load_for_inference(model_dir, text_column, pair_column, label_column,
                                                         batch_size, overrides)
    examples = map_examples(read_task(eval_file, info["kind"], columns, labeled=True), saved_symbol_map(info))
    if info["labels"]:
        check_labels(examples, info["labels"])
    device = device_of(cfg)
    model.to(device)
    feats = encode(info["kind"], tok, examples, info["labels"], info["max_length"],
                   keep_token_types(model.config), cfg)
    metrics = {"task": info["kind"], "model": str(model_dir), "eval_file": source_name(eval_file),
               "eval": run_eval(model, feats, examples, info["kind"], info["labels"], cfg, tok.pad_token_id, device)}
    write_metrics(out, metrics)
    return metrics


def saved_symbol_map(info: dict):
    """The symbol map a model was fine-tuned with (`load_finetuned` puts it in `info`), or None."""
    from selfsup.data.symbol_map import SymbolMap

    data = info.get("symbol_map")
    if data is None:
        return None
    return SymbolMap.from_json(data, data.get("source") if isinstance(data, dict) else "task.json: symbol_map")


def load_for_inference(model_dir, text_column: str | None, pair_column: str | None, label_column: str | None,
                       batch_size: int, overrides: Sequence[str]):
    """(model, tokenizer, task info, options, columns) of a fine-tuned folder for evaluate / predict: the
    method found by the name in its task.json loads the model, and takes its own inference keys from `--set`
    (e.g. early exit's exit_threshold)."""
    from selfsup.adapt.core.artifacts import load_finetuned

    base = {"eval_batch_size": batch_size}
    model, tok, info, method = load_finetuned(model_dir, with_method=True)
    base["max_length"] = info["max_length"]
    for key in ("doc_stride", "max_answer_length", "n_best"):
        if info.get(key) is not None:
            base[key] = info[key]
    from selfsup.adapt.registry import option_owners

    cfg, (opts,) = split_overrides(overrides, base, own=(method.Options,), owners=option_owners())
    resolve_threads(cfg)
    model = method.for_inference(model, opts)
    columns = Columns(text_column or info.get("text_column") or "text", pair_column or info.get("pair_column"),
                      label_column or info.get("label_column") or "label")
    return model, tok, info, cfg, columns


SORT_WINDOW = 50  # batches of a file's examples sorted by length together in `predict` (HF's megabatch size)


def predict(model_dir: str | Path, source: str, *, text_column: str | None = None, pair_column: str | None = None,
            batch_size: int = 64, overrides: Sequence[str] = (), stdin=None) -> Iterator[dict]:
    """Predictions for a file (same formats as training, labels optional) or `-` for stdin (JSONL rows, or
    plain lines: one text per line, `text<TAB>pair` for pair tasks, space-separated words for tagging).
    Yields one dict per example, in input order; a file is read in windows of `SORT_WINDOW` batches whose
    examples run in length order (stdin: one batch at a time, so a pipe gets answers as it goes), so a long
    input never sits in memory whole."""
    from selfsup.adapt.core import audio, images, table_tasks
    from selfsup.adapt.core.tasks import read_task
    from selfsup.data.text import decoded_lines, inner_suffix

    if table_tasks.is_table_classifier(model_dir):
        yield from table_tasks.predict_table(model_dir, source, batch_size=batch_size, overrides=overrides)
        return
    if images.is_classifier(model_dir):
        yield from images.predict_image(model_dir, source, batch_size=batch_size, overrides=overrides)
        return
    if audio.is_audio_classifier(model_dir):
        yield from audio.predict_audio(model_dir, source, path_column=text_column, batch_size=batch_size,
                                       overrides=overrides)
        return
    model, tok, info, cfg, columns = load_for_inference(model_dir, text_column, pair_column, None, batch_size,
                                                         overrides)
    kind = info["kind"]
    smap = saved_symbol_map(info)
    device = device_of(cfg)
    model.to(device)
    types = keep_token_types(model.config)
    if isinstance(source, str) and source == "-":
        chunks = stdin_examples(stdin or sys.stdin, kind, columns, cfg.eval_batch_size)
    elif isinstance(source, (str, Path)) and not str(source).startswith("hf:") and kind != "token-classification" \
            and inner_suffix(Path(source)) == ".txt":  # plain lines, as on stdin (CoNLL tagging files stay)
        if not Path(source).is_file():
            raise SelfsupError(f"{source}: no such file")
        lines = (line for _, line in decoded_lines(Path(source)))
        chunks = stdin_examples(lines, kind, columns, cfg.eval_batch_size * SORT_WINDOW, name=str(source))
    else:
        examples = read_task(source, kind, columns, labeled=False)
        window = cfg.eval_batch_size * SORT_WINDOW
        chunks = (examples[i:i + window] for i in range(0, len(examples), window))
    for chunk in chunks:
        for ex in chunk:  # prediction ignores any labels the file has
            if hasattr(ex, "label"):
                ex.label = None
            if hasattr(ex, "tags"):
                ex.tags = None
            if hasattr(ex, "answers"):
                ex.answers = []
        chunk = map_examples(chunk, smap)
        feats = encode(kind, tok, chunk, info["labels"], info["max_length"], types, cfg)
        preds: list[dict] = []
        run_eval(model, feats, chunk, kind, info["labels"], cfg, tok.pad_token_id, device, predictions=preds)
        yield from preds


def stdin_examples(stream, kind: str, columns: Columns, size: int, name: str = "<stdin>") -> Iterator[list]:
    """Plain lines (or JSON lines) -> examples in chunks of `size`: one text per line, `text<TAB>pair` for pair
    tasks, space-separated words for tagging; errors name `name:line`."""
    import json

    from selfsup.adapt.core.tasks import TaggedSentence, TextExample, qa_example, text_field

    chunk: list = []
    seen = 0
    for lineno, line in enumerate(stream, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
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
            ex = qa_example(row.get("id", lineno), row.get(columns.pair or "question"), row.get(columns.text), [],
                             where, labeled=False)
        else:
            ex = TextExample(text_field(row, columns.text, where),
                             text_field(row, columns.pair, where) if kind == "pair-classification" else None, None, where)
        chunk.append(ex)
        seen += 1
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
    if not seen and name != "<stdin>":  # a file with nothing to predict is a mistake; an empty pipe is not
        raise SelfsupError(f"{name}: empty (no rows)")


def predict_logits(model, feats: Sequence[dict], batch_size: int, pad_id: int, device) -> list[list[float]]:
    """A model's logits for each feature (eval mode, no gradients): a teacher's soft targets."""
    import torch

    model.eval()
    rows: list[list[float]] = []
    with torch.no_grad(), autocast(device):
        for i in range(0, len(feats), batch_size):
            inputs = [{k: f[k] for k in MODEL_INPUTS if k in f} for f in feats[i:i + batch_size]]
            logits = model(**collate(inputs, pad_id, device)).logits
            rows.extend(logits.float().cpu().tolist())
    return rows
