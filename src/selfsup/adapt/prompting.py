"""Prompt-based fine-tuning (`selfsup finetune --method prompt`): classification as filling a blank with a
label word, scored by the checkpoint's own language-model head. No new head, no new parameter.

Papers: PET (Schick & Schütze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
Language Inference") for templates, verbalizers and multi-token label words; LM-BFF (Gao, Fisch & Chen 2021,
"Making Pre-trained Language Models Better Few-shot Learners") for demonstrations chosen by similarity.

What is predicted from what: the class of a text (or text pair) from the language model's probability of each
label's verbalizer word(s) in the blank `{mask}` of a template such as `{text} It was {mask}.`:
- masked LM (BERT, RoBERTa, ALBERT): at the mask tokens put where `{mask}` is;
- causal LM (GPT-2, Llama): as the continuation of the prompt (`{mask}` must end the template).

Scores (pure functions below, tested on hand-made logits):
- a word's score, masked LM: the mean log-probability of its pieces, piece i read at mask i. The template gets
  M masks, M = the most pieces of any label word; a word of k < M pieces is scored on the first k masks (one
  forward pass for all words; PET's approximation — exact whenever every word has the same length).
- a word's score, causal LM: sum_i log p(piece_i | prompt, pieces_<i), teacher forced. Single-piece words need
  only the prompt; otherwise one row per (example, word) with the word appended, in one batched pass.
- a class's score: logsumexp over its words (the log of the total probability of any of its words; with one
  word per label, just that word's score). Loss: cross-entropy of the class scores.

Tokenization: each filled-in prompt is tokenized as one string (as the model reads text), and its tokens are
split back into the template's parts by character offsets, so truncation cuts the text (demonstrations first),
never the template or the blank; the blank of a masked LM becomes M mask tokens. Label words are tokenized as
they read inside a text, after the whitespace the template puts before `{mask}` (" word" for a byte-level BPE).

LM-BFF demonstrations (`--set demonstrations=true`): after the query prompt, one training example per class
(label order), each rendered with the template and its label's first word; for each class the most
cosine-similar training example (mean-pooled last hidden states of the checkpoint as loaded, computed once
without gradient; a training example never gets itself). Masked LM: `[CLS] query [SEP] demo_1 [SEP] ... [SEP]`;
causal LM: the demonstrations come first, one per line, since the label word must end the sequence. The
pool's embeddings are saved with the model; new inputs are embedded with the source checkpoint (task.json
`source_model`), which must therefore still exist for `selfsup evaluate` / `predict`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import string
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from selfsup.errors import SelfsupError

MLM_FAMILIES = ("bert", "roberta", "albert", "roformer")  # checkpoints that carry a masked-LM head
CAUSAL_FAMILIES = ("gpt2", "llama")
PROMPT_KINDS = ("sequence-classification", "pair-classification")
FIELDS = ("text", "pair", "mask")
DEFAULT_TEMPLATES = {
    ("mlm", "sequence-classification"): "{text} It was {mask}.",
    ("mlm", "pair-classification"): "{text} ? {mask} , {pair}",
    ("causal", "sequence-classification"): "{text} It was {mask}",
    ("causal", "pair-classification"): "{text} Question: {pair} Answer: {mask}",
}
DEFAULT_LR = 1e-4  # as --method full; LM-BFF used 1e-5 on RoBERTa-large
POOL_TEXTS = "demonstrations.jsonl"  # saved next to the model: the pool of demonstrations
POOL_EMBEDDINGS = "demonstrations.npy"


def lm_kind_of(model_type: str, task: str | None = None, method: str = "--method prompt") -> str:
    """'mlm' or 'causal' for a supported family (and task kind), else a one-line SelfsupError."""
    if task is not None and task not in PROMPT_KINDS:
        raise SelfsupError(f"{method}: supports {', '.join(PROMPT_KINDS)} only, not {task}")
    if model_type in MLM_FAMILIES:
        return "mlm"
    if model_type in CAUSAL_FAMILIES:
        return "causal"
    raise SelfsupError(f"{method}: model type {model_type!r} is not supported (masked LMs: "
                       f"{', '.join(MLM_FAMILIES)}; causal LMs: {', '.join(CAUSAL_FAMILIES)})")


# -------------------------------------------------------------------------------------------- template

@dataclasses.dataclass(frozen=True)
class Template:
    """A parsed template: `segments` are ("literal", text) or (field, whitespace before it)."""
    source: str
    segments: tuple[tuple[str, str], ...]


def parse_template(template: Any, kind: str, lm_kind: str) -> Template:
    """Validate a template: exactly one `{text}` and one `{mask}`, `{pair}` exactly for pair-classification,
    no other placeholder (`{{` / `}}` are literal braces); for a causal LM `{mask}` must come last."""
    if not isinstance(template, str) or not template.strip():
        raise SelfsupError(f"template: expected a text with {{text}} and {{mask}}, got {template!r}")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise SelfsupError(f"template: {e} in {template!r}") from None
    segments: list[tuple[str, str]] = []
    counts = {f: 0 for f in FIELDS}
    for literal, field, spec, conversion in parts:
        if literal:  # `{{` / `}}` split a literal in two: join them again
            if segments and segments[-1][0] == "literal":
                segments[-1] = ("literal", segments[-1][1] + literal)
            else:
                segments.append(("literal", literal))
        if field is None:
            continue
        if field not in FIELDS or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise SelfsupError(f"template: unknown placeholder {shown} in {template!r} "
                               "(known: {text}, {pair}, {mask})")
        counts[field] += 1
        space = ""
        if segments and segments[-1][0] == "literal":  # the whitespace before a field goes with its filler
            text = segments[-1][1]
            kept = text.rstrip()
            space = text[len(kept):]
            segments[-1:] = [("literal", kept)] if kept else []
        segments.append((field, space))
    for field in ("text", "mask"):
        if counts[field] != 1:
            raise SelfsupError(f"template: needs exactly one {{{field}}}, found {counts[field]} in {template!r}")
    want_pair = 1 if kind == "pair-classification" else 0
    if counts["pair"] != want_pair:
        raise SelfsupError(f"template: {kind} needs {'exactly one' if want_pair else 'no'} {{pair}}, found "
                           f"{counts['pair']} in {template!r}")
    if segments[-1][0] == "literal" and not segments[-1][1].strip():
        segments.pop()
    if lm_kind == "causal" and segments[-1][0] != "mask":
        raise SelfsupError(f"template: for a causal LM {{mask}} must end the template (the label word is the "
                           f"continuation), got {template!r}")
    return Template(template, tuple(segments))


# ------------------------------------------------------------------------------------------ verbalizer

def _label_key(key: Any) -> str:
    if isinstance(key, bool):
        return str(key).lower()
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key).strip()


def parse_verbalizer(value: Any, labels: Sequence[str]) -> dict[str, list[str]]:
    """label -> its words, from a mapping (a word or a list of words per label), a .json/.yaml file, or inline
    YAML text; None: each label's own name. Every label must have a word; extra labels are ignored."""
    import yaml

    if value is None:
        return {lab: [lab] for lab in labels}
    if isinstance(value, str):
        text = value.strip()
        if Path(text).suffix.lower() in (".json", ".yaml", ".yml") and "\n" not in text:
            path = Path(text)
            if not path.is_file():
                raise SelfsupError(f"verbalizer: {text}: no such file")
            try:
                value = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as e:
                raise SelfsupError(f"verbalizer: {text}: not JSON/YAML ({str(e).splitlines()[0]})") from None
        else:
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise SelfsupError(f"verbalizer: not a YAML mapping ({str(e).splitlines()[0]}): {text!r}"[:300]) \
                    from None
    if not isinstance(value, dict) or not value:
        raise SelfsupError(f"verbalizer: expected a mapping label -> word or [words] (inline YAML or a "
                           f".json/.yaml file), got {value!r}"[:300])
    words: dict[str, list[str]] = {}
    for key, raw in value.items():
        items = [raw] if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else raw
        if not isinstance(items, list) or not items or not all(
                isinstance(w, (str, int, float)) and not isinstance(w, bool) and str(w).strip() for w in items):
            raise SelfsupError(f"verbalizer: label {_label_key(key)!r}: expected a word or a list of words, "
                               f"got {raw!r}"[:300])
        words[_label_key(key)] = list(dict.fromkeys(" ".join(str(w).split()) for w in items))
    missing = [lab for lab in labels if lab not in words]
    if missing:
        raise SelfsupError(f"verbalizer: label {missing[0]!r} has no word (the verbalizer maps "
                           f"{', '.join(map(repr, words))})"[:300])
    return {lab: words[lab] for lab in labels}


