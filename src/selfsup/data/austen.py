"""Real labeled tasks made from the embedded Austen corpus (no download): which novel a passage is from,
whether a sentence is a character's speech or the narrator's (labeled by the author's own quotation marks),
whether it is a question / an exclamation or a statement (labeled by the author's own punctuation), two
word-tagging tasks: which words a comma followed, and which words she capitalized (truecasing), a sentence-pair
task: does the second sentence follow the first?, a regression: what share of a paragraph is dialogue?, and an
extractive question: who is speaking in this paragraph?"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from selfsup.errors import SelfsupError

NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")


def _novel_paragraphs(name: str) -> list[list[str]]:
    """The novel's paragraphs as sentence lists, headings and front matter (short or all-caps lines) dropped."""
    from selfsup.data.text import read_paragraphs

    path = Path(__file__).resolve().parents[1] / "assets" / f"austen-{name}.txt.xz"
    out = []
    for para in read_paragraphs([str(path)]):
        text = " ".join(para.sentences)
        if len(text.split()) < 6 or text.upper() == text:
            continue
        out.append(para.sentences)
    return out


def _split_paragraphs(out: Path | None, novels: Iterable[str], eval_fraction: float):
    """(novel, "train" | "eval", paragraph text) for every kept paragraph: the first (1 - eval_fraction) of
    each novel's paragraphs are "train", the rest "eval"; with `out`, each novel's training part is also
    written to `out/unlabeled/<novel>.txt` (for pretraining without seeing an evaluation paragraph)."""
    from selfsup.fileio import atomic_write_text

    for name in novels:
        if name not in NOVELS:
            raise SelfsupError(f"novels: unknown novel {name!r} (known: {', '.join(NOVELS)})")
        paras = [" ".join(p) for p in _novel_paragraphs(name)]
        cut = int(len(paras) * (1 - eval_fraction))
        if out is not None:
            atomic_write_text(out / "unlabeled" / f"{name}.txt", "\n\n".join(paras[:cut]) + "\n")
        for i, para in enumerate(paras):
            yield name, "train" if i < cut else "eval", para


def austen_novels_task(out_dir: str | Path, *, passage_words: int = 40, train_per_class: int = 400,
                       eval_per_class: int = 100, eval_fraction: float = 0.2, seed: int = 0,
                       novels: Iterable[str] = NOVELS) -> dict[str, Any]:
    """A real labeled task from the embedded corpus: which Austen novel is this passage from?

    Each novel is cut into passages of whole consecutive sentences (>= `passage_words` words). The first
    (1 - eval_fraction) of a novel's paragraphs give training passages, the rest evaluation passages, so the
    two never overlap; `train_per_class` / `eval_per_class` passages per novel are drawn with `seed`.
    Writes `train.jsonl`, `eval.jsonl` (`{"text", "label"}`) and `unlabeled/<novel>.txt` — the training part
    of each novel as plain text, for pretraining without ever seeing an evaluation passage.
    """
    import random

    from selfsup.fileio import atomic_write_text

    out = Path(out_dir)
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {"train": [], "eval": []}
    counts: dict[str, dict[str, int]] = {}
    for name in novels:
        if name not in NOVELS:
            raise SelfsupError(f"novels: unknown novel {name!r} (known: {', '.join(NOVELS)})")
        paras = _novel_paragraphs(name)
        cut = int(len(paras) * (1 - eval_fraction))
        parts = {"train": paras[:cut], "eval": paras[cut:]}
        atomic_write_text(out / "unlabeled" / f"{name}.txt",
                          "\n\n".join(" ".join(p) for p in parts["train"]) + "\n")
        counts[name] = {}
        for split, want in (("train", train_per_class), ("eval", eval_per_class)):
            passages, buf = [], []
            for sentences in parts[split]:
                for s in sentences:
                    buf.append(s)
                    if sum(len(x.split()) for x in buf) >= passage_words:
                        passages.append(" ".join(buf))
                        buf = []
                buf = []  # a passage never crosses a paragraph boundary
            if len(passages) < want:
                raise SelfsupError(f"{name}: only {len(passages)} {split} passages, {want} asked for")
            chosen = sorted(rng.sample(range(len(passages)), want))
            splits[split].extend({"text": passages[i], "label": name} for i in chosen)
            counts[name][split] = want
    for split, rows in splits.items():
        rng.shuffle(rows)
        atomic_write_text(out / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return {"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl"),
            "unlabeled": str(out / "unlabeled"), "counts": counts}


