"""`selfsup multitask MIXTURE.yaml`: multitask prompted fine-tuning for zero-shot transfer (Sanh et al. 2022,
"Multitask Prompted Training Enables Zero-Shot Task Generalization", T0).

What is predicted from what: one language model learns to fill the blank of natural-language prompts with
label words on a mixture of tasks (each example rendered with one of its task's prompts, drawn at random as
T0 does); then, with no gradient step on it, it classifies the examples of a task it never saw from that
task's own prompts — scored as `--method prompt` scores (the LM head at the blank, logsumexp over a label's
words; `selfsup.adapt.shared.prompts`). The baseline is the same checkpoint without the multitask step, on
the same prompts ("zero-shot before"). Held-out tasks are never read for training or for choosing an epoch.

    train:                                 # the mixture (T0's training tasks)
      - name: speech
        train: speech/train.jsonl          # CSV/TSV/JSONL, as `finetune --train`; paths relative to this file
        eval: speech/eval.jsonl            # optional: held-in accuracy per epoch
        max_examples: 2000                 # optional cap (T0's examples-proportional mixing with a cap)
        prompts:
          - {template: "{text} Was it spoken? {mask}.", verbalizer: {speech: yes, narration: no}}
    zero_shot:                             # held-out tasks: evaluated only
      - name: question
        eval: question/eval.jsonl
        template: "{text} Is this a question? {mask}."    # one prompt: template + verbalizer
        verbalizer: {question: yes, statement: no}

Writes `out/model` (the LM in Hugging Face format + tokenizer: it loads with plain `AutoModelForMaskedLM` /
`AutoModelForCausalLM`), `metrics.json` (per held-out task and prompt: accuracy / macro-F1 before and after,
held-in history) and `zero_shot.png`.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Sequence

import torch

from selfsup.config import bounded, from_dict
from selfsup.errors import SelfsupError

MULTITASK_LR = 1e-4  # as --method prompt


@dataclasses.dataclass
class PromptEntry:
    template: str | None = None
    verbalizer: Any = None


@dataclasses.dataclass
class MixtureTask:
    name: str = ""
    task: str = "sequence-classification"
    train: str = ""
    eval: str = ""
    text_column: str | None = None
    pair_column: str | None = None
    label_column: str | None = None
    max_examples: int | None = bounded(None, ge=1)
    template: str | None = None
    verbalizer: Any = None
    prompts: list[PromptEntry] = dataclasses.field(default_factory=list)

    def all_prompts(self) -> list[PromptEntry]:
        return self.prompts or [PromptEntry(self.template, self.verbalizer)]


@dataclasses.dataclass
class Mixture:
    train: list[MixtureTask] = dataclasses.field(default_factory=list)
    zero_shot: list[MixtureTask] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        from selfsup.adapt.shared.prompts import PROMPT_KINDS

        if not self.train or not self.zero_shot:
            raise SelfsupError("train and zero_shot: a mixture needs at least one task of each")
        names = [t.name for t in self.train + self.zero_shot]
        if not all(names) or len(set(names)) != len(names):
            raise SelfsupError(f"name: every task needs a unique name, got {names}")
        for group, tasks in (("train", self.train), ("zero_shot", self.zero_shot)):
            for t in tasks:
                if t.task not in PROMPT_KINDS:
                    raise SelfsupError(f"{group}: {t.name}: task: {' or '.join(PROMPT_KINDS)}, got {t.task!r}")
                if group == "train" and not t.train:
                    raise SelfsupError(f"train: {t.name}: train: required (the file it is trained on)")
                if group == "zero_shot" and (t.train or not t.eval):
                    raise SelfsupError(f"zero_shot: {t.name}: give eval only (a held-out task is never trained on)")
                if t.prompts and (t.template or t.verbalizer):
                    raise SelfsupError(f"{group}: {t.name}: give prompts or template/verbalizer, not both")
        held_in = {str(Path(t.train).resolve()) for t in self.train} | {
            str(Path(t.eval).resolve()) for t in self.train if t.eval}
        for t in self.zero_shot:
            if str(Path(t.eval).resolve()) in held_in:
                raise SelfsupError(f"zero_shot: {t.name}: {t.eval} is also a training task's file")


def load_mixture(path: str | Path) -> Mixture:
    """Parse and check a mixture file; paths become relative to it. Errors name the file and the key."""
    import yaml

    from selfsup.config import yaml_load

    p = Path(path)
    if not p.is_file():
        raise SelfsupError(f"{path}: no such mixture file")
    try:
        data = yaml_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        raise SelfsupError(f"{p}:{mark.line + 1 if mark else 1}: invalid YAML") from None
    try:
        mix = from_dict(Mixture, data)
        base = p.resolve().parent
        for t in mix.train + mix.zero_shot:
            t.train = _resolve(base, t.train) if t.train else ""
            t.eval = _resolve(base, t.eval) if t.eval else ""
        mix.validate()
    except SelfsupError as e:
        raise SelfsupError(f"{p}: {e}") from None
    return mix


def _resolve(base: Path, value: str) -> str:
    return value if value.startswith("hf:") or Path(value).is_absolute() else str(base / value)


def assign_prompts(n_examples: int, n_prompts: int, seed: int) -> list[int]:
    """T0's sampling: each training example is rendered with one of its task's prompts, uniformly at random."""
    rng = random.Random(seed)
    return [rng.randrange(n_prompts) for _ in range(n_examples)]


class MultitaskPrompts(torch.nn.Module):
    """One LM, one PromptClassifier (template + verbalizer) per (task, prompt); a batch mixes them. The loss is
    the mean over the batch's examples of each one's cross-entropy under its own prompt's label words."""

    def __init__(self, lm, heads: Sequence):
        super().__init__()
        self.lm = lm
        self.heads = list(heads)  # a plain list: each head wraps self.lm, registering them would copy it

    def forward(self, input_ids, attention_mask, labels, task, token_type_ids=None):
        total = input_ids.new_zeros((), dtype=torch.float32)
        for t in task.unique().tolist():
            rows = task == t
            head = self.heads[t].to(input_ids.device)
            extra = {"token_type_ids": token_type_ids[rows]} if token_type_ids is not None else {}
            out = head(input_ids=input_ids[rows], attention_mask=attention_mask[rows], labels=labels[rows], **extra)
            total = total + out.loss * rows.sum() / len(task)
        return total


