"""Task data: sub-word label alignment on a hand example, readers, label sets, few-label subsets, the Austen
novel task, and every bad input as a one-line error (exit 2) naming the file and line."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from adapt_data import write_conll, write_squad
from adapt_tok import hand_tokenizer
from selfsup.adapt.core.features import encode
from selfsup.adapt.core.options import FinetuneConfig
from selfsup.adapt.core.kinds import columns_for
from selfsup.adapt.core.tasks import (IGNORE, TaggedSentence, TextExample, first_piece_index, first_piece_labels,
                                      join_words, read_task, subsample, token_word_ids)
from selfsup.data.austen import (austen_comma_task, austen_dialogue_share_task, austen_mark_task,
                                 austen_next_sentence_task, austen_novels_task, austen_speaker_qa_task,
                                 austen_speech_task, austen_truecase_task, quoted_spans, speaker_tag)
from selfsup.cli import main
from selfsup.errors import SelfsupError


def test_subword_labels_on_first_piece_only_hand_example():
    tok = hand_tokenizer()
    words = ["Elinor", "unpacked", "the", "trunks", "hastily", "."]
    tags = ["PROPN", "VERB", "DET", "NOUN", "ADV", "PUNCT"]
    text, spans = join_words(words)
    enc = tok(text, return_offsets_mapping=True)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert pieces == ["[CLS]", "elinor", "un", "##pack", "##ed", "the", "trunk", "##s", "hastily", ".", "[SEP]"]
    wids = token_word_ids(enc["offset_mapping"], enc.sequence_ids(), spans)
    assert wids == [None, 0, 1, 1, 1, 2, 3, 3, 4, 5, None]
    ids = {t: i for i, t in enumerate(sorted(set(tags)))}
    labels = first_piece_labels(wids, [ids[t] for t in tags])
    assert labels == [IGNORE, ids["PROPN"], ids["VERB"], IGNORE, IGNORE, ids["DET"], ids["NOUN"], IGNORE,
                      ids["ADV"], ids["PUNCT"], IGNORE]
    # predictions map back to words through each word's first piece
    assert first_piece_index(wids, len(words)) == [1, 2, 5, 6, 8, 9]
    feats = encode("token-classification", tok, [TaggedSentence(words, tags, "x:1")], sorted(set(tags)), 8, True,
                   FinetuneConfig())
    assert feats[0]["first_piece"] == [1, 2, 5, 6, None, None]  # truncation at 8 tokens drops the last words


def test_alignment_with_a_byte_level_tokenizer(austen_dir):
    from selfsup.data.tokenizer import TokenizerConfig, train_tokenizer

    text = (austen_dir / "persuasion.txt").read_text()[:20000].split("\n")
    tok = train_tokenizer(TokenizerConfig(kind="byte-level-bpe", vocab_size=400), text)
    words = "Sir Walter Elliot , of Kellynch-Hall , in Somersetshire".split()
    joined, spans = join_words(words)
    enc = tok(joined, return_offsets_mapping=True)
    wids = token_word_ids(enc["offset_mapping"], enc.sequence_ids(), spans)
    firsts = first_piece_index(wids, len(words))
    assert None not in firsts and firsts == sorted(firsts)
    for w, (a, b) in enumerate(spans):  # the pieces of each word cover exactly that word
        pieces = [i for i, x in enumerate(wids) if x == w]
        assert enc["offset_mapping"][pieces[-1]][1] == b and firsts[w] == pieces[0]


def test_readers_csv_tsv_jsonl_conll_squad(tmp_path):
    (tmp_path / "a.csv").write_text('sentence,y\n"Anne, at last, smiled.",pos\nHe frowned.,neg\n')
    ex = read_task(str(tmp_path / "a.csv"), "sequence-classification", columns_for("sequence-classification",
                   "sentence", None, "y"))
    assert [(e.text, e.label) for e in ex] == [("Anne, at last, smiled.", "pos"), ("He frowned.", "neg")]
    assert ex[1].where.endswith("a.csv:3")
    (tmp_path / "p.tsv").write_text("premise\thypothesis\tlabel\nA\tB\t1\nC\tD\t0\n")
    ex = read_task(str(tmp_path / "p.tsv"), "pair-classification", columns_for("pair-classification"))
    assert (ex[0].text, ex[0].pair, ex[0].label) == ("A", "B", "1")
    (tmp_path / "r.jsonl").write_text('{"text": "x", "label": 3.5}\n\n{"text": "y", "label": 1}\n')
    ex = read_task(str(tmp_path / "r.jsonl"), "sequence-regression", columns_for("sequence-regression"))
    assert [e.label for e in ex] == [3.5, 1.0]
    conll = write_conll(tmp_path / "t.conll", 3, 0)
    sents = read_task(str(conll), "token-classification", columns_for("token-classification"))
    assert len(sents) == 3 and all(len(s.words) == len(s.tags) for s in sents) and sents[0].tags[0] == "B-PER"
    squad = write_squad(tmp_path / "q.json", 2, 0)
    qa = read_task(str(squad), "extractive-qa", columns_for("extractive-qa"))
    assert all(ex.context[a:a + len(t)] == t for ex in qa for t, a in ex.answers)


def test_few_labels_subsets_are_seeded_and_stratified():
    ex = [TextExample(f"t{i}", None, "abc"[i % 3], f"f:{i}") for i in range(60)]
    a = subsample(ex, shots=4, seed=1)
    assert sorted(e.label for e in a) == sorted("aaaabbbbcccc")
    assert [e.text for e in a] == [e.text for e in subsample(ex, shots=4, seed=1)]
    assert [e.text for e in a] != [e.text for e in subsample(ex, shots=4, seed=2)]
    assert len(subsample(ex, fraction=0.25, seed=0)) == 15


def test_austen_novels_task_is_balanced_and_eval_is_never_in_the_unlabeled_text(tmp_path):
    info = austen_novels_task(tmp_path, train_per_class=30, eval_per_class=10,
                              novels=["persuasion", "emma", "northangerabbey"])
    train = [json.loads(x) for x in open(info["train"])]
    ev = [json.loads(x) for x in open(info["eval"])]
    assert len(train) == 90 and len(ev) == 30
    assert {r["label"] for r in ev} == {"persuasion", "emma", "northangerabbey"}
    unlabeled = "".join(p.read_text() for p in (tmp_path / "unlabeled").iterdir())
    assert all(r["text"] in unlabeled for r in train[:10])
    assert not any(r["text"] in unlabeled for r in ev)
    assert not {r["text"] for r in train} & {r["text"] for r in ev}


def test_quoted_spans_hand_example():
    para = 'She smiled. "I cannot agree with you, papa," said Emma, "you know I cannot.'
    assert quoted_spans(para) == [("She smiled.", False), ("I cannot agree with you, papa,", True),
                                  ("said Emma,", False), ("you know I cannot.", True)]


def test_austen_speech_task_labels_come_from_the_quotes_and_eval_is_unseen(tmp_path):
    info = austen_speech_task(tmp_path, train_per_class=40, eval_per_class=20, novels=["persuasion", "emma"])
    train = [json.loads(x) for x in open(info["train"])]
    ev = [json.loads(x) for x in open(info["eval"])]
    assert len(train) == 80 and len(ev) == 40
    assert sum(r["label"] == "speech" for r in ev) == 20
    assert not any('"' in r["text"] for r in train + ev)  # the label is never in the input
    assert all(len(r["text"].split()) >= 8 for r in train + ev)
    paragraphs = [" ".join(p.split()) for f in (tmp_path / "unlabeled").iterdir() for p in f.read_text().split("\n\n")]

    def inside_quotes(text: str) -> bool:  # an odd number of quotes before it in its paragraph
        para = next(p for p in paragraphs if text in p)
        return para[:para.index(text)].count('"') % 2 == 1

    assert all(inside_quotes(r["text"]) == (r["label"] == "speech") for r in train)
    assert not any(r["text"] in p for r in ev for p in paragraphs)


@pytest.mark.parametrize("mark,positive", [("?", "question"), ("!", "exclamation")])
def test_austen_mark_task_labels_come_from_the_final_punctuation_which_is_removed(tmp_path, mark, positive):
    info = austen_mark_task(tmp_path, mark, train_per_class=30, eval_per_class=15, novels=["emma", "persuasion"])
    train = [json.loads(x) for x in open(info["train"])]
    ev = [json.loads(x) for x in open(info["eval"])]
    assert Counter(r["label"] for r in train) == {positive: 30, "statement": 30}
    assert Counter(r["label"] for r in ev) == {positive: 15, "statement": 15}
    assert not any(r["text"][-1] in ".?!\"" or '"' in r["text"] for r in train + ev)  # the label is not in the input
    text = " ".join(" ".join(f.read_text().split()) for f in (tmp_path / "unlabeled").iterdir())
    for r in train[:20]:  # in the novel, each training sentence is followed by its label's mark
        at = text.index(r["text"]) + len(r["text"])
        assert text[at:at + 3].lstrip(" '\u2019)")[:1] == (mark if r["label"] == positive else ".")
    assert not any(r["text"] in text for r in ev)  # evaluation sentences come from unseen paragraphs
    with pytest.raises(SelfsupError, match="mark"):
        austen_mark_task(tmp_path / "x", ";")


def test_austen_comma_task_tags_the_words_a_comma_followed_and_removes_the_commas(tmp_path):
    from selfsup.adapt.core.tasks import read_conll

    info = austen_comma_task(tmp_path, train_sentences=50, eval_sentences=20, novels=["emma"])
    train, ev = read_conll(info["train"]), read_conll(info["eval"])
    assert len(train) == 50 and len(ev) == 20
    words = [w for s in train + ev for w in s.words]
    assert not any(c in w for w in words for c in ',;"')  # the label is not in the input
    assert all(set(s.tags) <= {"comma", "-"} and "comma" in s.tags[:-1] for s in train + ev)
    austen_novels_task(tmp_path / "n", train_per_class=1, eval_per_class=1, novels=["emma"])
    text = " ".join((tmp_path / "n" / "unlabeled" / "emma.txt").read_text().split())  # Emma's training part
    s = train[0]  # the tagged words, with commas put back where tagged, occur in the novel
    rebuilt = " ".join(w + ("," if t == "comma" else "") for w, t in zip(s.words, s.tags))
    assert rebuilt.split(",")[0] in " ".join(text.split())


def test_austen_truecase_task_tags_the_words_the_author_capitalized_and_lowercases_them(tmp_path):
    from selfsup.adapt.core.tasks import read_conll

    info = austen_truecase_task(tmp_path, train_sentences=60, eval_sentences=20, novels=["persuasion"])
    train, ev = read_conll(info["train"]), read_conll(info["eval"])
    assert len(train) == 60 and len(ev) == 20
    words = [w for s in train + ev for w in s.words]
    assert all(w == w.lower() for w in words) and not any(c in w for w in words for c in ',;."')
    assert all(set(s.tags) <= {"Cap", "-"} and s.tags[0] == "Cap" for s in train + ev)  # a sentence starts capitalized
    tagged = {(w, t) for s in train for w, t in zip(s.words[1:], s.tags[1:])}
    assert ("wentworth", "Cap") in tagged or ("anne", "Cap") in tagged  # names inside a sentence
    assert ("the", "-") in tagged
    again = austen_truecase_task(tmp_path / "again", train_sentences=60, eval_sentences=20, novels=["persuasion"])
    assert Path(again["train"]).read_text() == Path(info["train"]).read_text()  # reproducible from its seed


def test_austen_next_sentence_task_pairs_follow_in_the_text_or_come_from_another_paragraph(tmp_path):
    info = austen_next_sentence_task(tmp_path, train_per_class=40, eval_per_class=20, novels=["persuasion"])
    kind = "pair-classification"
    train, ev = (read_task(info[p], kind, columns_for(kind)) for p in ("train", "eval"))
    assert Counter(e.label for e in train) == {"next": 40, "random": 40} and len(ev) == 40
    text = " ".join(" ".join(open(p).read().split()) for p in Path(info["unlabeled"]).glob("*.txt")).replace('"', " ")
    text = " ".join(text.split())
    for e in train:
        joined = f"{e.text} {e.pair}"
        assert (joined in text) == (e.label == "next"), e  # a next pair is adjacent in the training text
    assert not {e.text for e in ev} & {e.text for e in train}  # evaluation sentences come from later paragraphs
    again = austen_next_sentence_task(tmp_path / "again", train_per_class=40, eval_per_class=20, novels=["persuasion"])
    assert Path(again["train"]).read_text() == Path(info["train"]).read_text()  # reproducible from its seed


def test_austen_dialogue_share_is_the_quoted_share_of_the_paragraphs_words(tmp_path):
    info = austen_dialogue_share_task(tmp_path, train_examples=60, eval_examples=30, novels=["persuasion"])
    kind = "sequence-regression"
    train, ev = (read_task(info[p], kind, columns_for(kind)) for p in ("train", "eval"))
    assert len(train) == 60 and len(ev) == 30 and all(0 <= e.label <= 1 for e in train + ev)
    assert '"' not in " ".join(e.text for e in train)  # the quotes that define the label are removed
    labels = {e.label for e in train}
    assert 0.0 in labels and 1.0 in labels and any(0 < x < 1 for x in labels)  # narration, speech and mixed
    # the label recomputed from the novel's own paragraph, for a mixed one
    from selfsup.data.austen import _novel_paragraphs

    paras = [" ".join(p) for p in _novel_paragraphs("persuasion")]
    mixed = next(e for e in train if 0 < e.label < 1)
    source = next(p for p in paras if " ".join(t for t, _ in quoted_spans(p)) == mixed.text)
    inside = sum(len(t.split()) for t, q in quoted_spans(source) if q)
    assert mixed.label == round(inside / len(mixed.text.split()), 4)
    assert not {e.text for e in ev} & {e.text for e in train}


def test_speaker_tag_finds_the_name_in_the_narration_not_a_function_word():
    assert speaker_tag(", said Mr. Knightley, laughing, ") == ("Mr. Knightley", 7)
    assert speaker_tag(" Emma replied") == ("Emma", 1)
    assert speaker_tag(" cried Elizabeth. Then she went") == ("Elizabeth", 7)
    assert speaker_tag(" Then Emma said") is None  # "Then Emma" is not a name, and the match has consumed "Emma"
    assert speaker_tag(" she said, smiling. ") is None


def test_austen_speaker_qa_answers_are_tagged_names_in_the_context(tmp_path):
    info = austen_speaker_qa_task(tmp_path, train_examples=40, eval_examples=10, novels=["emma"])
    kind = "extractive-qa"
    train, ev = (read_task(info[p], kind, columns_for(kind)) for p in ("train", "eval"))
    assert len(train) == 40 and len(ev) == 10
    for e in train + ev:
        (text, start), = e.answers
        assert e.context[start:start + len(text)] == text and text[0].isupper()
        assert e.context.count('"') >= 1 and e.question == "Who is speaking?"
        near = e.context[max(0, start - 11):start] + " " + e.context[start + len(text):start + len(text) + 11]
        assert any(v in near for v in ("said", "cried", "replied", "answered", "returned", "continued", "added",
                                       "observed", "exclaimed")), (near, text)
    assert "Emma" in {e.answers[0][0] for e in train}
    assert not {e.context for e in ev} & {e.context for e in train}