# ------------------------------------------------------------------------------------------- the spec

@dataclasses.dataclass
class PromptSpec:
    """A validated template + verbalizer for one tokenizer: label words as token ids, in label order."""
    lm_kind: str
    kind: str
    labels: list[str]
    template: Template
    words: dict[str, list[str]]
    pieces: list[list[int]]  # one list of token ids per word, labels in order, words in order
    word_class: list[int]
    demonstrations: bool = False

    @property
    def max_pieces(self) -> int:
        return max(len(p) for p in self.pieces)

    def info(self) -> dict[str, Any]:
        return {"template": self.template.source, "verbalizer": self.words, "lm_kind": self.lm_kind,
                "demonstrations": self.demonstrations}


def in_context_ids(tokenizer, space: str, text: str) -> list[int]:
    """The ids of `text` as the tokenizer reads it after other text and `space` (not as the start of a text,
    which some tokenizers prefix with a space): the tokens of "a" + space + text after those of "a"."""
    probe = tokenizer("a", add_special_tokens=False)["input_ids"]
    both = tokenizer("a" + space + text, add_special_tokens=False)["input_ids"]
    if both[:len(probe)] == probe and len(both) > len(probe):
        return both[len(probe):]
    return tokenizer(space + text, add_special_tokens=False)["input_ids"]  # merged with the probe: as a start