def multitask(mixture: str | Path, model: str | Path, out: str | Path, *, seed: int = 0,
              overrides: Sequence[str] = (), progress: bool = False) -> dict[str, Any]:
    """Zero-shot accuracy of every held-out task before and after multitask prompted fine-tuning of `model`
    on the mixture's training tasks; returns what `out/metrics.json` gets."""
    from selfsup.adapt.core.evaluation import run_eval
    from selfsup.adapt.core.features import collate, model_positions
    from selfsup.adapt.core.fit import fit
    from selfsup.adapt.core.kinds import columns_for
    from selfsup.adapt.core.models import load_tokenizer, model_type, resolve_checkpoint
    from selfsup.adapt.core.options import parse_overrides
    from selfsup.adapt.core.runs import check_out, device_of, resolve_threads
    from selfsup.adapt.core.tasks import check_labels, label_set, read_task, subsample
    from selfsup.adapt.shared.prompt_inputs import PromptTokenizer
    from selfsup.adapt.shared.prompts import PromptClassifier, build_spec, lm_kind_of, load_lm, reserved_positions
    from selfsup.fileio import atomic_dir, atomic_write_json

    out = Path(out)
    check_out(out)
    mix = load_mixture(mixture)
    cfg = parse_overrides(overrides, {"keep_best": False})
    source = resolve_checkpoint(model)
    lm_kind = lm_kind_of(model_type(source), None, "multitask")
    tok = load_tokenizer(source)
    resolve_threads(cfg)
    device = device_of(cfg)
    lm = load_lm(source, lm_kind, tok, seed=seed, dropout=cfg.dropout)

    def prepare(t: MixtureTask, group: str) -> dict[str, Any]:
        cols = columns_for(t.task, t.text_column, t.pair_column, t.label_column)
        train = read_task(t.train, t.task, cols) if t.train else []
        evals = read_task(t.eval, t.task, cols) if t.eval else []
        labels = label_set(train or evals, t.train or t.eval)
        if train and evals:
            check_labels(evals, labels)
        specs = []
        for i, p in enumerate(t.all_prompts()):
            try:
                specs.append(build_spec(tok, lm_kind, t.task, labels, p.template, p.verbalizer))
            except SelfsupError as e:
                raise SelfsupError(f"{mixture}: {group}: {t.name}: prompt {i + 1}: {e}") from None
        limit = model_positions(lm.config, tok) - max(reserved_positions(s) for s in specs)
        return {"task": t, "train": train, "eval": evals, "labels": labels, "specs": specs,
                "max_length": min(cfg.max_length, limit)}

    held_in = [prepare(t, "train") for t in mix.train]
    held_out = [prepare(t, "zero_shot") for t in mix.zero_shot]
    pad_id = tok.pad_token_id

    def head(spec):
        return PromptClassifier(lm, spec, tok.mask_token_id, pad_id)

    encoded: dict[int, list] = {}  # id(spec) -> its evaluation features (held-in ones are scored every epoch)

    def score(spec, entry: dict[str, Any]) -> dict[str, float]:
        if id(spec) not in encoded:
            encoded[id(spec)] = PromptTokenizer(tok, spec).encode_prompts(entry["eval"], entry["labels"],
                                                                         entry["max_length"])
        feats = encoded[id(spec)]
        return run_eval(head(spec).to(device), feats, entry["eval"], entry["task"].task, entry["labels"], cfg,
                        pad_id, device)

    def zero_shot() -> list[list[dict[str, float]]]:
        return [[score(s, e) for s in e["specs"]] for e in held_out]

    before = zero_shot()
    heads, feats = [], []
    for k, entry in enumerate(held_in):
        examples = entry["train"]
        if entry["task"].max_examples and len(examples) > entry["task"].max_examples:
            examples = subsample(examples, fraction=entry["task"].max_examples / len(examples), seed=seed + k)
        which = assign_prompts(len(examples), len(entry["specs"]), seed + k)
        for j, spec in enumerate(entry["specs"]):
            mine = [ex for ex, w in zip(examples, which) if w == j]
            for f in PromptTokenizer(tok, spec).encode_prompts(mine, entry["labels"], entry["max_length"]):
                feats.append({**f, "task": len(heads)})
            heads.append(head(spec))
    net = MultitaskPrompts(lm, heads)

    def collate_fn(chunk, dev):
        batch = collate(chunk, pad_id, dev)
        batch["task"] = torch.tensor([f["task"] for f in chunk], device=dev)
        return batch

    def held_in_eval(_m) -> dict[str, float]:
        scores = {e["task"].name: score(e["specs"][0], e)["accuracy"] for e in held_in if e["eval"]}
        return {**{f"{k}_accuracy": v for k, v in scores.items()},
                **({"held_in_accuracy": sum(scores.values()) / len(scores)} if scores else {})}

    result = fit(net, feats, cfg, lr=cfg.lr or MULTITASK_LR, seed=seed, progress=progress,
                 main_metric="held_in_accuracy" if any(e["eval"] for e in held_in) else None,
                 loss_fn=lambda m, batch: m(**batch), collate_fn=collate_fn, eval_fn=held_in_eval)
    lm.to(device).eval()
    after = zero_shot()
    lm.cpu()
    tasks = []
    for entry, b, a in zip(held_out, before, after):
        prompts = [{"template": s.template.source, "verbalizer": s.words, "before": rb, "after": ra}
                   for s, rb, ra in zip(entry["specs"], b, a)]
        mean = {when: {m: sum(p[when][m] for p in prompts) / len(prompts) for m in ("accuracy", "macro_f1")}
                for when in ("before", "after")}
        tasks.append({"name": entry["task"].name, "eval": entry["task"].eval, "examples": len(entry["eval"]),
                      "labels": entry["labels"], "majority": _majority(entry["eval"]), "prompts": prompts, **mean})
    record = {"model": str(source), "lm_kind": lm_kind, "seed": seed, "mixture": str(mixture),
              "train_tasks": [{"name": e["task"].name, "examples": len(e["train"]), "prompts": len(e["specs"])}
                              for e in held_in],
              "train_examples": len(feats), "steps": result.steps, "history": result.history,
              "held_in": dict(result.eval), "zero_shot": tasks,
              "summary": "; ".join(f"{t['name']}: zero-shot accuracy {t['before']['accuracy']:.3f} -> "
                                   f"{t['after']['accuracy']:.3f}" for t in tasks)}
    if out.is_dir():
        out.rmdir()  # empty (checked above): the finished run is renamed into its place
    with atomic_dir(out) as tmp:
        lm.save_pretrained(str(tmp / "model"))
        tok.save_pretrained(str(tmp / "model"))
        atomic_write_json(tmp / "metrics.json", record)
        _plot(tasks, tmp / "zero_shot.png")
    return record


def _majority(examples: Sequence) -> float:
    from selfsup.adapt.core.tasks import class_counts

    return max(class_counts(examples).values()) / len(examples)


def _plot(tasks: list[dict[str, Any]], path: Path) -> None:
    from selfsup.report.figures import plot_grouped_bars

    plot_grouped_bars({t["name"]: {"before": t["before"]["accuracy"], "after multitask": t["after"]["accuracy"]}
               for t in tasks}, path, ylabel="zero-shot accuracy", title="held-out tasks",
              reference={t["name"]: t["majority"] for t in tasks})
