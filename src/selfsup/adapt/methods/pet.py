"""PET / iPET (`selfsup finetune --method pet --unlabeled FILE`): Schick & Schütze 2021, "Exploiting Cloze
Questions for Few Shot Text Classification and Natural Language Inference".

What is predicted from what: the class of a text (or pair) — first by several pattern-verbalizer pairs (PVPs),
each a masked / causal LM filling its template's blank with label words (`selfsup.adapt.shared.prompts`, prompt
fine-tuned on the few labels); then by a plain sequence-classification head trained to predict, from the text
alone, the PVP ensemble's soft labels on unlabeled text.

1. PVPs: `--set patterns=[...]` (templates) with `verbalizers=[...]` (one per pattern) or one shared
   `verbalizer`; default: 2-3 patterns per task kind and LM kind, label names as words. Each PVP is a copy of
   the checkpoint prompt-fine-tuned on the labeled set (`shared.prompt_training.train_prompt_seed`) into `out/pvp-<i>/`.
2. Weights: each PVP's accuracy on the labeled set *before* training (PET), or `pet_weighting=uniform`.
3. Soft labels on `--unlabeled` (labels there are ignored): softmax(sum_p w_p s_p / sum_p w_p / T), s_p the
   PVP's class scores (log-probabilities of the label words), T = `pet_temperature` (2).
4. Final classifier: `core.models.build_model` on the same checkpoint, full fine-tuning on the unlabeled texts only
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
from typing import Any, Literal, Sequence

from selfsup.adapt.core.kinds import CLASSIFICATION_KINDS
from selfsup.adapt.core.run import Run
from selfsup.adapt.methods.base import AdaptMethod
from selfsup.adapt.registry import register_method
from selfsup.config import bounded
from selfsup.errors import SelfsupError

DEFAULT_PATTERNS = {
    ("mlm", "sequence-classification"): ["{text} It was {mask}.", "{mask}: {text}", "[Category: {mask}] {text}"],
    ("mlm", "pair-classification"): ["{text} ? {mask} , {pair}", '"{text}" ? {mask} , "{pair}"'],
    ("causal", "sequence-classification"): ["{text} It was {mask}", "{text} Category: {mask}",
                                            "Text: {text} Topic: {mask}"],
    ("causal", "pair-classification"): ["{text} Question: {pair} Answer: {mask}",
                                        "Premise: {text} Hypothesis: {pair} Label: {mask}"],
}


@dataclasses.dataclass
class PetOptions:
    patterns: Any = dataclasses.field(
        default=None, metadata={"doc": "templates, one per pattern-verbalizer pair (a YAML list of quoted "
                                       "templates, or a .json/.yaml file holding one)"})
    verbalizers: Any = dataclasses.field(
        default=None, metadata={"doc": "one verbalizer per pattern (YAML list); or `verbalizer` shared by all"})
    verbalizer: Any = dataclasses.field(
        default=None, metadata={"doc": "one {label: word | [words]} for every pattern"})
    pet_weighting: Literal["accuracy", "uniform"] = dataclasses.field(
        default="accuracy", metadata={"doc": "weight each pattern by its training accuracy before training "
                                             "(PET), or uniformly"})
    pet_temperature: float = bounded(2.0, gt=0, doc="soft labels = softmax(ensemble scores / T)")
    pet_final_epochs: int | None = bounded(None, ge=1, doc="epochs of the final classifier on the soft labels "
                                           "(default: as the patterns)")
    ipet_rounds: int = bounded(0, ge=0, doc="iPET rounds (pattern models retrained on labels plus the other "
                               "patterns' pseudo-labels)")
    ipet_factor: int = bounded(5, ge=2, doc="iPET growth d (round r trains on len(labeled) * d^r)")


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


def build_pvps(tokenizer, lm_kind: str, kind: str, labels: Sequence[str], cfg: PetOptions) -> list:
    """The validated PromptSpecs of `patterns` x `verbalizers` (or the shared `verbalizer`); errors name the
    key and index, e.g. `patterns[1]: needs exactly one {mask}`."""
    from selfsup.adapt.shared.prompts import build_spec

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

    from selfsup.adapt.core.evaluation import predict_logits

    feats = prompts.encode_prompts(examples, labels, max_length)
    return torch.tensor(predict_logits(model.to(device), feats, cfg.eval_batch_size, prompts.pad_token_id, device))


def pretrain_accuracy(source: Path, spec, examples: Sequence, cfg, *, init: str, seed: int, device) -> float:
    """A PVP's accuracy on the labeled examples with the checkpoint as loaded (PET's weight)."""
    import torch

    from selfsup.adapt.core.features import model_positions
    from selfsup.adapt.core.models import load_tokenizer
    from selfsup.adapt.shared.prompt_inputs import PromptTokenizer
    from selfsup.adapt.shared.prompts import PromptClassifier, load_lm, reserved_positions

    tok = load_tokenizer(source)
    lm = load_lm(source, spec.lm_kind, tok, init=init, seed=seed)
    model = PromptClassifier(lm, spec, tok.mask_token_id, tok.pad_token_id)
    max_length = min(cfg.max_length, model_positions(lm.config, tok) - reserved_positions(spec))
    scores = _scores(model, PromptTokenizer(tok, spec), examples, spec.labels, max_length, cfg, device)
    gold = [spec.labels.index(e.label) for e in examples]
    return float((scores.argmax(1) == torch.tensor(gold)).float().mean())


# ------------------------------------------------------------------------------ finetune --method pet

@register_method("pet")
class Pet(AdaptMethod):
    """PET / iPET on the labeled set + `--unlabeled`: metrics.json holds the final classifier's `eval` and
    `history`, `pvps` (each pattern's eval and weight), `ensemble` (the PVP ensemble on the eval set,
    probabilities at T = 1), `unlabeled_examples`, `ipet` (per round). With several seeds, `ensemble` and each
    PVP's `eval` are means (`ensemble_std`, ...)."""
    help = "PET/iPET: prompt patterns soft-label --unlabeled text, a classifier learns the soft labels"
    kinds = CLASSIFICATION_KINDS
    Options = PetOptions
    uses_unlabeled = True
    shared_keys = ("trainable_percent", "unlabeled_examples", "patterns", "pet_weighting", "pet_temperature",
                   "ipet_rounds")

    def check(self, family: str, kind: str, opts: Any) -> None:
        from selfsup.adapt.shared.prompts import lm_kind_of

        lm_kind_of(family, kind, method="--method pet")

    def before_seeds(self, run: Run) -> dict[str, Any]:
        from selfsup.adapt.core.models import load_tokenizer, model_type
        from selfsup.adapt.core.tasks import read_task
        from selfsup.adapt.shared.prompts import lm_kind_of

        if not run.unlabeled:
            raise SelfsupError("--unlabeled: --method pet needs unlabeled examples (--unlabeled FILE, same format "
                               "and columns as --train)")
        lm_kind = lm_kind_of(model_type(run.source), run.kind.name, method="--method pet")
        pool = read_task(run.unlabeled, run.kind.name, run.data.columns, labeled=False)
        for ex in pool:  # the ensemble's soft labels only, even where the file has labels
            ex.label = None
        specs = build_pvps(load_tokenizer(run.source), lm_kind, run.kind.name, run.data.labels, run.opts)
        return {"pool": pool, "specs": specs}

    def train_seed(self, run: Run, seed: int, folder: Path, subset: list) -> dict[str, Any]:
        return _pet_seed(run.source, run.data, run.extra["pool"], run.cfg, run.opts, run.extra["specs"],
                         init=run.init, seed=seed, out=folder, labeled=subset, progress=run.progress)

    def summarize(self, runs: list[dict[str, Any]]) -> dict[str, Any]:
        return _summarize(runs)


