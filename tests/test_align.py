"""`selfsup align`: MRR / top-k on hand-made embeddings; the mean shift recovers translations that sit in a
shifted copy of the source space; contextual word vectors average a word's pieces and occurrences; the verb runs
on the shipped English / German fortunes and FreeDict pairs; bad input is one line, exit 2, nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from selfsup.adapt.tools.align import (WordVectors, pca_2d, evaluate_alignment, ranks_of_gold, retrieval_metrics,
                                       translate_words, words_of)
from selfsup.errors import SelfsupError

DATA = Path(__file__).parent / "data" / "crosslingual"


def name(prefix: str, i: int) -> str:
    """Words of letters only (as `words_of` reads them): s + aa, ab, ..."""
    return f"{prefix}{chr(97 + i // 26)}{chr(97 + i % 26)}"


def test_mrr_and_top_k_on_a_hand_made_example():
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    candidates = np.array([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.0], [0.9, 1.0]])
    # query 0: cosines 0.995, 0.0995, -1, 0.669 -> order 0, 3, 1, 2; its gold {3} ranks 2nd
    # query 1: order 1, 3, 0, 2; gold {1} ranks 1st.  query 2: order 3, 0 / 1, ...; gold {2} ranks last (4th)
    ranks = ranks_of_gold(queries, candidates, [{3}, {1}, {2}])
    assert ranks.tolist() == [2, 1, 4]
    m = retrieval_metrics(ranks)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 4) / 3)
    assert m["top1"] == pytest.approx(1 / 3) and m["top5"] == 1.0 and m["pairs"] == 3
    assert ranks_of_gold(queries[:1], candidates, [{2, 3}]).tolist() == [2]  # the best-ranked gold answer counts


def test_the_mean_shift_recovers_translations_in_a_shifted_space():
    """Each language = its own large mean + the shared meanings: without the shift, cosine retrieval is ruled by
    the source mean's projection on the target words (hubs); shifting by the mean difference removes it."""
    rng = np.random.default_rng(0)
    meaning = rng.normal(size=(200, 16))
    src_vecs = meaning + 4 * rng.normal(size=16)
    tgt_vecs = meaning + 4 * rng.normal(size=16) + 0.05 * rng.normal(size=(200, 16))
    src = WordVectors([name("s", i) for i in range(200)], src_vecs, np.ones(200), src_vecs.mean(0))
    tgt = WordVectors([name("t", i) for i in range(200)], tgt_vecs, np.ones(200), tgt_vecs.mean(0))
    metrics, rows = evaluate_alignment(src, tgt, [(name("s", i), name("t", i)) for i in range(200)])
    assert metrics["with_shift"]["top1"] == 1.0 and metrics["without_shift"]["mrr"] < 0.2
    assert rows[0]["top5_with_shift"][0] == "taa" and rows[0]["rank_with_shift"] == 1
    assert translate_words("sad, sah unknown", src, tgt) == "tad tah [unknown]"
    with pytest.raises(SelfsupError, match="no pair has both words"):
        evaluate_alignment(src, tgt, [("nothing", "nichts")])


def test_words_are_letters_of_any_script():
    assert words_of("Die Häuser, 42 Straßen_und; it's") == ["die", "häuser", "straßen", "und", "it", "s"]


@pytest.fixture(scope="module")
def bilingual_bert(tmp_path_factory) -> Path:
    from test_adapt_heads import make_checkpoint

    texts = (DATA / "en.txt").read_text().splitlines() + (DATA / "de.txt").read_text().splitlines()
    return make_checkpoint(tmp_path_factory.mktemp("bilingual"), "bert", texts)


def test_align_runs_on_the_shipped_fortunes_and_dictionary(tmp_path, bilingual_bert):
    out = tmp_path / "align"
    res = run_cli("align", "--model", str(bilingual_bert), "--source", str(DATA / "en.txt"), "--target",
                  str(DATA / "de.txt"), "--dictionary", str(DATA / "dictionary.csv"), "--out", str(out),
                  "--min-count", "3", "--translate", "3")
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    for name in ("without_shift", "with_shift"):
        assert 0 < m[name]["mrr"] <= 1 and m[name]["pairs"] > 100 and m[name]["top1"] <= m[name]["top5"]
    assert m["with_shift"] != m["without_shift"] and m["target_words"] > 500
    assert (out / "alignment.png").stat().st_size > 10_000
    lines = (out / "translations.txt").read_text().splitlines()
    assert len(lines) == 3 * 4 - 1 and lines[0].startswith("source:") and lines[2].startswith("with the shift:")
    header = (out / "pairs.csv").read_text().splitlines()[0]
    assert header.startswith("source,gold,rank_without_shift,rank_with_shift")
    assert "MRR" in res.stdout


def test_align_refuses_bad_input_in_one_line(tmp_path, bilingual_bert):
    no_overlap = tmp_path / "none.csv"
    no_overlap.write_text("source,target\nxylophonist,xylophonspielerin\n")
    one_column = tmp_path / "one.csv"
    one_column.write_text("house\n")
    args = ["--model", str(bilingual_bert), "--source", str(DATA / "en.txt"), "--target", str(DATA / "de.txt")]
    cases = [(["--dictionary", str(no_overlap)], "no pair has both words in the corpora"),
             (["--dictionary", str(one_column)], "one.csv:1: expected two columns"),
             (["--dictionary", str(tmp_path / "nope.csv")], "no such file"),
             (["--dictionary", str(DATA / "dictionary.csv"), "--layer", "9"], "--layer: 9 out of range")]
    for extra, message in cases:
        out = tmp_path / "out"
        res = run_cli("align", *args, *extra, "--out", str(out))
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
            (extra, res.stderr)
        assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep")
    res = run_cli("align", *args, "--dictionary", str(DATA / "dictionary.csv"), "--out", str(mine))
    assert res.returncode == 2 and "not empty" in res.stderr and (mine / "keep.txt").read_text() == "keep"


def test_pca_projection_and_explained_variance_match_scikit_learn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)) * [5, 2, 1, 1, 1, 1], rng.normal(size=(30, 6)) + 1
    (pa, pb), share = pca_2d(a, b)
    ref = PCA(n_components=2).fit(np.concatenate([a, b]))
    assert np.allclose(share, ref.explained_variance_ratio_)
    got, want = np.concatenate([pa, pb]), ref.transform(np.concatenate([a, b]))
    assert np.allclose(np.abs(got), np.abs(want))  # the same axes, up to sign