def quoted_spans(paragraph: str) -> list[tuple[str, bool]]:
    """A paragraph cut at its double quotes into (text, inside quotes) spans, quotes removed. A quote left open
    at the paragraph's end (speech running on into the next paragraph) closes there."""
    spans, inside = [], False
    for i, part in enumerate(paragraph.split('"')):
        if i:
            inside = not inside
        if part.strip():
            spans.append((" ".join(part.split()), inside))
    return spans


def austen_speech_task(out_dir: str | Path, *, min_words: int = 8, train_per_class: int = 1000,
                       eval_per_class: int = 500, eval_fraction: float = 0.2, seed: int = 0,
                       novels: Iterable[str] = NOVELS) -> dict[str, Any]:
    """A real labeled task from the embedded corpus, labeled by the author's own quotation marks: is this
    sentence spoken by a character (`speech`) or the narrator's (`narration`)? The quotes are removed from the
    input, so the model must tell from the words and their order (pronouns, tense, mood, register).

    Each paragraph is cut at its quotes; every sentence (>= `min_words` words) of a span inside quotes is
    `speech`, of a span outside `narration`. The first (1 - eval_fraction) of each novel's paragraphs give
    training sentences, the rest evaluation ones (never overlapping); `train_per_class` / `eval_per_class`
    sentences per label are drawn with `seed` across the novels. Writes `train.jsonl`, `eval.jsonl`
    (`{"text", "label", "novel"}`) and `unlabeled/<novel>.txt` (the training part of each novel, quotes kept).
    """
    import random

    from selfsup.data.text import split_sentences

    out = Path(out_dir)
    rng = random.Random(seed)
    pools: dict[str, dict[str, list[dict]]] = {"train": {"speech": [], "narration": []},
                                                "eval": {"speech": [], "narration": []}}
    for name, split, para in _split_paragraphs(out, novels, eval_fraction):
        for span, inside in quoted_spans(para):
            for sentence in split_sentences(span):
                if len(sentence.split()) >= min_words:
                    label = "speech" if inside else "narration"
                    pools[split][label].append({"text": sentence, "label": label, "novel": name})
    return _write_balanced(out, pools, train_per_class, eval_per_class, rng)


def _write_balanced(out: Path, pools: dict[str, dict[str, list[dict]]], train_per_class: int, eval_per_class: int,
                    rng) -> dict[str, Any]:
    """Draw `*_per_class` rows of each label from each split's pools, shuffle, write train/eval.jsonl."""
    from selfsup.fileio import atomic_write_text

    counts: dict[str, dict[str, int]] = {}
    for split, want in (("train", train_per_class), ("eval", eval_per_class)):
        rows = []
        for label, pool in pools[split].items():
            if len(pool) < want:
                raise SelfsupError(f"{label}: only {len(pool)} {split} sentences, {want} asked for")
            rows.extend(rng.sample(pool, want))
            counts.setdefault(label, {})[split] = want
        rng.shuffle(rows)
        atomic_write_text(out / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return {"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl"),
            "unlabeled": str(out / "unlabeled"), "counts": counts}


MARKS = {"?": "question", "!": "exclamation"}