def build_spec(tokenizer, lm_kind: str, kind: str, labels: Sequence[str], template: Any = None,
               verbalizer: Any = None, demonstrations: bool = False) -> PromptSpec:
    """Parse and check template and verbalizer against the tokenizer: a word that becomes [UNK], a word given
    to two labels, a template that spells out the mask token -> SelfsupError naming the key."""
    tpl = parse_template(template if template is not None else DEFAULT_TEMPLATES[(lm_kind, kind)], kind, lm_kind)
    if lm_kind == "mlm" and tokenizer.mask_token_id is None:
        raise SelfsupError("template: the tokenizer has no mask token (a masked LM's tokenizer is needed)")
    words = parse_verbalizer(verbalizer, labels)
    space = dict(tpl.segments)["mask"]
    pieces, word_class, owner = [], [], {}
    for c, lab in enumerate(labels):
        for w in words[lab]:
            ids = in_context_ids(tokenizer, space, w)
            if not ids:
                raise SelfsupError(f"verbalizer: label {lab!r}: word {w!r} has no tokens")
            if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
                raise SelfsupError(f"verbalizer: label {lab!r}: word {w!r} becomes {tokenizer.unk_token} for "
                                   "this tokenizer; choose a word in its vocabulary")
            if tuple(ids) in owner and owner[tuple(ids)] != lab:
                raise SelfsupError(f"verbalizer: word {w!r} is given to both {owner[tuple(ids)]!r} and {lab!r}")
            owner[tuple(ids)] = lab
            pieces.append(list(ids))
            word_class.append(c)
    for lit in (v for k, v in tpl.segments if k == "literal"):
        if lm_kind == "mlm" and tokenizer.mask_token_id in tokenizer(lit, add_special_tokens=False)["input_ids"]:
            raise SelfsupError(f"template: spells out the mask token in {lit!r}; write {{mask}} for the blank")
    return PromptSpec(lm_kind, kind, list(labels), tpl, words, pieces, word_class, demonstrations)


# ---------------------------------------------------------------------------- scores (pure functions)
# Written here: the stack (transformers, peft) has no verbalizer scoring; these are PET's / LM-BFF's formulas.

def mask_positions(input_ids: torch.Tensor, mask_token_id: int, count: int) -> torch.Tensor:
    """[B, count] positions of the mask tokens of each row (each row must have exactly `count`)."""
    hits = input_ids == mask_token_id
    per_row = hits.sum(1)
    if not bool((per_row == count).all()):
        raise SelfsupError(f"prompt: expected {count} mask token(s) per input, found {per_row.tolist()}")
    return hits.nonzero()[:, 1].view(input_ids.shape[0], count)


def continuation_positions(lengths: torch.Tensor, count: int) -> torch.Tensor:
    """[B, count]: the positions whose next-token logits predict pieces 0..count-1 of a word appended after
    a prompt of `lengths` tokens (right padding): length - 1 + i."""
    return (lengths - 1)[:, None] + torch.arange(count, device=lengths.device)[None, :]


def append_continuations(input_ids: torch.Tensor, attention_mask: torch.Tensor, pieces: torch.Tensor,
                         counts: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, W, T+M] ids, mask): each right-padded prompt followed by each word's pieces (teacher forcing)."""
    b, t = input_ids.shape
    w, m = pieces.shape
    lengths = attention_mask.sum(1)
    ids = input_ids.new_full((b, w, t + m), pad_id)
    ids[:, :, :t] = input_ids[:, None, :]
    where = (lengths[:, None, None] + torch.arange(m, device=ids.device)[None, None, :]).expand(b, w, m)
    ids.scatter_(2, where, pieces[None].expand(b, w, m))
    ends = lengths[:, None] + counts[None, :]  # [B, W]
    mask = torch.arange(t + m, device=ids.device)[None, None, :] < ends[:, :, None]
    return ids, mask.to(attention_mask.dtype)


