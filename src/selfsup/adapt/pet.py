"""PET / iPET (`selfsup finetune --method pet --unlabeled FILE`): Schick & Schütze 2021, "Exploiting Cloze
Questions for Few Shot Text Classification and Natural Language Inference".

What is predicted from what: the class of a text (or pair) — first by several pattern-verbalizer pairs (PVPs),
each a masked / causal LM filling its template's blank with label words (`selfsup.adapt.prompting`, prompt
fine-tuned on the few labels); then by a plain sequence-classification head trained to predict, from the text
alone, the PVP ensemble's soft labels on unlabeled text.

1. PVPs: `--set patterns=[...]` (templates) with `verbalizers=[...]` (one per pattern) or one shared
   `verbalizer`; default: 2-3 patterns per task kind and LM kind, label names as words. Each PVP is a copy of
   the checkpoint prompt-fine-tuned on the labeled set (`prompting._train_prompt`) into `out/pvp-<i>/`.
2. Weights: each PVP's accuracy on the labeled set *before* training (PET), or `pet_weighting=uniform`.
3. Soft labels on `--unlabeled` (labels there are ignored): softmax(sum_p w_p s_p / sum_p w_p / T), s_p the
   PVP's class scores (log-probabilities of the label words), T = `pet_temperature` (2).
4. Final classifier: `heads.build_model` on the same checkpoint, full fine-tuning on the unlabeled texts only
   with KL(soft || softmax(logits)) (`losses.soft_target_kl`); as in PET the labeled examples are *not*
   added (their information reaches it through the PVPs). Saved as HF format + task.json in `out/model/`.
5. iPET (`ipet_rounds=N`): in round r every PVP is retrained from the checkpoint on the labeled set plus
   examples hard-labeled by the ensemble of the *other* PVPs' round r-1 models: the training set grows to
   len(labeled) * d^r (d = `ipet_factor`, 5; capped by the unlabeled set), the added examples split over the
   classes as the labeled set is, most confident first, never more per class than the ensemble predicts.
   Only the last round's PVP models are kept (earlier rounds are recorded in metrics.json `ipet`).

Outputs (one new folder, renamed into place when complete): `model/` (the final classifier), `pvp-<i>/`
(`model/`, `metrics.json`, `curves.png` of each PVP; `pseudo_labeled.jsonl` after iPET), `soft_labels.jsonl`
(each unlabeled text with its soft label), `metrics.json`, `curves.png`.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from selfsup.errors import SelfsupError

DEFAULT_PATTERNS = {
    ("mlm", "sequence-classification"): ["{text} It was {mask}.", "{mask}: {text}", "[Category: {mask}] {text}"],
    ("mlm", "pair-classification"): ["{text} ? {mask} , {pair}", '"{text}" ? {mask} , "{pair}"'],
    ("causal", "sequence-classification"): ["{text} It was {mask}", "{text} Category: {mask}",
                                            "Text: {text} Topic: {mask}"],
    ("causal", "pair-classification"): ["{text} Question: {pair} Answer: {mask}",
                                        "Premise: {text} Hypothesis: {pair} Label: {mask}"],
}


# ---------------------------------------------------------------------------- pure functions
# Written here: PET's weighting, ensembling and iPET's selection are in no library of the stack.

def pvp_weights(pretrain_accuracies: Sequence[float], weighting: str) -> list[float]:
    """PET's weight of each PVP: its accuracy on the labeled set before training ("accuracy"), or 1
    ("uniform"; also when every accuracy is 0)."""
    if weighting == "uniform" or not any(a > 0 for a in pretrain_accuracies):
        return [1.0] * len(pretrain_accuracies)
    return [float(a) for a in pretrain_accuracies]


def ensemble_soft_labels(scores, weights, temperature: float):
    """scores [P, N, C] (each PVP's class scores), weights [P] -> [N, C] soft labels:
    softmax((sum_p w_p scores_p / sum_p w_p) / T). Weights summing to 0 count as uniform."""
    import torch

    s = torch.as_tensor(scores, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64)
    if float(w.sum()) <= 0:
        w = torch.ones_like(w)
    mean = (w[:, None, None] * s).sum(0) / w.sum()
    return torch.softmax(mean / temperature, dim=-1).float()


def pseudo_label_count(labeled: int, round_: int, factor: int, available: int) -> int:
    """iPET: examples added in round r so the training set grows to labeled * d^r, capped by the pool."""
    return max(0, min(labeled * (factor ** round_ - 1), available))


def select_pseudo_labeled(probs, count: int, class_counts: Sequence[int]) -> list[tuple[int, int]]:
    """iPET's choice from soft labels [N, C]: `count` split over the classes in proportion to `class_counts`
    (largest remainders), each class taking the examples predicted as it, most confident first (capped by
    how many there are). -> (example index, class id) sorted by index."""
    import numpy as np

    p = np.asarray(probs, dtype=np.float64)
    shares = np.asarray(class_counts, dtype=np.float64)
    raw = count * shares / shares.sum()
    quota = np.floor(raw).astype(int)
    for c in np.argsort(-(raw - quota), kind="stable")[:count - quota.sum()]:
        quota[c] += 1
    pred, conf = p.argmax(1), p.max(1)
    chosen = []
    for c, q in enumerate(quota):
        mine = np.flatnonzero(pred == c)
        chosen += [(int(i), c) for i in mine[np.argsort(-conf[mine], kind="stable")][:q]]
    return sorted(chosen)


def classification_eval(probs, gold: Sequence[int]) -> dict[str, float]:
    """Accuracy, macro-F1, MCC and mean negative log-likelihood of class probabilities [N, C]."""
    import numpy as np

    from selfsup.metrics import ClassificationMetrics

    p = np.asarray(probs, dtype=np.float64)
    m = ClassificationMetrics(p.shape[1])
    m.update(p.argmax(1), np.asarray(gold))
    nll = float(-np.log(np.clip(p[np.arange(len(gold)), gold], 1e-12, None)).mean())
    return {"loss": nll, **m.compute(), "examples": len(gold)}


# ---------------------------------------------------------------------------------- the PVPs

def _listed(value: Any, key: str) -> list | None:
    """A list option given inline (YAML list) or as a .json/.yaml file holding a list."""
    import yaml

    if isinstance(value, str) and Path(value).suffix.lower() in (".json", ".yaml", ".yml"):
        if not Path(value).is_file():
            raise SelfsupError(f"{key}: {value}: no such file")
        try:
            value = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise SelfsupError(f"{key}: {value}: not JSON/YAML ({str(e).splitlines()[0]})") from None
    if value is not None and (not isinstance(value, list) or not value):
        raise SelfsupError(f"{key}: expected a non-empty list (inline YAML or a .json/.yaml file), got {value!r}"[:300])
    return value


def build_pvps(tokenizer, lm_kind: str, kind: str, labels: Sequence[str], cfg) -> list:
    """The validated PromptSpecs of `patterns` x `verbalizers` (or the shared `verbalizer`); errors name the
    key and index, e.g. `patterns[1]: needs exactly one {mask}`."""
    from selfsup.adapt.prompting import build_spec

    if cfg.template is not None:
        raise SelfsupError("template: --method pet takes patterns=[...] (a list of templates), not template")
    if cfg.demonstrations:
        raise SelfsupError("demonstrations: not used by --method pet")
    patterns = _listed(cfg.patterns, "patterns") or DEFAULT_PATTERNS[(lm_kind, kind)]
    verbalizers = _listed(cfg.verbalizers, "verbalizers")
    if verbalizers is not None and cfg.verbalizer is not None:
        raise SelfsupError("verbalizers: give either verbalizers=[...] (one per pattern) or one verbalizer")
    if verbalizers is not None and len(verbalizers) != len(patterns):
        raise SelfsupError(f"verbalizers: {len(verbalizers)} verbalizers for {len(patterns)} patterns (give one "
                           f"per pattern, or one shared `verbalizer`)")
    specs = []
    for i, pattern in enumerate(patterns):
        try:
            specs.append(build_spec(tokenizer, lm_kind, kind, labels, pattern,
                                    verbalizers[i] if verbalizers is not None else cfg.verbalizer))
        except SelfsupError as e:  # name the list entry: `template: ...` -> `patterns[i]: ...`
            text = str(e)
            if text.startswith("template:"):
                text = f"patterns[{i}]:" + text[len("template:"):]
            elif verbalizers is not None and text.startswith("verbalizer:"):
                text = f"verbalizers[{i}]:" + text[len("verbalizer:"):]
            raise SelfsupError(text) from None
    if cfg.ipet_rounds and len(specs) < 2:
        raise SelfsupError("ipet_rounds: iPET needs at least 2 patterns (each is taught by the others)")
    return specs


def _scores(model, prompts, examples: Sequence, labels: Sequence[str], max_length: int, cfg, device):
    """[N, C] class scores of a PromptClassifier (eval mode, no gradient)."""
    import torch

    from selfsup.adapt.distill import teacher_logits

    feats = prompts.encode_prompts(examples, labels, max_length)
    return torch.tensor(teacher_logits(model.to(device), feats, cfg.eval_batch_size, prompts.pad_token_id, device))


def pretrain_accuracy(source: Path, spec, examples: Sequence, cfg, *, init: str, seed: int, device) -> float:
    """A PVP's accuracy on the labeled examples with the checkpoint as loaded (PET's weight)."""
    import torch

    from selfsup.adapt.finetune import model_positions
    from selfsup.adapt.heads import load_tokenizer
    from selfsup.adapt.prompting import PromptClassifier, PromptTokenizer, load_lm, reserved_positions

    tok = load_tokenizer(source)
    lm = load_lm(source, spec.lm_kind, tok, init=init, seed=seed)
    model = PromptClassifier(lm, spec, tok.mask_token_id, tok.pad_token_id)
    max_length = min(cfg.max_length, model_positions(lm.config, tok) - reserved_positions(spec))
    scores = _scores(model, PromptTokenizer(tok, spec), examples, spec.labels, max_length, cfg, device)
    gold = [spec.labels.index(e.label) for e in examples]
    return float((scores.argmax(1) == torch.tensor(gold)).float().mean())


# ------------------------------------------------------------------------------ finetune --method pet

def finetune_pet(model: str | Path, task: str, train: str, eval: str, out: str | Path, *,
                 unlabeled: str | None, init: str = "pretrained", text_column: str | None = None,
                 pair_column: str | None = None, label_column: str | None = None, epochs: int | None = None,
                 max_steps: int | None = None, seed: int = 0, overrides: Sequence[str] = (),
                 train_fraction: float | None = None, shots: int | None = None, seeds: int = 1,
                 progress: bool = False) -> dict[str, Any]:
    """PET / iPET on `train` (+ `unlabeled`), evaluated on `eval`; returns what is written to
    `out/metrics.json`: the final classifier's `eval` and `history`, `pvps` (each pattern's eval and weight),
    `ensemble` (the PVP ensemble on `eval`, probabilities at T = 1), `unlabeled_examples`, `ipet` (per round,
    when iPET ran). With several seeds, `ensemble` and each PVP's `eval` are means (`ensemble_std`, ...)."""
    from selfsup.adapt.finetune import (_check_out, _resolve_threads, load_data, over_seeds, parse_overrides,
                                        run_options)
    from selfsup.adapt.heads import _model_type, load_tokenizer, resolve_checkpoint
    from selfsup.adapt.prompting import lm_kind_of
    from selfsup.adapt.tasks import columns_for, read_task, subsample
    from selfsup.config import to_dict

    out = Path(out)
    if not unlabeled:
        raise SelfsupError("--unlabeled: --method pet needs unlabeled examples (--unlabeled FILE, same format "
                           "and columns as --train)")
    base = run_options(init=init, seeds=seeds, epochs=epochs, max_steps=max_steps, train_fraction=train_fraction,
                       shots=shots)
    cfg = parse_overrides(overrides, base)
    _check_out(out)
    source = resolve_checkpoint(model)
    lm_kind = lm_kind_of(_model_type(source), task, method="--method pet")
    columns = columns_for(task, text_column, pair_column, label_column)
    data = load_data(task, train, eval, columns)
    pool = read_task(unlabeled, task, columns, labeled=False)
    for ex in pool:  # the ensemble's soft labels only, even where the file has labels
        ex.label = None
    specs = build_pvps(load_tokenizer(source), lm_kind, task, data.labels, cfg)
    for s in range(seed, seed + seeds):  # a too-small class is an error before anything is written
        subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
    _resolve_threads(cfg)

    def train_seed(s: int, folder: Path) -> dict[str, Any]:
        labeled = subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
        return _pet_seed(source, data, pool, cfg, specs, init=init, seed=s, out=folder, labeled=labeled,
                         progress=progress)

    return over_seeds(out, seed, seeds, train_seed, to_dict(cfg), summarize=_summarize,
                      shared=("trainable_percent", "unlabeled_examples", "patterns", "pet_weighting",
                              "pet_temperature", "ipet_rounds"))