def austen_mark_task(out_dir: str | Path, mark: str, *, min_words: int = 5, train_per_class: int = 800,
                     eval_per_class: int = 250, eval_fraction: float = 0.2, seed: int = 0,
                     novels: Iterable[str] = NOVELS) -> dict[str, Any]:
    """A real labeled task labeled by the author's own punctuation: does this sentence end with `mark` ("?":
    `question`, "!": `exclamation`) or with a full stop (`statement`)? Quotes and the final punctuation are
    removed from the input, so the model must tell from the words (inversion, wh-words, interjections).
    Split by paragraphs as `austen_speech_task` (first 1 - eval_fraction of each novel to train); writes
    `train.jsonl`, `eval.jsonl` (`{"text", "label", "novel"}`) and `unlabeled/<novel>.txt`."""
    import random

    from selfsup.data.text import split_sentences

    if mark not in MARKS:
        raise SelfsupError(f"mark: one of {', '.join(MARKS)}, got {mark!r}")
    out = Path(out_dir)
    rng = random.Random(seed)
    positive = MARKS[mark]
    pools: dict[str, dict[str, list[dict]]] = {s: {positive: [], "statement": []} for s in ("train", "eval")}
    for name, split, para in _split_paragraphs(out, novels, eval_fraction):
        for span, _ in quoted_spans(para):
            for sentence in split_sentences(span):
                end = sentence.rstrip(" '\u2019)")[-1:]
                label = positive if end == mark else "statement" if end == "." else None
                text = sentence.rstrip(" '\u2019).?!;:,-")
                if label and len(text.split()) >= min_words:
                    pools[split][label].append({"text": text, "label": label, "novel": name})
    return _write_balanced(out, pools, train_per_class, eval_per_class, rng)


def _tagged_sentence_task(out_dir: str | Path, name: str, tag_words, keep, *, min_words: int,
                          train_sentences: int, eval_sentences: int, eval_fraction: float, seed: int,
                          novels: Iterable[str]) -> dict[str, Any]:
    """Sentences (>= `min_words` words, quotes removed) of the first (1 - eval_fraction) of each novel's paragraphs
    give training sentences, the rest evaluation ones; `tag_words(raw tokens) -> [(word, tag)]`, `keep(tagged)`
    filters; writes `train.conll` and `eval.conll` (`word<TAB>tag`, a blank line between sentences)."""
    import random

    from selfsup.data.text import split_sentences
    from selfsup.fileio import atomic_write_text

    out = Path(out_dir)
    rng = random.Random(seed)
    pools: dict[str, list[list[tuple[str, str]]]] = {"train": [], "eval": []}
    for _, split, para in _split_paragraphs(None, novels, eval_fraction):
        for sentence in split_sentences(para.replace('"', " ")):
            tagged = tag_words(sentence.split())
            if len(tagged) >= min_words and keep(tagged):
                pools[split].append(tagged)
    files = {}
    for split, want in (("train", train_sentences), ("eval", eval_sentences)):
        if len(pools[split]) < want:
            raise SelfsupError(f"{name}: only {len(pools[split])} {split} sentences, {want} asked for")
        chosen = rng.sample(pools[split], want)
        files[split] = out / f"{split}.conll"
        atomic_write_text(files[split], "\n".join("".join(f"{w}\t{t}\n" for w, t in s) for s in chosen))
    return {"train": str(files["train"]), "eval": str(files["eval"])}


def _bare_word(token: str) -> str:
    import re

    return re.sub(r"^[^\w]+|[^\w]+$", "", token)


def austen_comma_task(out_dir: str | Path, *, min_words: int = 6, train_sentences: int = 600,
                      eval_sentences: int = 300, eval_fraction: float = 0.2, seed: int = 0,
                      novels: Iterable[str] = NOVELS) -> dict[str, Any]:
    """A real POS-style tagging task labeled by the author's own punctuation: is this word followed by a comma
    (`comma`) or not (`-`)? The commas (and the sentence's other punctuation) are removed from the input words,
    so the tagger must find clause and phrase boundaries from the words (syntax, not vocabulary). Only sentences
    with a comma before their last word are kept. Files as `_tagged_sentence_task`.
    """
    def tag(tokens: list[str]) -> list[tuple[str, str]]:
        return [(w, "comma" if t.rstrip("'\u2019)").endswith(",") else "-") for t in tokens if (w := _bare_word(t))]

    return _tagged_sentence_task(out_dir, "comma", tag, lambda tagged: any(t == "comma" for _, t in tagged[:-1]),
                                 min_words=min_words, train_sentences=train_sentences, eval_sentences=eval_sentences,
                                 eval_fraction=eval_fraction, seed=seed, novels=novels)


