"""Prompt rendering for the prompt methods: `PromptTokenizer` renders each example into its template (and a
masked LM's blank into mask tokens), truncating the text — demonstrations first — never the template; LM-BFF
demonstrations (Gao, Fisch & Chen 2021) are chosen per class by cosine similarity of mean-pooled states."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import torch

from selfsup.adapt.shared.prompts import PromptSpec, in_context_ids, lm_parts
from selfsup.errors import SelfsupError


# ------------------------------------------------------------------------------ demonstrations (LM-BFF)

def sentence_embeddings(lm, tokenizer, examples: Sequence, max_length: int, batch_size: int = 32,
                        device=None) -> torch.Tensor:
    """[N, H] float32 on CPU: mean over non-special tokens of the LM backbone's last hidden states (no grad)."""
    from selfsup.adapt.core.features import collate

    base, _ = lm_parts(lm)
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
    (the hook `selfsup.adapt.core.features.encode` calls); everything else is the wrapped tokenizer's."""

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
