"""`selfsup incontext`: in-context learning — a causal LM classifies each evaluation example from a prompt with K
labeled demonstrations, with no gradient step (Brown et al. 2020, "Language Models are Few-Shot Learners"), and
optionally contextual calibration (Zhao, Wallace, Feng, Klein & Singh 2021, "Calibrate Before Use: Improving
Few-Shot Performance of Language Models").

What is predicted from what: the class of a text (or pair) from the LM's likelihood of each label's verbalizer
word(s) as the continuation of `demo_1 \\n demo_2 \\n ... \\n query-prompt`, each demonstration rendered with
the same template and its label's first word. The scoring is `selfsup.adapt.shared.prompts`'s (one implementation:
sum of the word's piece log-probabilities, logsumexp over a label's words, softmax over the labels).

Demonstrations: K training examples drawn uniformly without replacement (not stratified: with K smaller than
the number of labels some labels never appear, as in the papers' random draws), in random order; `draws`
repeats with draws seeded seed, seed+1, ... and reports mean ± std (K = 0, zero-shot, has a single draw).

Contextual calibration (`calibrate="content-free"`): p_cf = the mean over content-free inputs ("N/A", "",
"[MASK]" by default) of the label probabilities they get with the same demonstrations; calibrated probabilities
are p / p_cf renormalized (W = diag(p_cf)^-1, b = 0; the paper writes softmax(Wp + b), its code takes
argmax(Wp + b): the same decisions). A content-free input is not always free of the cue a prompt relies on (an
empty text before a quotation mark is the start of a paragraph, where quotes are common), so batch calibration
(`calibrate="batch"`; Zhou, Wan, Vulić & Korhonen 2024, "Batch Calibration: Rethinking Calibration for In-Context
Learning and Prompt Engineering") takes the prior instead as the mean label probabilities over the evaluation
examples themselves (unlabeled, transductive): same formula, p_cf replaced by that mean.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from selfsup.config import bounded, from_dict, to_dict
from selfsup.errors import SelfsupError


@dataclasses.dataclass
class IncontextConfig:
    """Keys settable with `--set key=value` on `selfsup incontext`."""
    eval_batch_size: int = bounded(16, ge=1)
    max_length: int | None = bounded(None, ge=8, doc="tokens per prompt (default: the model's positions)")
    content_free: list[str] = dataclasses.field(
        default_factory=lambda: ["N/A", "", "[MASK]"], metadata={"doc": "--calibrate: content-free inputs"})
    threads: int = bounded(0, ge=0, doc="CPU threads (0: torch's default)")
    device: str = "auto"

    def validate(self) -> None:
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda") and self.device != "mps":
            raise SelfsupError(f"device: expected auto, cpu, cuda[:N] or mps, got {self.device!r}")
        if not self.content_free:
            raise SelfsupError("content_free: give at least one content-free input")


def parse_incontext_overrides(pairs: Sequence[str]) -> IncontextConfig:
    import yaml

    data: dict[str, Any] = {}
    for item in pairs:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SelfsupError(f"--set: expected key=value, got {item!r}")
        try:
            data[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise SelfsupError(f"{key.strip()}: not a YAML value ({str(e).splitlines()[0]}): {value!r}") from None
    return from_dict(IncontextConfig, data)


# ---------------------------------------------------------------------------------- pure functions
# Written here: contextual calibration is not in the stack (scikit-learn calibrates fitted classifiers only).

def content_free_prior(content_free_probs: np.ndarray) -> np.ndarray:
    """[K, C] label probabilities of K content-free inputs -> p_cf [C]: their mean, renormalized."""
    p = np.asarray(content_free_probs, dtype=np.float64).mean(0)
    return p / p.sum()


def contextual_calibration(probs: np.ndarray, p_cf: np.ndarray) -> np.ndarray:
    """Zhao et al. 2021: q ∝ W p + b with W = diag(p_cf)^-1, b = 0, i.e. q_c = (p_c / p_cf_c) / Σ_k p_k / p_cf_k.
    probs [N, C], p_cf [C] -> [N, C] rows summing to 1."""
    q = np.asarray(probs, dtype=np.float64) / np.asarray(p_cf, dtype=np.float64)[None, :]
    return q / q.sum(1, keepdims=True)


def batch_prior(probs: np.ndarray) -> np.ndarray:
    """Zhou et al. 2024: the contextual prior as the mean of the [N, C] label probabilities over the batch."""
    return content_free_prior(probs)


def draw_demonstrations(n_train: int, shots: int, seed: int) -> list[int]:
    """`shots` distinct training indices, uniformly at random (not stratified), in random order."""
    return random.Random(seed).sample(range(n_train), shots)


def mean_std(rows: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation (ddof=1; 0 for a single row) of each metric over the rows."""
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != "examples"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    std = {k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0 for k in keys}
    return mean, std


