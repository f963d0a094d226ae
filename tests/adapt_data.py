"""Small hand-made labeled files for the adaptation tests (written by the tests; nothing is downloaded).

The tagging and QA files are made by hand from templates over names and places of the novels: a person
(B-PER I-PER) goes to a place (B-LOC I-LOC); the QA contexts are the same sentences with questions about them.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

PEOPLE = ["Anne Elliot", "Captain Wentworth", "Lady Russell", "Mary Musgrove", "Emma Woodhouse", "Mr. Knightley",
          "Harriet Smith", "Elizabeth Bennet", "Mr. Darcy", "Jane Bennet", "Catherine Morland", "Henry Tilney"]
PLACES = ["Bath", "Kellynch Hall", "Uppercross", "Lyme", "Highbury", "Donwell Abbey", "Hartfield", "Pemberley",
          "Longbourn", "Northanger Abbey", "Netherfield Park", "London"]
VERBS = ["walked to", "returned to", "wrote from", "arrived at", "dined at", "stayed at"]
TAILS = ["yesterday .", "in the evening .", "with great pleasure .", "without delay .", "."]


def _sentence(rng: random.Random) -> tuple[list[str], list[str], str, str]:
    who, where = rng.choice(PEOPLE), rng.choice(PLACES)
    verb, tail = rng.choice(VERBS), rng.choice(TAILS)
    words, tags = [], []
    for part, tag in ((who, "PER"), (verb, None), (where, "LOC"), (tail, None)):
        for i, w in enumerate(part.split()):
            words.append(w)
            tags.append("O" if tag is None else ("B-" if i == 0 else "I-") + tag)
    return words, tags, who, where


def write_conll(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words, tags, _, _ = _sentence(rng)
        lines.extend(f"{w}\t{t}" for w, t in zip(words, tags))
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_squad(path: Path, n: int, seed: int, long_context: bool = False) -> Path:
    """Hand-made SQuAD-format file: each context has a few template sentences; a question asks where a
    person went (answer: the place) or who went to a place (answer: the person)."""
    rng = random.Random(seed)
    paragraphs = []
    for k in range(n):
        sentences = [_sentence(rng) for _ in range(12 if long_context else 2)]
        context = " ".join(" ".join(s[0]) for s in sentences)
        words, _, who, where = sentences[-1] if long_context else sentences[rng.randrange(len(sentences))]
        sent = " ".join(words)
        base = context.find(sent)
        if rng.random() < 0.5:
            q, a = f"Where did {who} go ?", where
        else:
            q, a = f"Who went to {where} ?", who
        start = context.find(a, base)
        paragraphs.append({"context": context, "qas": [{"id": f"q{k}", "question": q,
                                                        "answers": [{"text": a, "answer_start": start}]}]})
    path.write_text(json.dumps({"version": "hand-made", "data": [{"title": "austen", "paragraphs": paragraphs}]},
                               indent=1))
    return path


def write_pairs(path: Path, n: int, seed: int) -> Path:
    """NLI-style pairs: does the hypothesis name the person of the premise? (entailment / contradiction)"""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, _, who, where = _sentence(rng)
        if rng.random() < 0.5:
            hyp, label = f"{who} went to {where} .", "entailment"
        else:
            other = rng.choice([p for p in PEOPLE if p != who])
            hyp, label = f"{other} went to {where} .", "contradiction"
        rows.append({"premise": " ".join(words), "hypothesis": hyp, "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