def _pet_seed(source: Path, data, pool: list, cfg, opts: PetOptions, specs: list, *, init: str, seed: int,
              out: Path, labeled: list, progress: bool) -> dict[str, Any]:
    import torch

    from selfsup.adapt.core.runs import device_of, write_seed
    from selfsup.adapt.core.models import load_tokenizer
    from selfsup.adapt.shared.prompt_training import load_prompt_model, train_prompt_seed

    device = device_of(cfg)
    pvp_cfg = dataclasses.replace(cfg, keep_best=False)  # as in PET, no selection of the patterns on eval data
    started = time.perf_counter()
    pre = [pretrain_accuracy(source, spec, labeled, cfg, init=init, seed=seed, device=device) for spec in specs]
    weights = pvp_weights(pre, opts.pet_weighting)
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
        m = train_prompt_seed(source, data, pvp_cfg, specs[i], init=init, seed=seed, out=folder,
                              train_examples=examples, progress=progress)
        if pseudo_rows:  # iPET: what the other patterns taught this one
            _write_jsonl(folder / "pseudo_labeled.jsonl", pseudo_rows)
        info = json.loads((folder / "model" / "task.json").read_text())  # the saved model, as evaluate loads it
        model, prompts = load_prompt_model(folder / "model", info, load_tokenizer(folder / "model"))
        got = (_scores(model, prompts, pool, data.labels, info["max_length"], cfg, device),
               _scores(model, prompts, data.eval, data.labels, info["max_length"], cfg, device))
        model.cpu()
        return m, *got

    trained = [train_pvp(i, labeled) for i in range(len(specs))]
    rounds: list[dict[str, Any]] = []
    for r in range(1, opts.ipet_rounds + 1):
        if r == 1:
            rounds.append(_round_row(0, trained, weights, gold, [0] * len(specs), []))
        count = pseudo_label_count(len(labeled), r, opts.ipet_factor, len(pool))
        added, per_class, retrained = [], [], []
        for i in range(len(specs)):
            others = [j for j in range(len(specs)) if j != i]
            probs = ensemble_soft_labels(torch.stack([trained[j][1] for j in others]), [weights[j] for j in others],
                                         opts.pet_temperature)
            chosen = select_pseudo_labeled(probs, count, class_counts)
            pseudo = [dataclasses.replace(pool[k], label=data.labels[c]) for k, c in chosen]
            added.append(len(pseudo))
            per_class.append({lab: sum(c == k for _, c in chosen) for k, lab in enumerate(data.labels)})
            rows = [{**_texts(pool[k]), "label": data.labels[c], "confidence": round(float(probs[k, c]), 6)}
                    for k, c in chosen]
            retrained.append(train_pvp(i, labeled + pseudo, rows))
        trained = retrained
        rounds.append({**_round_row(r, trained, weights, gold, added, per_class), "target_added": count})
    soft = ensemble_soft_labels(torch.stack([t[1] for t in trained]), weights, opts.pet_temperature)
    final, history = _train_final(source, data, pool, soft, cfg, opts, init=init, seed=seed, out=out,
                                  progress=progress)
    _write_jsonl(out / "soft_labels.jsonl",
                 [{**_texts(e), "probabilities": dict(zip(data.labels, (round(float(x), 6) for x in q)))}
                  for e, q in zip(pool, soft)])
    record = {**final, "labeled_examples": len(labeled), "unlabeled_examples": len(pool),
              "ensemble": _round_row(0, trained, weights, gold, [], [])["ensemble"], "ipet": rounds,
              "pvps": [{"pattern": spec.template.source, "verbalizer": spec.words, "folder": f"pvp-{i}",
                        "pretrain_accuracy": pre[i], "weight": weights[i], "train_examples": m["train_examples"],
                        "eval": m["eval"]} for i, (spec, (m, _, _)) in enumerate(zip(specs, trained))],
              "patterns": [s.template.source for s in specs], "pet_weighting": opts.pet_weighting,
              "pet_temperature": opts.pet_temperature, "ipet_rounds": opts.ipet_rounds,
              "total_seconds": round(time.perf_counter() - started, 2)}
    return write_seed(out, record, {"final classifier": history}, title=f"{data.kind} (PET final classifier)")