def austen_truecase_task(out_dir: str | Path, *, min_words: int = 6, train_sentences: int = 600,
                         eval_sentences: int = 300, eval_fraction: float = 0.2, seed: int = 0,
                         novels: Iterable[str] = NOVELS) -> dict[str, Any]:
    """Truecasing (Lita et al., 2003, "tRuEcasIng"), labeled by the author's own capitals: the words are given in
    lower case with their punctuation removed, and each is tagged `Cap` (the author capitalized it: a sentence
    start, a name, a title, "I") or `-`. Beyond the first word the tagger must know which words are names and
    titles in context ("miss", "bath", "hall"), a lexical and contextual token task. Files as
    `_tagged_sentence_task`.
    """
    def tag(tokens: list[str]) -> list[tuple[str, str]]:
        return [(w.lower(), "Cap" if w[0].isupper() else "-") for t in tokens if (w := _bare_word(t))]

    return _tagged_sentence_task(out_dir, "truecase", tag, lambda tagged: True, min_words=min_words,
                                 train_sentences=train_sentences, eval_sentences=eval_sentences,
                                 eval_fraction=eval_fraction, seed=seed, novels=novels)


def austen_next_sentence_task(out_dir: str | Path, *, min_words: int = 6, train_per_class: int = 300,
                              eval_per_class: int = 300, eval_fraction: float = 0.2, seed: int = 0,
                              novels: Iterable[str] = NOVELS) -> dict[str, Any]:
    """A real sentence-pair task labeled by the text's own order (BERT's next-sentence prediction as a downstream
    pair classification): is `hypothesis` the sentence the author wrote right after `premise` (`next`), or a
    sentence from another paragraph of the same novel and split (`random`)? Both sentences have >= `min_words`
    words and their quotes removed. Split by paragraphs as `austen_speech_task`; writes `train.jsonl`,
    `eval.jsonl` (`{"premise", "hypothesis", "label", "novel"}`) and `unlabeled/<novel>.txt`."""
    import random

    from selfsup.data.text import split_sentences

    out = Path(out_dir)
    rng = random.Random(seed)
    paragraphs: dict[tuple[str, str], list[list[str]]] = {}
    for name, split, para in _split_paragraphs(out, novels, eval_fraction):
        paragraphs.setdefault((name, split), []).append(
            [" ".join(s.split()) for s in split_sentences(para.replace('"', " "))])
    pools: dict[str, dict[str, list[dict]]] = {s: {"next": [], "random": []} for s in ("train", "eval")}

    def long(sentence: str) -> bool:
        return len(sentence.split()) >= min_words

    for (name, split), paras in paragraphs.items():
        for i, sentences in enumerate(paras):
            for first, second in zip(sentences, sentences[1:]):
                if not (long(first) and long(second)):
                    continue
                pools[split]["next"].append({"premise": first, "hypothesis": second, "label": "next", "novel": name})
                j = rng.randrange(len(paras) - 1)
                other = [s for s in paras[j + (j >= i)] if long(s)]  # any paragraph but this one
                if other:
                    pools[split]["random"].append({"premise": first, "hypothesis": rng.choice(other),
                                                   "label": "random", "novel": name})
    return _write_balanced(out, pools, train_per_class, eval_per_class, rng)


def austen_dialogue_share_task(out_dir: str | Path, *, min_words: int = 12, max_words: int = 80,
                               train_examples: int = 600, eval_examples: int = 300, eval_fraction: float = 0.2,
                               seed: int = 0, novels: Iterable[str] = NOVELS) -> dict[str, Any]:
    """A real regression task labeled by the author's own quotation marks: what share of this paragraph's words
    did she put inside quotes (a character's speech)? The quotes are removed from the input, so the model must
    find where speech starts and stops from the words alone. Paragraphs of `min_words`..`max_words` words;
    split by paragraphs as `austen_speech_task`; writes `train.jsonl`, `eval.jsonl` (`{"text", "label",
    "novel"}`, label in [0, 1]) and `unlabeled/<novel>.txt`."""
    import random

    out = Path(out_dir)
    rng = random.Random(seed)
    pools: dict[str, list[dict]] = {"train": [], "eval": []}
    for name, split, para in _split_paragraphs(out, novels, eval_fraction):
        spans = quoted_spans(para)
        words = sum(len(text.split()) for text, _ in spans)
        if not min_words <= words <= max_words:
            continue
        spoken = sum(len(text.split()) for text, inside in spans if inside)
        pools[split].append({"text": " ".join(text for text, _ in spans), "label": round(spoken / words, 4),
                             "novel": name})
    return _write_sampled(out, pools, {"train": train_examples, "eval": eval_examples}, "dialogue share", rng)


