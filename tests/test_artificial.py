"""`selfsup data artificial`: every kind has exactly the asked token count; paired tokens meet their partner in
the same sequence, after it; nested ones nest; shuffling keeps each sequence's multiset (and, with a window as
long as the sequence, its order); random tokens are uniform; bad input is one line, exit 2, nothing written."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from conftest import run_cli
from selfsup.data.artificial import artificial_lines, corpus_words
from selfsup.errors import SelfsupError

VOCAB = 40
HALF = VOCAB // 2


def ids(line: str) -> list[int]:
    return [int(t[1:]) for t in line.split()]


@pytest.mark.parametrize("kind", ["random", "paired", "nested"])
def test_every_kind_writes_exactly_the_asked_tokens(kind):
    lines = artificial_lines(kind, 10_002, vocab=VOCAB, length=64, seed=1)
    assert sum(len(line.split()) for line in lines) == 10_002
    assert [len(line.split()) for line in lines[:-1]] == [64] * (len(lines) - 1) and len(lines[-1].split()) == 18
    assert artificial_lines(kind, 10_002, vocab=VOCAB, length=64, seed=1) == lines  # seeded
    assert artificial_lines(kind, 10_002, vocab=VOCAB, length=64, seed=2) != lines


def test_random_tokens_are_uniform():
    counts = Counter(t for line in artificial_lines("random", 40_000, vocab=VOCAB, seed=0) for t in ids(line))
    assert set(counts) == set(range(VOCAB))
    expected = 40_000 / VOCAB
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 80  # 39 degrees of freedom: p < 1e-4 above ~75 would mean not uniform


def test_paired_tokens_meet_their_partner_in_the_same_sequence_after_it():
    crossing = 0
    for line in artificial_lines("paired", 20_000, vocab=VOCAB, length=32, seed=0):
        seq = ids(line)
        open_count: Counter = Counter()
        for t in seq:
            if t < HALF:
                open_count[t] += 1
            else:
                assert open_count[t - HALF] > 0, "a partner came before its token"
                open_count[t - HALF] -= 1
        assert not +open_count, "a token without its partner"
        crossing += not is_nested(seq)
    assert crossing > 0  # flat pairs cross, unlike the nested kind


def is_nested(seq: list[int]) -> bool:
    stack = []
    for t in seq:
        if t < HALF:
            stack.append(t)
        elif not stack or stack.pop() != t - HALF:
            return False
    return not stack


def depth(seq: list[int]) -> int:
    d = best = 0
    for t in seq:
        d += 1 if t < HALF else -1
        best = max(best, d)
    return best


def test_nested_tokens_nest_like_brackets_within_the_depth_limit():
    lines = artificial_lines("nested", 20_000, vocab=VOCAB, length=64, seed=0)
    assert all(is_nested(ids(line)) for line in lines)
    assert np.mean([depth(ids(line)) for line in lines]) > 3  # real nesting, not open-close pairs only
    limited = artificial_lines("nested", 20_000, vocab=VOCAB, length=64, seed=0, max_depth=2)
    assert all(is_nested(ids(line)) and depth(ids(line)) <= 2 for line in limited)


def test_shuffling_keeps_each_sequences_words(persuasion):
    words = list(corpus_words([str(persuasion)]))[:4800]
    originals = [words[i:i + 48] for i in range(0, 4800, 48)]
    for window in (1, 4):
        lines = artificial_lines("shuffled", 4800, length=48, source_words=iter(words), window=window, seed=0)
        assert [Counter(line.split()) for line in lines] == [Counter(o) for o in originals]
        assert sum(line.split() != o for line, o in zip(lines, originals)) > 90
        if window == 4:  # 4-grams stay in order: every 4-gram of the result is one of the original sequence's
            for line, o in zip(lines, originals):
                grams = {tuple(o[i:i + 4]) for i in range(0, 48, 4)}
                assert all(tuple(line.split()[i:i + 4]) in grams for i in range(0, 48, 4))
    unchanged = artificial_lines("shuffled", 4800, length=48, source_words=iter(words), window=48)
    assert [line.split() for line in unchanged] == originals
    with pytest.raises(SelfsupError, match="only 4800 words"):
        artificial_lines("shuffled", 6000, source_words=iter(words))


def test_cli_writes_one_token_count_for_every_kind_and_refuses_bad_input(tmp_path, persuasion):
    sizes = {}
    for kind in ("random", "paired", "nested", "shuffled"):
        out = tmp_path / f"{kind}.txt"
        extra = ["--source", str(persuasion), "--window", "2"] if kind == "shuffled" else []
        res = run_cli("data", "artificial", "--kind", kind, "--out", str(out), "--tokens", "3000", *extra)
        assert res.returncode == 0, res.stderr
        sizes[kind] = len(out.read_text().split())
    assert set(sizes.values()) == {3000}
    # real words name the tokens: the nested corpus in English words, same structure
    out = tmp_path / "nested-words.txt"
    res = run_cli("data", "artificial", "--kind", "nested", "--out", str(out), "--tokens", "3000", "--vocab", "40",
                  "--words-from", str(persuasion))
    assert res.returncode == 0, res.stderr
    words = out.read_text().split()
    assert len(words) == 3000 and len(set(words)) <= 40 and {"the", "to", "and", "of"} <= set(words)
    mine = tmp_path / "mine.txt"
    mine.write_text("keep")
    bad = [(["--kind", "paired", "--tokens", "3001"], "must be even"),
           (["--kind", "nested", "--vocab", "7"], "must be even"),
           (["--kind", "shuffled"], "needs --source"),
           (["--kind", "random", "--source", str(persuasion)], "only for --kind shuffled"),
           (["--kind", "shuffled", "--source", str(persuasion), "--tokens", "10000000"], "has only"),
           (["--kind", "random", "--tokens", "0"], "at least 1"),
           (["--kind", "shuffled", "--source", str(tmp_path / "nope.txt")], "nope.txt"),
           (["--kind", "paired", "--vocab", "100000", "--words-from", str(persuasion)], "distinct words")]
    for args, message in bad:
        out = tmp_path / "bad.txt"
        res = run_cli("data", "artificial", *args, "--out", str(out))
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
            (args, res.stderr)
        assert not out.exists()
    res = run_cli("data", "artificial", "--kind", "random", "--out", str(mine))
    assert res.returncode == 2 and "already exists" in res.stderr and mine.read_text() == "keep"
