"""Prompts with verbalizers, shared by `--method prompt`, `--method pet` and `selfsup incontext`:
classification as filling a blank with a label word, scored by the checkpoint's own language-model head. No
new head, no new parameter. (Prompt rendering and LM-BFF demonstrations: `prompt_inputs.py`; training and
saving a prompt model: `prompt_training.py`.)

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
import math
import string
from pathlib import Path
from typing import Any, Sequence

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

    from selfsup.config import yaml_load

    if value is None:
        return {lab: [lab] for lab in labels}
    if isinstance(value, str):
        text = value.strip()
        if Path(text).suffix.lower() in (".json", ".yaml", ".yml") and "\n" not in text:
            path = Path(text)
            if not path.is_file():
                raise SelfsupError(f"verbalizer: {text}: no such file")
            try:
                value = yaml_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as e:
                raise SelfsupError(f"verbalizer: {text}: not JSON/YAML ({str(e).splitlines()[0]})") from None
        else:
            try:
                value = yaml_load(text)
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
            hint = " (quote it: YAML 1.1 reads yes/no/on/off as booleans)" if isinstance(raw, bool) else ""
            raise SelfsupError(f"verbalizer: label {_label_key(key)!r}: expected a word or a list of words, "
                               f"got {raw!r}{hint}"[:300])
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

def lm_parts(lm) -> tuple[Any, Any]:
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

        base, head = lm_parts(self.lm)
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

    from selfsup.adapt.core.models import quiet_transformers

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
