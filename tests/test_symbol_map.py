"""Cross-discipline transfer: `selfsup finetune --symbol-map words|chars|FILE [--set kmer=K]` on DNA-like data.

The words map is a pure function of the data and the tokenizer, is saved with the model (`symbol_map.json`) and
reapplied by `selfsup evaluate` / `predict`; chars and k-mer grouping on hand cases; every bad input is exit 2
with one line on stderr."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from selfsup.cli import main
from selfsup.data.symbol_map import (SYMBOL_MAP_FILE, build_symbol_map, distinct_symbols, one_token, spaced,
                                     symbols_of, vocabulary_words)
from selfsup.errors import SelfsupError

MOTIF = "GATTACA"


def dna_rows(n: int, seed: int) -> list[dict]:
    """Random ACGT sequences; label `motif` when GATTACA was planted (half of them), else `plain`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        seq = "".join(rng.choice(list("ACGT"), 24))
        label = "motif" if i % 2 == 0 else "plain"
        if label == "motif":
            at = int(rng.integers(0, len(seq) - len(MOTIF)))
            seq = seq[:at] + MOTIF + seq[at + len(MOTIF):]
        rows.append({"text": seq, "label": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def dna(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("dna")
    return {"train": write_csv(d / "train.csv", dna_rows(48, 0)), "eval": write_csv(d / "eval.csv", dna_rows(24, 1)),
            "dir": d}


def _texts(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        return [(f"{path}:{i}", r["text"]) for i, r in enumerate(csv.DictReader(f), 2)]


def _finetune(tiny_bert, dna, out: Path, *extra: str) -> int:
    return main(["finetune", "--model", str(tiny_bert), "--task", "sequence-classification", "--train",
                 str(dna["train"]), "--eval", str(dna["eval"]), "--out", str(out), "--epochs", "2", "--no-progress",
                 "--set", "threads=1", "--set", "batch_size=16", "--set", "lr=1e-3", "--set", "max_length=32",
                 *extra])


def test_chars_and_kmers_on_a_hand_case():
    assert symbols_of("ACGTAC") == list("ACGTAC")
    assert spaced("ACGT") == "A C G T"
    assert spaced("ACGTAC", 3) == "ACG TAC"
    assert symbols_of("ACGTA", 2) == ["AC", "GT", "A"]  # a shorter last group stays a symbol
    assert symbols_of("AC GT\tA", 2) == ["AC", "GT", "A"]  # whitespace is not a symbol
    assert distinct_symbols(["TTAA", "ACGT"], 2) == ["AA", "AC", "GT", "TT"]
    smap = build_symbol_map("chars", [("x:1", "ACGTAC")], tokenizer=None, kmer=3)
    assert smap.apply("ACGTAC") == "ACG TAC" and smap.words is None


def test_words_map_is_deterministic_and_one_token_per_symbol(tiny_bert, dna, tmp_path):
    from test_adapt_heads import make_checkpoint

    from selfsup.adapt.core.models import load_tokenizer

    texts = _texts(dna["train"]) + _texts(dna["eval"])
    for tok in (load_tokenizer(tiny_bert),  # WordPiece, and byte-level BPE (Ġ-marked words)
                load_tokenizer(make_checkpoint(tmp_path, "gpt2", ["the cat sat on the mat and then it ran"] * 50))):
        one = build_symbol_map("words", texts, tok, kmer=1)
        two = build_symbol_map("words", list(reversed(texts)), tok, kmer=1)
        assert one.words == two.words and sorted(one.words) == ["A", "C", "G", "T"]
        assert list(one.words.values()) == vocabulary_words(tok, 4)  # sorted symbols -> vocabulary order
        assert len(set(one.words.values())) == 4
        special = set(tok.all_special_tokens)
        for word in one.words.values():
            assert one_token(tok, word) is not None and word not in special and not word.startswith(("##", "Ġ"))
        mapped = one.apply("ACGT")
        ids = tok(mapped, add_special_tokens=False)["input_ids"]
        assert len(ids) == 4 and len(set(ids)) == 4
    three = build_symbol_map("words", texts, load_tokenizer(tiny_bert), kmer=3)
    assert set(three.words) == set(distinct_symbols((t for _, t in texts), 3))
    assert three.apply("ACGTAC").count(" ") == 1


def test_words_map_is_saved_and_reapplied_at_evaluate_and_predict(tiny_bert, dna, tmp_path, capsys):
    from selfsup.adapt.core.models import load_tokenizer

    out = tmp_path / "run"
    assert _finetune(tiny_bert, dna, out, "--symbol-map", "words", "--set", "kmer=3") == 0
    saved = json.loads((out / "model" / SYMBOL_MAP_FILE).read_text())
    expected = build_symbol_map("words", _texts(dna["train"]) + _texts(dna["eval"]), load_tokenizer(tiny_bert), 3)
    assert saved["mode"] == "words" and saved["kmer"] == 3 and saved["words"] == expected.words
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["config"]["kmer"] == 3

    res = run_cli("evaluate", "--model", str(out), "--eval", str(dna["eval"]), "--out", str(tmp_path / "ev.json"),
                  "--set", "threads=1")
    assert res.returncode == 0, res.stderr
    again = json.loads((tmp_path / "ev.json").read_text())["eval"]
    for key, value in trained["eval"].items():
        assert again[key] == pytest.approx(value, abs=1e-5), key

    raw = tmp_path / "raw.txt"  # raw sequences: predict maps them as training did
    raw.write_text("".join(r["text"] + "\n" for r in dna_rows(6, 2)))
    assert main(["predict", "--model", str(out), str(raw), "--out", str(tmp_path / "p.jsonl"),
                 "--set", "threads=1"]) == 0
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and {p["label"] for p in preds} <= {"motif", "plain"}


def _one_line_error(capsys, code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("selfsup: error:"), err
    for needle in needles:
        assert needle in err, err


def test_bad_inputs_are_one_line_errors(tiny_bert, dna, tmp_path, capsys):
    missing = tmp_path / "map.json"
    missing.write_text(json.dumps({"A": "the", "C": "of", "G": "and"}))  # no word for T
    _one_line_error(capsys, _finetune(tiny_bert, dna, tmp_path / "o1", "--symbol-map", str(missing)),
                    "map.json: no word for symbol 'T'", "train.csv:2")
    listed = tmp_path / "list.yaml"
    listed.write_text("- the\n- of\n")
    _one_line_error(capsys, _finetune(tiny_bert, dna, tmp_path / "o2", "--symbol-map", str(listed)),
                    "list.yaml: not a mapping")
    split = tmp_path / "split.yaml"
    split.write_text("A: the\nC: of\nG: and\nT: zebraxylophone\n")
    _one_line_error(capsys, _finetune(tiny_bert, dna, tmp_path / "o3", "--symbol-map", str(split)),
                    "split.yaml", "'zebraxylophone'", "symbol 'T'", "not one token")
    _one_line_error(capsys, _finetune(tiny_bert, dna, tmp_path / "o4", "--symbol-map", "words", "--set", "kmer=5"),
                    "--symbol-map words", "distinct symbols (kmer=5)", "usable whole words")
    _one_line_error(capsys, _finetune(tiny_bert, dna, tmp_path / "o5", "--symbol-map", str(tmp_path / "nope.json")),
                    "nope.json: no such symbol-map file")
    _one_line_error(capsys, _finetune(tiny_bert, dna, tmp_path / "o6", "--set", "kmer=3"), "kmer:", "--symbol-map")
    for i in range(1, 7):  # nothing written
        assert not (tmp_path / f"o{i}").exists()


def test_a_saved_map_without_a_symbol_is_an_error_at_predict(tmp_path):
    from selfsup.data.symbol_map import SymbolMap, load_symbol_map, save_symbol_map

    save_symbol_map(tmp_path, SymbolMap("words", 1, {"A": "the", "C": "of"}, "x"))
    smap = load_symbol_map(tmp_path)
    assert smap.apply("ACCA") == "the of of the"
    with pytest.raises(SelfsupError, match=r"symbol_map.json: no word for symbol 'G' \(in.txt:3\)"):
        smap.apply("ACG", "in.txt:3")