def _round_row(r: int, trained: list, weights: list, gold: list, added: list, per_class: list) -> dict:
    import torch

    ens = ensemble_soft_labels(torch.stack([t[2] for t in trained]), weights, 1.0)
    return {"round": r, "added": added, "added_per_class": per_class,
            "train_examples": [t[0]["train_examples"] for t in trained],
            "pvps": [t[0]["eval"] for t in trained], "ensemble": classification_eval(ens, gold)}


def _train_final(source: Path, data, pool: list, soft, cfg, opts: PetOptions, *, init: str, seed: int, out: Path,
                 progress: bool) -> tuple[dict[str, Any], list]:
    """The final classifier: a sequence-classification head, full fine-tuning on the unlabeled texts with
    KL(soft labels || its prediction); saved in `out/model` (HF format + task.json, `method: pet`)."""
    from selfsup.adapt.core.evaluation import run_eval
    from selfsup.adapt.core.features import collate, encode, keep_token_types, logits_of, model_positions
    from selfsup.adapt.core.fit import fit
    from selfsup.adapt.core.kinds import main_metric
    from selfsup.adapt.core.models import build_model, count_parameters, load_tokenizer, save_task
    from selfsup.adapt.core.runs import seed_record
    from selfsup.losses import soft_target_kl

    tok = load_tokenizer(source)
    model, _ = build_model(source, data.kind, data.labels, tok, init=init, seed=seed, dropout=cfg.dropout)
    trainable, total = count_parameters(model)
    max_length = min(cfg.max_length, model_positions(model.config, tok))
    types = keep_token_types(model.config)
    feats = encode(data.kind, tok, pool, data.labels, max_length, types, cfg)
    for f, q in zip(feats, soft.tolist()):
        f["soft_labels"] = q
    eval_feats = encode(data.kind, tok, data.eval, data.labels, max_length, types, cfg)
    pad_id = tok.pad_token_id
    metric = main_metric(data.kind)

    def loss_fn(m, batch: dict):
        return soft_target_kl(logits_of(m, batch), batch["soft_labels"])

    final_cfg = dataclasses.replace(cfg, epochs=opts.pet_final_epochs, max_steps=None) if opts.pet_final_epochs \
        else cfg
    lr = cfg.lr or 1e-4
    started = time.perf_counter()
    result = fit(model, feats, final_cfg, lr=lr, seed=seed, loss_fn=loss_fn, main_metric=metric, progress=progress,
                 collate_fn=lambda chunk, dev: collate(chunk, pad_id, dev),
                 eval_fn=lambda m: run_eval(m, eval_feats, data.eval, data.kind, data.labels, cfg, pad_id,
                                            next(m.parameters()).device))
    seconds = time.perf_counter() - started
    model.save_pretrained(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    save_task(out / "model", {"kind": data.kind, "labels": data.labels, "text_column": data.columns.text,
                              "pair_column": data.columns.pair, "label_column": data.columns.label,
                              "max_length": max_length, "source_model": str(source), "init": init, "method": "pet",
                              "pet_temperature": opts.pet_temperature})
    record = seed_record(kind=data.kind, source=source, init=init, method="pet", seed=seed, eval=dict(result.eval),
                         main_metric=metric, trainable=trainable, total=total, history=result.history,
                         steps=result.steps, epochs=result.epochs, lr=lr, train_examples=len(pool),
                         eval_examples=len(data.eval), labels=data.labels, seconds=seconds,
                         best_epoch=result.best_epoch, trainable_percent=round(100 * trainable / total, 4))
    return record, result.history


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