def _scores(probs: np.ndarray, gold: np.ndarray, num_classes: int) -> dict[str, float]:
    from selfsup.metrics import ClassificationMetrics

    metric = ClassificationMetrics(num_classes)
    metric.update(probs.argmax(1), gold)
    return metric.compute()


# ------------------------------------------------------------------------------------------------ run

def class_probabilities(model, feats: Sequence[dict], pad_id: int, device, batch_size: int) -> np.ndarray:
    """[N, C] softmax of the PromptClassifier's class scores, batch by batch, without gradient."""
    import torch

    from selfsup.adapt.core.features import collate

    out = []
    with torch.no_grad():
        for i in range(0, len(feats), batch_size):
            batch = collate(feats[i:i + batch_size], pad_id, device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            out.append(torch.softmax(logits.float(), -1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def incontext(model: str | Path, task: str, train: str, eval: str, *, shots: int = 0, draws: int = 1,
              calibrate: bool | str = False, template: str | None = None, verbalizer: Any = None,
              text_column: str | None = None, pair_column: str | None = None, label_column: str | None = None,
              out: str | Path | None = None, seed: int = 0, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """In-context learning of `task` by the causal LM `model`; returns what `out/metrics.json` gets (written
    atomically when `out` is given): per-draw results, mean and std of accuracy / macro-F1 / MCC over draws
    (calibrated ones when `calibrate`, the uncalibrated ones under `uncalibrated`), and a one-line `summary`.
    `calibrate`: False, "content-free" (or True) or "batch"."""
    from selfsup.adapt.core.features import model_positions
    from selfsup.adapt.core.models import load_tokenizer, model_type, resolve_checkpoint
    from selfsup.adapt.core.run import load_data
    from selfsup.adapt.core.runs import check_out, device_of, resolve_threads
    from selfsup.adapt.shared.prompt_inputs import PromptTokenizer
    from selfsup.adapt.shared.prompts import (PromptClassifier, build_spec, lm_kind_of, load_lm,
                                              reserved_positions)
    from selfsup.adapt.core.kinds import columns_for
    from selfsup.adapt.core.tasks import TextExample
    from selfsup.fileio import atomic_write_json

    if shots < 0:
        raise SelfsupError(f"--shots: must be >= 0, got {shots}")
    if draws < 1:
        raise SelfsupError(f"--draws: must be >= 1, got {draws}")
    calibrate = "content-free" if calibrate is True else calibrate
    if calibrate not in (False, None, "content-free", "batch"):
        raise SelfsupError(f"--calibrate: content-free or batch, got {calibrate!r}")
    cfg = parse_incontext_overrides(overrides)
    if out is not None:
        check_out(Path(out))
    source = resolve_checkpoint(model)
    family = model_type(source)
    if lm_kind_of(family, task, "incontext") != "causal":
        raise SelfsupError(f"--model: in-context learning needs a causal LM (gpt2, llama); {source} is a "
                           f"{family!r} model")
    data = load_data(task, train, eval, columns_for(task, text_column, pair_column, label_column))
    if shots > len(data.train):
        raise SelfsupError(f"--shots: {shots} demonstrations asked for, {train} has {len(data.train)} examples")
    tok = load_tokenizer(source)
    spec = build_spec(tok, "causal", task, data.labels, template, verbalizer)
    resolve_threads(cfg)
    device = device_of(cfg)
    lm = load_lm(source, "causal", tok).eval()
    net = PromptClassifier(lm, spec, None, tok.pad_token_id).to(device).eval()
    prompts = PromptTokenizer(tok, spec)
    limit = model_positions(lm.config, tok) - reserved_positions(spec)
    max_length = min(cfg.max_length, limit) if cfg.max_length else limit
    label2id = {lab: i for i, lab in enumerate(data.labels)}
    gold = np.asarray([label2id[e.label] for e in data.eval])
    pair = task == "pair-classification"
    content_free = [TextExample(t, t if pair else None, None, f"content-free {t!r}") for t in cfg.content_free]
    n_draws = draws if shots > 0 else 1
    started = time.perf_counter()
    runs = []
    for d in range(n_draws):
        picked = draw_demonstrations(len(data.train), shots, seed + d)
        demos = [(data.train[i], label2id[data.train[i].label]) for i in picked]
        feats = prompts.encode_prompts(data.eval, data.labels, max_length, demonstrations=demos)
        probs = class_probabilities(net, feats, tok.pad_token_id, device, cfg.eval_batch_size)
        run: dict[str, Any] = {"draw": d, "seed": seed + d, "demonstrations": [data.train[i].where for i in picked],
                               "eval": _scores(probs, gold, len(data.labels))}
        if calibrate == "batch":
            p_cf = batch_prior(probs)
        elif calibrate:
            cf_feats = prompts.encode_prompts(content_free, data.labels, max_length, demonstrations=demos)
            p_cf = content_free_prior(class_probabilities(net, cf_feats, tok.pad_token_id, device,
                                                          cfg.eval_batch_size))
        if calibrate:
            run["uncalibrated_eval"] = run["eval"]
            run["eval"] = _scores(contextual_calibration(probs, p_cf), gold, len(data.labels))
            run["prior" if calibrate == "batch" else "content_free_probs"] = {
                lab: round(float(p), 6) for lab, p in zip(data.labels, p_cf)}
        runs.append(run)
    mean, std = mean_std([r["eval"] for r in runs])
    result: dict[str, Any] = {
        "task": task, "model": str(source), "method": "incontext", "shots": shots, "draws": n_draws, "seed": seed,
        "calibrate": calibrate, "template": spec.template.source, "verbalizer": spec.words, "labels": data.labels,
        "content_free": cfg.content_free if calibrate == "content-free" else None, "max_length": max_length,
        "train_examples": len(data.train), "eval_examples": len(data.eval), "main_metric": "accuracy",
        "eval": mean, "eval_std": std, "eval_mean_std": {k: f"{mean[k]:.4f} ± {std[k]:.4f}" for k in mean},
        "runs": runs, "seconds": round(time.perf_counter() - started, 2), "config": to_dict(cfg)}
    if calibrate:
        u_mean, u_std = mean_std([r["uncalibrated_eval"] for r in runs])
        result["uncalibrated"] = {"eval": u_mean, "eval_std": u_std,
                                  "eval_mean_std": {k: f"{u_mean[k]:.4f} ± {u_std[k]:.4f}" for k in u_mean}}
    result["summary"] = (
        f"incontext {shots}-shot x {n_draws} draw{'s' if n_draws > 1 else ''}"
        f"{f' ({calibrate} calibration)' if calibrate else ''}: accuracy={result['eval_mean_std']['accuracy']}, "
        f"macro_f1={result['eval_mean_std']['macro_f1']}"
        + (f" (uncalibrated accuracy={result['uncalibrated']['eval_mean_std']['accuracy']})" if calibrate else "")
        + f" on {len(data.eval)} examples")
    if out is not None:
        atomic_write_json(Path(out) / "metrics.json", _finite(result))
    return result


def _finite(obj: Any) -> Any:
    """NaN -> None, so metrics.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