def read_positions(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """states [B, W', T, X] (W' = 1: shared by every word), positions [B, M] -> [B, W', M, X]."""
    b, w, _, x = states.shape
    index = positions[:, None, :, None].expand(b, w, positions.shape[1], x)
    return states.gather(2, index)


def word_scores(position_logits: torch.Tensor, pieces: torch.Tensor, counts: torch.Tensor,
                reduce: str) -> torch.Tensor:
    """position_logits [B, W', M, V] (the LM's logits at the M blank positions; W' = 1 or W), pieces [W, M]
    (padded), counts [W] -> [B, W]: the log-probabilities of each word's pieces, piece i at position i,
    averaged ("mean": masked LM) or summed ("sum": causal LM) over the word's own pieces."""
    logp = position_logits.float().log_softmax(-1)
    b, _, m, v = logp.shape
    w = pieces.shape[0]
    logp = logp.expand(b, w, m, v)
    got = logp.gather(3, pieces[None, :, :, None].expand(b, w, m, 1)).squeeze(3)  # [B, W, M]
    valid = torch.arange(m, device=got.device)[None, :] < counts[:, None]
    total = got.masked_fill(~valid[None], 0.0).sum(-1)
    return total / counts[None].to(total.dtype) if reduce == "mean" else total


def class_scores(scores: torch.Tensor, word_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[B, W] word scores -> [B, C]: logsumexp over the words of each class."""
    member = word_class[None, :] == torch.arange(num_classes, device=scores.device)[:, None]  # [C, W]
    return scores[:, None, :].masked_fill(~member[None], -math.inf).logsumexp(-1)


# ---------------------------------------------------------------------------------------------- model

def _lm_parts(lm) -> tuple[Any, Any]:
    """(backbone returning hidden states, LM head) of a masked / causal LM: the head is its one other child."""
    base = lm.base_model
    heads = [m for _, m in lm.named_children() if m is not base]
    if len(heads) != 1:
        raise SelfsupError(f"{type(lm).__name__}: cannot find its language-model head")
    return base, heads[0]


class PromptClassifier(torch.nn.Module):
    """A masked or causal LM used as a classifier through its own LM head (PET / LM-BFF): class scores at the
    blank, `SequenceClassifierOutput(loss=cross_entropy(scores, labels), logits=scores)`. Its parameters are
    exactly the LM's; the verbalizer lives in non-persistent buffers."""

    def __init__(self, lm, spec: PromptSpec, mask_token_id: int | None, pad_token_id: int):
        super().__init__()
        self.lm = lm
        self.lm_kind = spec.lm_kind
        self.num_labels = len(spec.labels)
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        width = spec.max_pieces
        padded = [p + [pad_token_id] * (width - len(p)) for p in spec.pieces]
        self.register_buffer("pieces", torch.tensor(padded, dtype=torch.long), persistent=False)
        self.register_buffer("piece_counts", torch.tensor([len(p) for p in spec.pieces]), persistent=False)
        self.register_buffer("word_class", torch.tensor(spec.word_class, dtype=torch.long), persistent=False)

    @property
    def config(self):
        return self.lm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **_unused):
        from transformers.modeling_outputs import SequenceClassifierOutput

        base, head = _lm_parts(self.lm)
        m = self.pieces.shape[1]
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        if self.lm_kind == "mlm":
            positions = mask_positions(input_ids, self.mask_token_id, m)
            states = base(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state[:, None]
        else:
            positions = continuation_positions(attention_mask.sum(1), m)
            if m == 1:  # single-piece words: the prompt alone, its last position predicts every word
                ids, mask = input_ids[:, None], attention_mask[:, None]
            else:
                ids, mask = append_continuations(input_ids, attention_mask, self.pieces, self.piece_counts,
                                                 self.pad_token_id)
            b, w, t = ids.shape
            states = base(input_ids=ids.reshape(b * w, t), attention_mask=mask.reshape(b * w, t)
                          ).last_hidden_state.view(b, w, t, -1)
        logits = head(read_positions(states, positions))  # the LM head at the blank positions only
        scores = class_scores(word_scores(logits, self.pieces, self.piece_counts,
                                          "mean" if self.lm_kind == "mlm" else "sum"),
                              self.word_class, self.num_labels)
        loss = torch.nn.functional.cross_entropy(scores, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=scores)


def load_lm(path: Path, lm_kind: str, tokenizer, *, init: str = "pretrained", seed: int = 0,
            dropout: float | None = None):
    """The checkpoint's masked / causal LM (with its LM head), in train mode; `init="scratch"`: the same
    architecture with fresh seeded weights."""
    import transformers as tf

    from selfsup.adapt.heads import quiet_transformers

    quiet_transformers()
    auto = tf.AutoModelForMaskedLM if lm_kind == "mlm" else tf.AutoModelForCausalLM
    try:
        config = tf.AutoConfig.from_pretrained(str(path))
        if dropout is not None:
            for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop",
                         "attn_pdrop", "attention_dropout"):
                if hasattr(config, name):
                    setattr(config, name, dropout)
        torch.manual_seed(seed)
        lm = auto.from_config(config) if init == "scratch" else auto.from_pretrained(str(path), config=config)
    except Exception as e:
        raise SelfsupError(f"{path}: cannot load it as a {'masked' if lm_kind == 'mlm' else 'causal'} LM "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if len(tokenizer) > lm.get_input_embeddings().weight.shape[0]:
        lm.resize_token_embeddings(len(tokenizer))
    return lm.train()


def reserved_positions(spec: PromptSpec) -> int:
    """Positions a prompt must leave free: a causal LM appends the label word's pieces after it."""
    return spec.max_pieces if spec.lm_kind == "causal" and spec.max_pieces > 1 else 0


# ------------------------------------------------------------------------------ demonstrations (LM-BFF)

def sentence_embeddings(lm, tokenizer, examples: Sequence, max_length: int, batch_size: int = 32,
                        device=None) -> torch.Tensor:
    """[N, H] float32 on CPU: mean over non-special tokens of the LM backbone's last hidden states (no grad)."""
    from selfsup.adapt.finetune import collate

    base, _ = _lm_parts(lm)
    device = device or next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            pairs = [e.pair for e in chunk] if chunk[0].pair is not None else None
            enc = tokenizer([e.text for e in chunk], pairs, truncation=True, max_length=max_length,
                            return_special_tokens_mask=True)
            feats = [{"input_ids": enc["input_ids"][j], "attention_mask": enc["attention_mask"][j]}
                     for j in range(len(chunk))]  # right padding by hand: the same states in any batch
            batch = collate(feats, tokenizer.pad_token_id, device)
            states = base(**batch).last_hidden_state.float()
            keep = batch["attention_mask"].bool().clone()
            for j, special in enumerate(enc["special_tokens_mask"]):
                keep[j, :len(special)] &= ~torch.tensor(special, dtype=torch.bool, device=keep.device)
            weight = keep.unsqueeze(-1).float()
            out.append(((states * weight).sum(1) / weight.sum(1).clamp(min=1)).cpu())
    lm.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


# Written here: LM-BFF's selection (nearest example per class) is not in the stack; cosine via torch.
def choose_demonstrations(query: torch.Tensor, pool: torch.Tensor, pool_classes: Sequence[int], num_classes: int,
                          exclude: Sequence[int | None] | None = None, chunk: int = 1024) -> list[list[int]]:
    """For each query [Q, D] and each class, the index of the most cosine-similar pool example [P, D] of that
    class, or -1 if the class has none; query q never gets pool example `exclude[q]` (itself, in training)."""
    q_all = torch.nn.functional.normalize(query.float(), dim=-1)
    p = torch.nn.functional.normalize(pool.float(), dim=-1)
    classes = torch.as_tensor(list(pool_classes), dtype=torch.long)
    chosen: list[list[int]] = []
    for start in range(0, q_all.shape[0], chunk):
        sim = q_all[start:start + chunk] @ p.T  # [q, P]
        if exclude is not None:
            for r in range(sim.shape[0]):
                e = exclude[start + r]
                if e is not None and e >= 0:
                    sim[r, e] = -math.inf
        best = []
        for c in range(num_classes):
            s = sim.masked_fill(classes[None, :] != c, -math.inf)
            value, index = s.max(1)
            best.append(torch.where(torch.isfinite(value), index, torch.full_like(index, -1)))
        chosen.extend(torch.stack(best, 1).tolist())
    return chosen


@dataclasses.dataclass
class DemonstrationPool:
    """The training examples demonstrations are drawn from, their class ids and sentence embeddings, and how
    to embed new queries (the checkpoint as loaded before training)."""
    examples: list
    classes: list[int]
    embeddings: torch.Tensor
    embed: Callable[[Sequence], torch.Tensor]


# -------------------------------------------------------------------------------------------- encoding

def fit_segments(segments: list[tuple[str, list[int]]], limit: int) -> list[tuple[str, list[int]]] | None:
    """Cut the `text` / `pair` segments from their end, longest first, until the total fits `limit`; None if
    the other (fixed) segments alone do not fit."""
    cut = [(role, list(ids)) for role, ids in segments]
    excess = sum(len(ids) for _, ids in cut) - limit
    cuttable = [i for i, (role, _) in enumerate(cut) if role in ("text", "pair")]
    while excess > 0:
        sizes = sorted((len(cut[i][1]) for i in cuttable), reverse=True)
        if not sizes or sizes[0] == 0:
            return None
        longest = max(reversed(cuttable), key=lambda i: len(cut[i][1]))  # ties: the later one (as HF)
        drop = min(excess, max(1, sizes[0] - (sizes[1] if len(sizes) > 1 else 0)))
        del cut[longest][1][-drop:]
        excess -= drop
    return cut


def share_budget(lengths: Sequence[int], budget: int) -> list[int]:
    """Tokens granted to each demonstration: all it needs if everything fits, else an equal share, short ones
    keeping their length and the rest split among the long ones."""
    grant = [0] * len(lengths)
    left = max(0, budget)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for k, i in enumerate(order):
        grant[i] = min(lengths[i], left // (len(order) - k))
        left -= grant[i]
    return grant


class PromptTokenizer:
    """The checkpoint's tokenizer plus a prompt spec: `encode_prompts` turns examples into prompt features
    (the hook `selfsup.adapt.finetune.encode` calls); everything else is the wrapped tokenizer's."""

    def __init__(self, tokenizer, spec: PromptSpec, pool: DemonstrationPool | None = None):
        self.tokenizer = tokenizer
        self.spec = spec
        self.pool = pool
        inner = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a")["input_ids"]
        self.prefix, self.suffix = [], []
        for i in range(len(full) - len(inner) + 1):  # the special tokens around one text, e.g. [CLS] .. [SEP]
            if full[i:i + len(inner)] == inner:
                self.prefix, self.suffix = full[:i], full[i + len(inner):]
                break
        if spec.lm_kind == "causal":
            self.suffix = []  # the label word continues the prompt: no end-of-sequence after it
            self.separator = in_context_ids(tokenizer, "", "\n")
        else:
            sep = tokenizer.sep_token_id
            self.separator = [sep] if sep is not None else in_context_ids(tokenizer, "", "\n")

    def __getattr__(self, name: str):
        inner = self.__dict__.get("tokenizer")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __len__(self) -> int:
        return len(self.tokenizer)

    # ------------------------------------------------------------------ rendering
    def _strings(self, example: Any, fill: str | None) -> list[tuple[str, str]]:
        """The template filled with an example, as (role, text) parts: the blank gets `fill` (a demonstration's
        label word), the mask token (masked LM) or nothing (causal LM: the word is the continuation)."""
        mlm = self.spec.lm_kind == "mlm"
        parts: list[tuple[str, str]] = []
        for kind, value in self.spec.template.segments:
            if kind == "literal":
                parts.append(("fixed", value))
            elif kind == "mask":
                if fill is not None:
                    parts.append(("fixed", value + fill))
                elif mlm:
                    parts.append(("mask", value + self.tokenizer.mask_token))
            else:
                text = getattr(example, kind) or ""
                if mlm:  # a mask token spelled out in the data is not a blank
                    text = text.replace(self.tokenizer.mask_token, " ")
                parts.append((kind, value + text if text else ""))
        return parts

    def _prompt_parts(self, example: Any, demos: Sequence[tuple[Any, int]]) -> list[tuple[int, str, str]]:
        """The whole input as (block, role, text) parts in reading order: block 0 is the query, block j the
        j-th demonstration (filled with its label's first word), block -1 the separators between them. Masked
        LM: the query first (LM-BFF); causal LM: the demonstrations first (the label word ends the input)."""
        blocks = [[(0, role, text) for role, text in self._strings(example, None)]]
        for j, (ex, c) in enumerate(demos, 1):
            word = self.spec.words[self.spec.labels[c]][0]
            blocks.append([(j, role, text) for role, text in self._strings(ex, word)])
        if self.spec.lm_kind == "causal":
            blocks = blocks[1:] + blocks[:1]
        sep = (-1, "separator", self.tokenizer.sep_token if self.spec.lm_kind == "mlm" else "\n")
        parts = blocks[0]
        for block in blocks[1:]:
            parts = parts + [sep] + block
        return parts

    def _tokenize(self, prompts: Sequence[list[tuple[int, str, str]]]
                  ) -> list[tuple[list[tuple[str, list[int]]], list[list[tuple[str, list[int]]]]]]:
        """Each whole input tokenized as one string (as the model reads text), its tokens split back into the
        parts by character offsets -> (query segments, [demonstration segments]); the blank of a masked LM
        becomes exactly `max_pieces` mask tokens; separators are left to `_assemble`."""
        import bisect

        if not prompts:
            return []
        enc = self.tokenizer(["".join(t for _, _, t in parts) for parts in prompts], add_special_tokens=False,
                             return_offsets_mapping=True)
        mask_id = self.tokenizer.mask_token_id
        out = []
        for parts, ids, offsets in zip(prompts, enc["input_ids"], enc["offset_mapping"]):
            ends, pos = [], 0
            for _, _, text in parts:
                pos += len(text)
                ends.append(pos)
            got: list[list[int]] = [[] for _ in parts]
            for token, (a, _) in zip(ids, offsets):
                got[min(bisect.bisect_right(ends, a), len(parts) - 1)].append(token)
            blocks: dict[int, list[tuple[str, list[int]]]] = {}
            for (block, role, _), seg in zip(parts, got):
                if role == "separator":
                    continue
                if role == "mask":
                    role, seg = "fixed", [mask_id] * self.spec.max_pieces
                elif role in ("text", "pair") and mask_id is not None:
                    seg = [t for t in seg if t != mask_id]
                blocks.setdefault(block, []).append((role, seg))
            out.append((blocks[0], [blocks[j] for j in sorted(blocks) if j > 0]))
        return out

    def _assemble(self, query: list[tuple[str, list[int]]], demos: list[list[tuple[str, list[int]]]],
                  max_length: int) -> list[int]:
        budget = max_length - len(self.prefix) - len(self.suffix)
        fitted = fit_segments(query, budget)
        if fitted is None:
            fixed = sum(len(ids) for role, ids in query if role == "fixed")
            raise SelfsupError(f"max_length: {max_length} tokens cannot hold the template ({fixed} tokens "
                               f"besides the text); raise it with --set max_length=")
        q = [t for _, ids in fitted for t in ids]
        sep = self.separator
        grants = share_budget([sum(len(ids) for _, ids in d) + len(sep) for d in demos], budget - len(q))
        rendered = []
        for d, grant in zip(demos, grants):
            cut = fit_segments(d, grant - len(sep)) if grant > len(sep) else None
            if cut is not None:  # a demonstration whose template part does not fit is left out
                rendered.append([t for _, ids in cut for t in ids])
        if self.spec.lm_kind == "mlm":
            body = q + [t for d in rendered for t in sep + d]
            return self.prefix + body + self.suffix
        ids = self.prefix + [t for d in rendered for t in d + sep] + q
        if not ids:  # e.g. the content-free input "" of calibration, zero-shot: condition on the start token
            start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None \
                else self.tokenizer.eos_token_id  # GPT-2's <|endoftext|> is both
            if start is None:
                raise SelfsupError("template: the prompt is empty and the tokenizer has no start token (a causal "
                                   "LM needs at least one token before the label word)")
            ids = [start]
        return ids

    # ------------------------------------------------------------------ features
    def encode_prompts(self, examples: Sequence, labels: Sequence[str] | None, max_length: int, *,
                       exclude_self: bool = False, demonstrations: Sequence[tuple[Any, int]] | None = None,
                       query_embeddings: torch.Tensor | None = None) -> list[dict]:
        """Features (`input_ids`, `attention_mask`, `example`, and `labels` when known) of prompt-filled
        examples. Demonstrations: `demonstrations` (the same (example, class id) list for every input, as in
        in-context learning), or with a pool one per class chosen by similarity (`exclude_self`: the examples
        are the pool itself, in order, and none gets itself)."""
        label2id = {lab: i for i, lab in enumerate(labels or self.spec.labels)}
        chosen = None
        if self.pool is not None and demonstrations is None:
            if query_embeddings is None:
                query_embeddings = self.pool.embeddings if exclude_self else self.pool.embed(examples)
            chosen = choose_demonstrations(query_embeddings, self.pool.embeddings, self.pool.classes,
                                           len(self.spec.labels),
                                           exclude=list(range(len(examples))) if exclude_self else None)
        prompts = []
        for i, ex in enumerate(examples):
            demos = list(demonstrations or [])
            if chosen is not None:
                demos = [(self.pool.examples[j], self.pool.classes[j]) for j in chosen[i] if j >= 0]
            prompts.append(self._prompt_parts(ex, demos))
        feats = []
        for i, (ex, (query, demos)) in enumerate(zip(examples, self._tokenize(prompts))):
            ids = self._assemble(query, demos, max_length)
            f = {"input_ids": ids, "attention_mask": [1] * len(ids), "example": i}
            if getattr(ex, "label", None) is not None:
                f["labels"] = label2id[ex.label]
            feats.append(f)
        return feats


# ------------------------------------------------------------------------------------ finetune --method prompt

def finetune_prompt(model: str | Path, task: str, train: str, eval: str, out: str | Path, *,
                    init: str = "pretrained", text_column: str | None = None, pair_column: str | None = None,
                    label_column: str | None = None, epochs: int | None = None, max_steps: int | None = None,
                    seed: int = 0, overrides: Sequence[str] = (), train_fraction: float | None = None,
                    shots: int | None = None, seeds: int = 1, progress: bool = False) -> dict[str, Any]:
    """`selfsup finetune --method prompt`: fine-tune the whole LM so its LM head fills the template's blank
    with the right label word (keys: --set template=, verbalizer=, demonstrations=true). Same outputs and
    metrics.json keys as the other methods; `model/` is the LM in HF format + task.json (`method: prompt`)."""
    from selfsup.adapt.finetune import (_check_out, _resolve_threads, load_data, over_seeds, parse_overrides,
                                        run_options)
    from selfsup.adapt.heads import _model_type, load_tokenizer, resolve_checkpoint
    from selfsup.adapt.tasks import columns_for, subsample
    from selfsup.config import to_dict

    out = Path(out)
    base = run_options(init=init, seeds=seeds, epochs=epochs, max_steps=max_steps, train_fraction=train_fraction,
                       shots=shots)
    cfg = parse_overrides(overrides, base)
    if cfg.demonstrations and init != "pretrained":
        raise SelfsupError("demonstrations: needs --init pretrained (demonstrations are chosen with the "
                           "checkpoint's embeddings)")
    _check_out(out)
    source = resolve_checkpoint(model)
    lm_kind = lm_kind_of(_model_type(source), task)
    parse_template(cfg.template if cfg.template is not None else DEFAULT_TEMPLATES[(lm_kind, task)], task, lm_kind)
    data = load_data(task, train, eval, columns_for(task, text_column, pair_column, label_column))
    tok = load_tokenizer(source)
    spec = build_spec(tok, lm_kind, task, data.labels, cfg.template, cfg.verbalizer, cfg.demonstrations)
    for s in range(seed, seed + seeds):  # a too-small class is an error before anything is written
        subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
    _resolve_threads(cfg)

    def train_seed(s: int, folder: Path) -> dict[str, Any]:
        subset = subsample(data.train, fraction=train_fraction, shots=shots, seed=s, source=train)
        return _train_prompt(source, data, cfg, spec, init=init, seed=s, out=folder, train_examples=subset,
                             progress=progress)

    return over_seeds(out, seed, seeds, train_seed, to_dict(cfg),
                      shared=("trainable_percent", "template", "verbalizer", "demonstrations"))


def _train_prompt(source: Path, data, cfg, spec: PromptSpec, *, init: str, seed: int, out: Path,
                  train_examples: list, progress: bool) -> dict[str, Any]:
    import numpy as np

    from selfsup.adapt.finetune import MAIN_METRIC, _device, collate, fit, model_positions, run_eval
    from selfsup.adapt.heads import count_parameters, load_tokenizer, save_task
    from selfsup.fileio import atomic_write_json

    tok = load_tokenizer(source)
    lm = load_lm(source, spec.lm_kind, tok, init=init, seed=seed, dropout=cfg.dropout)
    model = PromptClassifier(lm, spec, tok.mask_token_id, tok.pad_token_id)
    trainable, total = count_parameters(model)
    device = _device(cfg)
    model.to(device)
    max_length = min(cfg.max_length, model_positions(lm.config, tok) - reserved_positions(spec))
    prompts = PromptTokenizer(tok, spec)
    label2id = {lab: i for i, lab in enumerate(data.labels)}
    if spec.demonstrations:  # embeddings of the checkpoint as loaded, once, before any update
        pool_emb = sentence_embeddings(lm, tok, train_examples, max_length, cfg.eval_batch_size, device)
        prompts.pool = DemonstrationPool(list(train_examples), [label2id[e.label] for e in train_examples],
                                         pool_emb, lambda exs: sentence_embeddings(lm, tok, exs, max_length,
                                                                                    cfg.eval_batch_size, device))
        train_feats = prompts.encode_prompts(train_examples, data.labels, max_length, exclude_self=True)
    else:
        train_feats = prompts.encode_prompts(train_examples, data.labels, max_length)
    eval_feats = prompts.encode_prompts(data.eval, data.labels, max_length)
    pad_id = tok.pad_token_id
    lr = cfg.lr or DEFAULT_LR
    started = time.perf_counter()
    history, ev, step, epochs = fit(
        model, train_feats, cfg, lr=lr, seed=seed, device=device,
        loss_fn=lambda m, batch: m(**batch).loss,
        collate_fn=lambda chunk: collate(chunk, pad_id, device),
        eval_fn=lambda m: run_eval(m, eval_feats, data.eval, data.kind, data.labels, cfg, pad_id, device),
        main_metric=MAIN_METRIC[data.kind] if progress else None)
    seconds = time.perf_counter() - started
    model.cpu()
    folder = out / "model"
    lm.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    if prompts.pool is not None:
        rows = [{"text": e.text, "pair": e.pair, "label": e.label} for e in prompts.pool.examples]
        (folder / POOL_TEXTS).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                         encoding="utf-8")
        np.save(folder / POOL_EMBEDDINGS, prompts.pool.embeddings.numpy().astype(np.float32))
    save_task(folder, {"kind": data.kind, "labels": data.labels, "text_column": data.columns.text,
                       "pair_column": data.columns.pair, "label_column": data.columns.label,
                       "max_length": max_length, "source_model": str(source), "init": init, "method": "prompt",
                       **spec.info()})
    metrics = {"task": data.kind, "model": str(source), "init": init, "method": "prompt", "seed": seed,
               "eval": dict(ev), "main_metric": MAIN_METRIC[data.kind], "trainable_parameters": trainable,
               "total_parameters": total, "backbone_parameters": total,
               "trainable_percent": round(100 * trainable / total, 4), "history": history, "steps": step,
               "epochs": epochs, "lr": lr, "train_examples": len(train_examples), "eval_examples": len(data.eval),
               "labels": data.labels, "train_seconds": round(seconds, 2), **spec.info()}
    atomic_write_json(out / "metrics.json", metrics)
    from selfsup.adapt.plots import plot_history

    plot_history({init: history}, out / "curves.png", MAIN_METRIC[data.kind], title=f"{data.kind} (prompt)")
    return metrics


def load_prompt_model(folder: Path, info: dict, tokenizer) -> tuple[PromptClassifier, PromptTokenizer]:
    """A `--method prompt` folder -> (PromptClassifier in eval mode, PromptTokenizer) for evaluate / predict."""
    import numpy as np

    from selfsup.adapt.tasks import TextExample

    lm_kind = info.get("lm_kind") or "mlm"
    spec = build_spec(tokenizer, lm_kind, info["kind"], info["labels"], info.get("template"), info.get("verbalizer"),
                      bool(info.get("demonstrations")))
    lm = load_lm(folder, lm_kind, tokenizer)
    model = PromptClassifier(lm, spec, tokenizer.mask_token_id, tokenizer.pad_token_id).eval()
    prompts = PromptTokenizer(tokenizer, spec)
    if spec.demonstrations:
        rows = [json.loads(line) for line in (folder / POOL_TEXTS).read_text(encoding="utf-8").splitlines() if line]
        examples = [TextExample(r["text"], r.get("pair"), r["label"], f"{folder / POOL_TEXTS}:{i + 1}")
                    for i, r in enumerate(rows)]
        label2id = {lab: i for i, lab in enumerate(info["labels"])}
        embedder: dict[str, Any] = {}

        def embed(exs: Sequence) -> torch.Tensor:  # the source checkpoint, as at training time
            if "lm" not in embedder:
                src = Path(info.get("source_model", ""))
                if not (src / "config.json").is_file():
                    raise SelfsupError(f"{src}: the source checkpoint (task.json source_model) is needed to "
                                       "choose demonstrations for new inputs, and is not there")
                embedder["lm"] = load_lm(src, lm_kind, tokenizer).eval()
            return sentence_embeddings(embedder["lm"], tokenizer, exs, info["max_length"])

        prompts.pool = DemonstrationPool(examples, [label2id[e.label] for e in examples],
                                         torch.from_numpy(np.load(folder / POOL_EMBEDDINGS)), embed)
    return model, prompts
