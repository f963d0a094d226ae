"""Text data: formats, sentence splitting, the memory-mapped cache, and every bad input named precisely."""
from __future__ import annotations

import json

import numpy as np
import pytest

from selfsup.data.corpus import build_corpus, get_tokenizer
from selfsup.data.text import read_paragraphs, split_sentences
from selfsup.data.tokenizer import TokenizerConfig
from selfsup.errors import SelfsupError


def test_split_sentences_keeps_abbreviations_and_quotes():
    text = 'Mr. Elliot was there. "Is it you?" she asked. Yes! 3 men came.'
    assert split_sentences(text) == ["Mr. Elliot was there.", '"Is it you?" she asked.', "Yes!", "3 men came."]


def test_plain_jsonl_csv_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("First line\nwrapped here.\n\nSecond paragraph. Two sentences.\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "Row one."}) + "\n\n" + json.dumps({"body": "Row two."}) + "\n")
    (tmp_path / "c.csv").write_text('id,body\n1,"A, quoted text."\n')
    paras = list(read_paragraphs([str(tmp_path / "a.txt")]))
    assert [p.sentences for p in paras] == [["First line wrapped here."], ["Second paragraph.", "Two sentences."]]
    assert {p.doc for p in paras} == {0}
    rows = list(read_paragraphs([str(tmp_path / "b.jsonl"), str(tmp_path / "c.csv")], column="body"))
    assert [p.sentences for p in rows] == [["Row one."], ["Row two."], ["A, quoted text."]]
    assert [p.doc for p in rows] == [0, 1, 2]  # one document per row, numbered across files


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\n\n  \n", "empty"),
    (b"good line\n\x00\x01binary", r":2: binary data"),
    (b"fine\nalso fine\ncaf\xe9 au lait\n", r":3: invalid UTF-8"),
])
def test_bad_text_files(tmp_path, content, message):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(SelfsupError, match=message):
        list(read_paragraphs([str(f)]))


def test_bad_sources(tmp_path):
    with pytest.raises(SelfsupError, match="no such file"):
        list(read_paragraphs([str(tmp_path / "missing.txt")]))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(SelfsupError, match="folder has no text files"):
        list(read_paragraphs([str(tmp_path / "empty_dir")]))
    j = tmp_path / "x.jsonl"
    j.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(SelfsupError, match=r"x.jsonl:2: no column 'text'"):
        list(read_paragraphs([str(j)]))
    j.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(SelfsupError, match=r"x.jsonl:2: invalid JSON"):
        list(read_paragraphs([str(j)]))


def test_corpus_cache_is_memory_mapped_reused_and_keeps_structure(persuasion):
    tok = get_tokenizer(TokenizerConfig(vocab_size=2000), [str(persuasion)], "text")
    corpus = build_corpus([str(persuasion)], "text", tok)
    assert isinstance(corpus.tokens, np.memmap) and corpus.tokens.dtype == np.uint16
    assert isinstance(corpus.sentences, np.memmap) and isinstance(corpus.sentence_doc, np.memmap)
    again = build_corpus([str(persuasion)], "text", tok)
    assert again.folder == corpus.folder  # the cache is reused, not rebuilt
    # one document, ending with the separator; sentences tile the stream up to it
    assert corpus.n_documents == 1 and corpus.tokens[-1] == tok.sep_token_id
    assert corpus.sentences[0, 0] == 0 and corpus.sentences[-1, 1] == corpus.n_tokens - 1
    assert (corpus.sentences[1:, 0] == corpus.sentences[:-1, 1]).all()
    first = corpus.sentences[0]
    assert tok.decode(corpus.tokens[first[0]:first[1]]).startswith("persuasion")


def test_pretrained_tokenizer_kinds_roundtrip(tmp_path, persuasion):
    for kind in ("bpe", "byte-level-bpe"):
        tok = get_tokenizer(TokenizerConfig(kind=kind, vocab_size=1000, lowercase=False), [str(persuasion)], "text")
        ids = tok("Anne Elliot walked.", add_special_tokens=False)["input_ids"]
        assert tok.decode(ids).strip().replace(" .", ".") == "Anne Elliot walked."
        tok.save_pretrained(tmp_path / kind)
        loaded = get_tokenizer(TokenizerConfig(kind="pretrained", pretrained=str(tmp_path / kind)), [], "text")
        assert loaded("Anne Elliot walked.", add_special_tokens=False)["input_ids"] == ids


def test_hugging_face_dataset_code_path_on_a_local_folder(tmp_path, monkeypatch):
    """`hf:NAME` goes through `datasets.load_dataset` (here a local folder, no network)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hub_like"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": f"Row {i} of a data set."}) for i in range(5)))
    paras = list(read_paragraphs([f"hf:{folder}@train"]))
    assert [p.sentences for p in paras][:2] == [["Row 0 of a data set."], ["Row 1 of a data set."]]
    assert [p.doc for p in paras] == list(range(5))
    with pytest.raises(SelfsupError, match="hf:.*nope.*cannot load data set"):
        list(read_paragraphs([f"hf:{tmp_path / 'nope'}"]))


def test_a_file_without_blank_lines_is_read_in_bounded_pieces_of_whole_lines(tmp_path, monkeypatch):
    import selfsup.data.text as text_module

    monkeypatch.setattr(text_module, "MAX_PARAGRAPH_CHARS", 200)
    lines = [f"Sentence number {i} stands alone." for i in range(100)]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    paras = list(read_paragraphs([str(tmp_path / "lines.txt")]))
    assert len(paras) > 10 and {p.doc for p in paras} == {0}  # many pieces, still one document
    assert max(sum(len(s) + 1 for s in p.sentences) for p in paras) <= 200 + len(lines[0]) + 1
    assert [s for p in paras for s in p.sentences] == lines  # nothing lost, nothing split mid-line


def test_the_tokenizer_learns_from_a_bounded_sample_spread_over_the_corpus(tmp_path):
    from selfsup.data.corpus import tokenizer_sample

    paragraphs = [f"Paragraph {i} of the corpus." for i in range(2000)]
    (tmp_path / "big.txt").write_text("\n\n".join(paragraphs) + "\n")
    sample = list(tokenizer_sample([str(tmp_path / "big.txt")], "text", budget=5000))
    assert 4000 <= sum(map(len, sample)) <= 5000 + len(paragraphs[-1])
    numbers = [int(s.split()[1]) for s in sample]
    assert max(numbers) > 1500 and min(numbers) < 500  # spread over the file, not its first paragraphs
    assert sample == list(tokenizer_sample([str(tmp_path / "big.txt")], "text", budget=5000))  # reproducible
    small = list(tokenizer_sample([str(tmp_path / "big.txt")], "text", budget=10 ** 9))
    assert len(small) == 2000  # under the budget: all of it