def _pet_seed(source: Path, data, pool: list, cfg, specs: list, *, init: str, seed: int, out: Path,
              labeled: list, progress: bool) -> dict[str, Any]:
    import torch

    from selfsup.adapt.finetune import _device
    from selfsup.adapt.heads import load_finetuned
    from selfsup.adapt.prompting import _train_prompt

    device = _device(cfg)
    started = time.perf_counter()
    pre = [pretrain_accuracy(source, spec, labeled, cfg, init=init, seed=seed, device=device) for spec in specs]
    weights = pvp_weights(pre, cfg.pet_weighting)
    label_ids = {lab: i for i, lab in enumerate(data.labels)}
    gold = [label_ids[e.label] for e in data.eval]
    class_counts = [sum(e.label == lab for e in labeled) for lab in data.labels]

    def train_pvp(i: int, examples: list, pseudo_rows: Sequence[dict] = ()) -> tuple[dict, Any, Any]:
        folder = out / f"pvp-{i}"
        if folder.exists():  # iPET: the previous round's model, already scored
            shutil.rmtree(folder)
        if progress:
            print(f"PET pattern {i + 1}/{len(specs)}: {specs[i].template.source!r} on {len(examples)} examples",
                  file=sys.stderr)
        m = _train_prompt(source, data, cfg, specs[i], init=init, seed=seed, out=folder, train_examples=examples,
                          progress=progress)
        if pseudo_rows:  # iPET: what the other patterns taught this one
            _write_jsonl(folder / "pseudo_labeled.jsonl", pseudo_rows)
        model, prompts, info = load_finetuned(folder)  # the saved model, as `selfsup evaluate` would load it
        got = (_scores(model, prompts, pool, data.labels, info["max_length"], cfg, device),
               _scores(model, prompts, data.eval, data.labels, info["max_length"], cfg, device))
        model.cpu()
        return m, *got

    trained = [train_pvp(i, labeled) for i in range(len(specs))]
    rounds: list[dict[str, Any]] = []
    for r in range(1, cfg.ipet_rounds + 1):
        if r == 1:
            rounds.append(_round_row(0, trained, weights, gold, [0] * len(specs), []))
        count = pseudo_label_count(len(labeled), r, cfg.ipet_factor, len(pool))
        added, per_class, retrained = [], [], []
        for i in range(len(specs)):
            others = [j for j in range(len(specs)) if j != i]
            probs = ensemble_soft_labels(torch.stack([trained[j][1] for j in others]), [weights[j] for j in others],
                                         cfg.pet_temperature)
            chosen = select_pseudo_labeled(probs, count, class_counts)
            pseudo = [dataclasses.replace(pool[k], label=data.labels[c]) for k, c in chosen]
            added.append(len(pseudo))
            per_class.append({lab: sum(c == k for _, c in chosen) for k, lab in enumerate(data.labels)})
            rows = [{**_texts(pool[k]), "label": data.labels[c], "confidence": round(float(probs[k, c]), 6)}
                    for k, c in chosen]
            retrained.append(train_pvp(i, labeled + pseudo, rows))
        trained = retrained
        rounds.append({**_round_row(r, trained, weights, gold, added, per_class), "target_added": count})
    soft = ensemble_soft_labels(torch.stack([t[1] for t in trained]), weights, cfg.pet_temperature)
    final = _train_final(source, data, pool, soft, cfg, init=init, seed=seed, out=out, progress=progress)
    _write_jsonl(out / "soft_labels.jsonl",
                 [{**_texts(e), "probabilities": dict(zip(data.labels, (round(float(x), 6) for x in q)))}
                  for e, q in zip(pool, soft)])
    return {**final, "labeled_examples": len(labeled), "unlabeled_examples": len(pool),
            "ensemble": _round_row(0, trained, weights, gold, [], [])["ensemble"], "ipet": rounds,
            "pvps": [{"pattern": spec.template.source, "verbalizer": spec.words, "folder": f"pvp-{i}",
                      "pretrain_accuracy": pre[i], "weight": weights[i], "train_examples": m["train_examples"],
                      "eval": m["eval"]} for i, (spec, (m, _, _)) in enumerate(zip(specs, trained))],
            "patterns": [s.template.source for s in specs], "pet_weighting": cfg.pet_weighting,
            "pet_temperature": cfg.pet_temperature, "ipet_rounds": cfg.ipet_rounds,
            "total_seconds": round(time.perf_counter() - started, 2)}