def _write_sampled(out: Path, pools: dict[str, list[dict]], wants: dict[str, int], task: str, rng) -> dict[str, Any]:
    """Draw `wants[split]` rows of each split's pool and write `train.jsonl`, `eval.jsonl`."""
    from selfsup.fileio import atomic_write_text

    for split, want in wants.items():
        if len(pools[split]) < want:
            raise SelfsupError(f"{task}: only {len(pools[split])} {split} paragraphs, {want} asked for")
        rows = rng.sample(pools[split], want)
        atomic_write_text(out / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return {"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl"), "unlabeled": str(out / "unlabeled")}


_TITLE = r"(?:(?:Mr|Mrs|Dr|St)\.?|Miss|Lady|Sir|Colonel|Captain|Admiral|Lord)"
_NAME = rf"(?:{_TITLE}\s+)?[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?"
_VERB = r"(?:said|cried|replied|answered|returned|continued|added|observed|exclaimed)"
_SPEECH_TAG = re.compile(rf"\b{_VERB}\s+({_NAME})|({_NAME})\s+{_VERB}\b")
_NOT_NAMES = frozenset("The Then When But And Now Here There So Yes No Oh Well Indeed Perhaps She He It This That "
                       "What Why How Her His My Your Our Their As At In On To If Upon After Before They We You I "
                       "Nay Ah Aye Do Did Is Was".split())


def speaker_tag(narration: str) -> tuple[str, int] | None:
    """(name, character start) of the first speech tag in a narration span — `said Emma`, `Mr. Knightley
    replied` — or None; a capitalized function word (`Then Emma said`) is not taken for a name."""
    for m in _SPEECH_TAG.finditer(narration):
        group = 1 if m.group(1) else 2
        name = m.group(group)
        if name.split()[0] in _NOT_NAMES:
            continue
        return name, m.start(group)
    return None


def austen_speaker_qa_task(out_dir: str | Path, *, max_words: int = 120, train_examples: int = 400,
                           eval_examples: int = 150, eval_fraction: float = 0.2, seed: int = 0,
                           novels: Iterable[str] = NOVELS) -> dict[str, Any]:
    """A real extractive-QA task labeled by the author's own speech tags: in a paragraph of dialogue (quotes
    kept), who is speaking? The answer is the span of the name in the narration's tag (`"...," said Mr.
    Knightley`), one speaker per paragraph (paragraphs whose tags name two people are left out). At most
    `max_words` words; split by paragraphs as `austen_speech_task`; writes `train.jsonl`, `eval.jsonl` in the
    SQuAD layout (`{"id", "question", "context", "answers": {"text", "answer_start"}}`) and
    `unlabeled/<novel>.txt`."""
    import random

    out = Path(out_dir)
    rng = random.Random(seed)
    pools: dict[str, list[dict]] = {"train": [], "eval": []}
    for name, split, para in _split_paragraphs(out, novels, eval_fraction):
        if '"' not in para or len(para.split()) > max_words:
            continue
        tags, pos = [], 0
        for i, part in enumerate(para.split('"')):
            tag = speaker_tag(part) if i % 2 == 0 else None  # odd parts are inside quotes
            if tag:
                tags.append((tag[0], pos + tag[1]))
            pos += len(part) + 1
        if not tags or len({t for t, _ in tags}) > 1:
            continue
        text, start = tags[0]
        pools[split].append({"id": f"{name}-{split}-{len(pools[split])}", "question": "Who is speaking?",
                             "context": para, "answers": {"text": [text], "answer_start": [start]}})
    return _write_sampled(out, pools, {"train": train_examples, "eval": eval_examples}, "speaker QA", rng)