def _round_row(r: int, trained: list, weights: list, gold: list, added: list, per_class: list) -> dict:
    import torch

    ens = ensemble_soft_labels(torch.stack([t[2] for t in trained]), weights, 1.0)
    return {"round": r, "added": added, "added_per_class": per_class,
            "train_examples": [t[0]["train_examples"] for t in trained],
            "pvps": [t[0]["eval"] for t in trained], "ensemble": classification_eval(ens, gold)}


def _train_final(source: Path, data, pool: list, soft, cfg, *, init: str, seed: int, out: Path,
                 progress: bool) -> dict[str, Any]:
    """The final classifier: a sequence-classification head, full fine-tuning on the unlabeled texts with
    KL(soft labels || its prediction); saved in `out/model` (HF format + task.json, `method: pet`)."""
    from selfsup.adapt.finetune import (MAIN_METRIC, _device, collate, encode, fit, logits_of,
                                        keep_token_types, model_positions, run_eval)
    from selfsup.adapt.heads import build_model, count_parameters, load_tokenizer, save_task
    from selfsup.adapt.plots import plot_history
    from selfsup.losses import soft_target_kl

    tok = load_tokenizer(source)
    model, _ = build_model(source, data.kind, data.labels, tok, init=init, seed=seed, dropout=cfg.dropout)
    trainable, total = count_parameters(model)
    device = _device(cfg)
    model.to(device)
    max_length = min(cfg.max_length, model_positions(model.config, tok))
    types = keep_token_types(model.config)
    feats = encode(data.kind, tok, pool, data.labels, max_length, types, cfg)
    for f, q in zip(feats, soft.tolist()):
        f["soft_labels"] = q
    eval_feats = encode(data.kind, tok, data.eval, data.labels, max_length, types, cfg)
    pad_id = tok.pad_token_id

    def loss_fn(m, batch: dict):
        return soft_target_kl(logits_of(m, batch), batch["soft_labels"])

    final_cfg = dataclasses.replace(cfg, epochs=cfg.pet_final_epochs, max_steps=None) if cfg.pet_final_epochs \
        else cfg
    lr = cfg.lr or 1e-4
    started = time.perf_counter()
    history, ev, step, epochs = fit(
        model, feats, final_cfg, lr=lr, seed=seed, device=device, loss_fn=loss_fn,
        collate_fn=lambda chunk: collate(chunk, pad_id, device),
        eval_fn=lambda m: run_eval(m, eval_feats, data.eval, data.kind, data.labels, cfg, pad_id, device),
        main_metric=MAIN_METRIC[data.kind] if progress else None)
    seconds = time.perf_counter() - started
    model.cpu()
    model.save_pretrained(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    save_task(out / "model", {"kind": data.kind, "labels": data.labels, "text_column": data.columns.text,
                              "pair_column": data.columns.pair, "label_column": data.columns.label,
                              "max_length": max_length, "source_model": str(source), "init": init, "method": "pet",
                              "pet_temperature": cfg.pet_temperature})
    plot_history({"final classifier": history}, out / "curves.png", MAIN_METRIC[data.kind],
                 title=f"{data.kind} (PET final classifier)")
    return {"task": data.kind, "model": str(source), "init": init, "method": "pet", "seed": seed, "eval": dict(ev),
            "main_metric": MAIN_METRIC[data.kind], "trainable_parameters": trainable, "total_parameters": total,
            "trainable_percent": round(100 * trainable / total, 4), "history": history, "steps": step,
            "epochs": epochs, "lr": lr, "train_examples": len(pool), "eval_examples": len(data.eval),
            "labels": data.labels, "train_seconds": round(seconds, 2)}


def _texts(example) -> dict[str, str]:
    return {"text": example.text, **({"pair": example.pair} if example.pair is not None else {})}


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    from selfsup.fileio import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several seeds: mean and standard deviation of the ensemble's and of each pattern's eval metrics."""
    import numpy as np

    def stats(evals: list[dict]) -> tuple[dict, dict]:
        keys = [k for k, v in evals[0].items() if isinstance(v, (int, float)) and k != "examples"]
        return ({k: float(np.mean([e[k] for e in evals])) for k in keys},
                {k: float(np.std([e[k] for e in evals], ddof=1)) for k in keys})

    mean, std = stats([r["ensemble"] for r in runs])
    pvps = []
    for i, p in enumerate(runs[0]["pvps"]):
        m, s = stats([r["pvps"][i]["eval"] for r in runs])
        pvps.append({"pattern": p["pattern"], "verbalizer": p["verbalizer"], "eval": m, "eval_std": s,
                     "weights": [r["pvps"][i]["weight"] for r in runs]})
    return {"ensemble": mean, "ensemble_std": std, "pvps": pvps}
