"""Prompt-based fine-tuning (`--method prompt`, PET / LM-BFF): templates and verbalizers are validated, the
verbalizer scores read the right positions of hand-made logits (masked and causal LM, single- and multi-token
words) and of a real LM's own logits, the classifier adds no parameter, a short fine-tune on real text lowers
the training loss, the saved model reloads with identical scores and predicts through the CLI, LM-BFF
demonstrations are the most similar example of each class (never the example itself) and are what gets
truncated, and bad inputs are one-line errors (exit 2)."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch

from conftest import run_cli
from selfsup.adapt.core.evaluation import evaluate_finetuned
from selfsup.adapt.core.features import collate
from selfsup.adapt.core.run import finetune
from selfsup.adapt.core.artifacts import load_finetuned
from selfsup.adapt.core.models import count_parameters, load_tokenizer
from selfsup.adapt.shared.prompt_inputs import (DemonstrationPool, PromptTokenizer, choose_demonstrations,
                                                fit_segments, share_budget)
from selfsup.adapt.shared.prompts import (PromptClassifier, append_continuations, build_spec, class_scores,
                                          continuation_positions, lm_kind_of, load_lm, mask_positions,
                                          parse_template, parse_verbalizer, read_positions, word_scores)
from selfsup.adapt.core.tasks import TextExample
from selfsup.errors import SelfsupError
from test_adapt_heads import make_checkpoint

FAST = ["threads=1", "max_length=64", "batch_size=16"]
LABELS = ["emma", "persuasion"]
HEROINES = "{persuasion: anne, emma: emma}"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, persuasion):
    torch.set_num_threads(1)
    texts = [t for t in persuasion.read_text().split("\n\n")[:300] if t.strip()]
    folder = tmp_path_factory.mktemp("ck")
    return {f: make_checkpoint(folder, f, texts) for f in ("bert", "roberta", "roformer", "gpt2")}


@pytest.fixture(scope="module")
def cue_task(tmp_path_factory, persuasion):
    """Real sentences of Persuasion, each with a planted cue word (Anne or Captain) that names its label."""
    d = tmp_path_factory.mktemp("cue")
    rng = random.Random(0)
    sentences = [s.strip() for p in persuasion.read_text().split("\n\n")[:300] for s in p.replace("\n", " ").split(".")
                 if len(s.split()) > 5][:200]
    rows = []
    for i, s in enumerate(sentences):
        label = "anne" if i % 2 else "captain"
        words = s.split()
        words.insert(rng.randrange(len(words)), label.capitalize())
        rows.append({"text": " ".join(words), "label": label})
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:160]))
    (d / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[160:]))
    return str(d / "train.jsonl"), str(d / "eval.jsonl")


def _examples():
    return [TextExample("Anne walked to Bath in the evening.", None, "persuasion", "a"),
            TextExample("Emma sat at Hartfield with Harriet and her father.", None, "emma", "b"),
            TextExample("Captain Wentworth wrote a letter.", None, "persuasion", "c")]


# ------------------------------------------------------------------------------------------- template

@pytest.mark.parametrize("template,kind,lm,expect", [
    ("{text} It was.", "sequence-classification", "mlm", "exactly one {mask}"),
    ("It was {mask}.", "sequence-classification", "mlm", "exactly one {text}"),
    ("{text} {mask} or {mask}", "sequence-classification", "mlm", "exactly one {mask}"),
    ("{text} It was {label}.", "sequence-classification", "mlm", "unknown placeholder {label}"),
    ("{text!r} It was {mask}.", "sequence-classification", "mlm", "unknown placeholder"),
    ("{text} It was {mask", "sequence-classification", "mlm", "template"),
    ("{text} {pair} {mask}", "sequence-classification", "mlm", "no {pair}"),
    ("{text} ? {mask}", "pair-classification", "mlm", "exactly one {pair}"),
    ("{text} It was {mask}.", "sequence-classification", "causal", "must end the template"),
    (42, "sequence-classification", "mlm", "template"),
])
def test_bad_templates_are_errors_naming_the_key(template, kind, lm, expect):
    with pytest.raises(SelfsupError) as e:
        parse_template(template, kind, lm)
    assert str(e.value).startswith("template:") and expect in str(e.value) and "\n" not in str(e.value)


def test_template_segments_keep_the_space_with_what_fills_it():
    t = parse_template("Review: {text} It was {mask}. {{sic}}", "sequence-classification", "mlm")
    assert t.segments == (("literal", "Review:"), ("text", " "), ("literal", " It was"), ("mask", " "),
                          ("literal", ". {sic}"))
    causal = parse_template("{text}\nLabel: {mask}  ", "sequence-classification", "causal")
    assert causal.segments[-1] == ("mask", " ")


# ----------------------------------------------------------------------------------------- verbalizer

def test_verbalizer_forms_and_errors(tmp_path):
    assert parse_verbalizer(None, LABELS) == {"emma": ["emma"], "persuasion": ["persuasion"]}
    assert parse_verbalizer(HEROINES, LABELS) == {"emma": ["emma"], "persuasion": ["anne"]}
    both = {"emma": ["emma", "harriet"], "persuasion": "anne", "northangerabbey": "catherine"}  # extra: ignored
    assert parse_verbalizer(both, LABELS) == {"emma": ["emma", "harriet"], "persuasion": ["anne"]}
    (tmp_path / "v.json").write_text(json.dumps({"emma": "emma", "persuasion": ["anne", "wentworth"]}))
    (tmp_path / "v.yaml").write_text("emma: emma\npersuasion: [anne]\n")
    assert parse_verbalizer(str(tmp_path / "v.json"), LABELS)["persuasion"] == ["anne", "wentworth"]
    assert parse_verbalizer(str(tmp_path / "v.yaml"), LABELS)["persuasion"] == ["anne"]
    assert parse_verbalizer({0: "bad", 1: "good"}, ["0", "1"]) == {"0": ["bad"], "1": ["good"]}
    for bad, expect in [({"emma": "emma"}, "label 'persuasion' has no word"),
                        ({"emma": [], "persuasion": "anne"}, "label 'emma'"),
                        (str(tmp_path / "missing.yaml"), "no such file"), ("[a, b]", "expected a mapping")]:
        with pytest.raises(SelfsupError) as e:
            parse_verbalizer(bad, LABELS)
        assert str(e.value).startswith("verbalizer:") and expect in str(e.value)


def test_verbalizer_words_must_be_known_and_distinct(ckpts):
    tok = load_tokenizer(ckpts["bert"])
    with pytest.raises(SelfsupError, match=r"verbalizer: label 'emma': word '中' becomes \[UNK\]"):
        build_spec(tok, "mlm", "sequence-classification", LABELS, None, {"emma": "中", "persuasion": "anne"})
    with pytest.raises(SelfsupError, match="verbalizer: word 'anne' is given to both 'emma' and 'persuasion'"):
        build_spec(tok, "mlm", "sequence-classification", LABELS, None, {"emma": "anne", "persuasion": "anne"})
    with pytest.raises(SelfsupError, match="template: spells out the mask token"):
        build_spec(tok, "mlm", "sequence-classification", LABELS, "{text} [MASK] {mask}", None)


# ---------------------------------------------------------------------- scores on hand-made logits

def test_word_scores_read_the_right_positions_on_hand_logits():
    """V = 4; a logit of ln 3 on one token and 0 elsewhere gives it p = 3/6 = 1/2, the others 1/6 each."""
    logits = torch.zeros(1, 6, 4)
    logits[0, 3, 2] = math.log(3)  # the first blank (position 3) favours token 2
    logits[0, 4, 1] = math.log(3)  # the second blank (position 4) favours token 1
    logits[0, 0, 0] = logits[0, 5, 3] = 50.0  # other positions: anything read there would be far off
    pieces = torch.tensor([[2, 0], [1, 1], [2, 1]])  # word 0 has one piece (padded), words 1 and 2 two
    counts = torch.tensor([1, 2, 2])
    at_blanks = read_positions(logits[:, None], torch.tensor([[3, 4]]))  # [1, 1, 2, 4]
    half, sixth = math.log(1 / 2), math.log(1 / 6)
    mlm = word_scores(at_blanks, pieces, counts, "mean")[0]
    assert torch.allclose(mlm, torch.tensor([half, (sixth + half) / 2, half]), atol=1e-6)
    causal = word_scores(at_blanks, pieces, counts, "sum")[0]
    assert torch.allclose(causal, torch.tensor([half, sixth + half, 2 * half]), atol=1e-6)
    # mask tokens are found where they are; causal blanks follow the last real token of a right-padded row
    ids = torch.tensor([[5, 9, 7, 9, 7, 0], [5, 7, 9, 9, 6, 0]])
    assert mask_positions(ids, 9, 2).tolist() == [[1, 3], [2, 3]]
    with pytest.raises(SelfsupError, match="mask token"):
        mask_positions(ids, 7, 2)
    assert continuation_positions(torch.tensor([3, 5]), 2).tolist() == [[2, 3], [4, 5]]


def test_class_score_is_logsumexp_over_its_words():
    words = torch.log(torch.tensor([[0.2, 0.3, 0.1]]))
    got = class_scores(words, torch.tensor([0, 0, 1]), 2)
    assert torch.allclose(got, torch.log(torch.tensor([[0.5, 0.1]])), atol=1e-6)


def test_append_continuations_teacher_forces_each_word():
    ids = torch.tensor([[5, 6, 7], [5, 6, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out, out_mask = append_continuations(ids, mask, torch.tensor([[8, 0], [3, 4]]), torch.tensor([1, 2]), pad_id=0)
    assert out.tolist() == [[[5, 6, 7, 8, 0], [5, 6, 7, 3, 4]], [[5, 6, 8, 0, 0], [5, 6, 3, 4, 0]]]
    assert out_mask.tolist() == [[[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]]


# --------------------------------------------------------------------------- scores of a real LM

def _net(path, lm_kind, verbalizer, template=None):
    tok = load_tokenizer(path)
    spec = build_spec(tok, lm_kind, "sequence-classification", LABELS, template, verbalizer)
    lm = load_lm(path, lm_kind, tok).eval()
    return PromptClassifier(lm, spec, tok.mask_token_id, tok.pad_token_id).eval(), PromptTokenizer(tok, spec), spec


@pytest.mark.parametrize("family,verbalizer", [("bert", HEROINES), ("roformer", HEROINES),
                                              ("roberta", "{persuasion: great, emma: [bad, terrible]}")])
def test_masked_lm_scores_are_the_lm_logits_at_the_masks(ckpts, family, verbalizer):
    net, prompts, spec = _net(ckpts[family], "mlm", verbalizer)
    batch = collate(prompts.encode_prompts(_examples(), LABELS, 64), prompts.pad_token_id, "cpu")
    with torch.no_grad():
        got = net(**batch).logits
        logp = net.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
    for b in range(len(_examples())):
        masks = (batch["input_ids"][b] == prompts.mask_token_id).nonzero()[:, 0].tolist()
        assert len(masks) == spec.max_pieces
        per_word = [sum(logp[b, masks[i], p].item() for i, p in enumerate(pieces)) / len(pieces)
                    for pieces in spec.pieces]
        for c in range(2):
            ref = torch.logsumexp(torch.tensor([s for s, k in zip(per_word, spec.word_class) if k == c]), 0)
            assert got[b, c].item() == pytest.approx(ref.item(), abs=1e-4)
    if family == "roberta":
        assert spec.max_pieces > 1  # " great" is several pieces for this tiny BPE: the multi-token path ran


def test_causal_lm_scores_are_teacher_forced_word_log_probabilities(ckpts):
    net, prompts, spec = _net(ckpts["gpt2"], "causal", HEROINES)
    assert sorted(len(p) for p in spec.pieces) == [1, 4]  # " anne" one piece, " emma" four
    feats = prompts.encode_prompts(_examples(), LABELS, 64)
    with torch.no_grad():
        got = net(**collate(feats, prompts.pad_token_id, "cpu")).logits
        for b, f in enumerate(feats):  # each prompt alone (no padding), each word appended, summed log-probs
            for c in range(2):
                pieces = spec.pieces[spec.word_class.index(c)]
                ids = torch.tensor([f["input_ids"] + pieces])
                logp = net.lm(input_ids=ids).logits.log_softmax(-1)[0]
                n = len(f["input_ids"])
                ref = sum(logp[n - 1 + i, p].item() for i, p in enumerate(pieces))
                assert got[b, c].item() == pytest.approx(ref, abs=1e-4)


def test_prompt_classifier_has_exactly_the_lm_parameters(ckpts):
    for family, kind in (("bert", "mlm"), ("gpt2", "causal")):
        net, _, _ = _net(ckpts[family], kind, HEROINES)
        lm_only = load_lm(ckpts[family], kind, load_tokenizer(ckpts[family]))
        trainable, total = count_parameters(net)
        assert trainable == total == count_parameters(lm_only)[1]
        assert all(name.startswith("lm.") for name, _ in net.named_parameters())
        assert not net.state_dict().keys() - {"lm." + k for k in lm_only.state_dict()}  # no saved buffer either


# --------------------------------------------------------------------------- fine-tune, save, reload

def test_prompt_finetune_lowers_the_loss_reloads_and_predicts(ckpts, cue_task, tmp_path):
    train, ev = cue_task
    m = finetune(ckpts["bert"], "sequence-classification", train, ev, tmp_path / "run", epochs=5, method="prompt",
                 overrides=FAST + ["lr=3e-3"])
    losses = [h["train_loss"] for h in m["history"]]
    assert losses[-1] < losses[0] - 0.08  # ln 2 = 0.69 at the start; ~0.54 after 5 epochs (seeds 0-2)
    assert m["method"] == "prompt" and m["trainable_parameters"] == m["total_parameters"]
    assert m["template"] == "{text} It was {mask}." and m["verbalizer"] == {"anne": ["anne"], "captain": ["captain"]}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(saved) >= {"eval", "history", "trainable_parameters", "total_parameters", "labels", "config"}
    model, prompts, info = load_finetuned(tmp_path / "run")
    assert isinstance(model, PromptClassifier) and info["method"] == "prompt" and not model.training
    again = evaluate_finetuned(tmp_path / "run", ev)
    assert again["eval"]["loss"] == pytest.approx(m["eval"]["loss"], abs=1e-5)
    assert again["eval"]["accuracy"] == m["eval"]["accuracy"]
    r = run_cli("predict", "--model", str(tmp_path / "run"), ev, "--set", "threads=1")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 40 and set(rows[0]["probabilities"]) == {"anne", "captain"}
    assert rows[0]["label"] == max(rows[0]["probabilities"], key=rows[0]["probabilities"].get)


def test_demonstrations_run_saves_its_pool_and_reloads_identically(ckpts, cue_task, tmp_path):
    train, ev = cue_task
    m = finetune(ckpts["roberta"], "sequence-classification", train, ev, tmp_path / "run", max_steps=3,
                 method="prompt", overrides=["threads=1", "batch_size=16", "max_length=128", "demonstrations=true",
                                             "template=Who is it? {mask} : {text}",
                                             "verbalizer={anne: anne, captain: wentworth}"])
    folder = tmp_path / "run" / "model"
    assert (folder / "demonstrations.jsonl").is_file() and (folder / "demonstrations.npy").is_file()
    assert m["demonstrations"] is True and m["template"] == "Who is it? {mask} : {text}"
    again = evaluate_finetuned(tmp_path / "run", ev)  # demonstrations chosen again with the source checkpoint
    assert again["eval"]["loss"] == pytest.approx(m["eval"]["loss"], abs=1e-5)


# ------------------------------------------------------------------------------------- demonstrations

def test_demonstrations_are_the_most_similar_of_each_class_never_the_query():
    pool = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.3, 1.0], [0.6, 0.8]])
    classes = [0, 0, 1, 1, 2]
    # as training queries (the pool itself): example 0's nearest class-0 example is itself -> 1 instead
    got = choose_demonstrations(pool, pool, classes, 3, exclude=range(5))
    assert got[0] == [1, 3, 4] and got[1] == [0, 3, 4] and got[3] == [1, 2, 4]
    assert got[4] == [1, 3, -1]  # the only class-2 example is the query itself: no demonstration of class 2
    new = choose_demonstrations(torch.tensor([[0.2, 1.0]]), pool, classes, 3)
    assert new == [[1, 3, 4]]


def test_demonstrations_follow_the_query_and_are_truncated_first(ckpts):
    tok = load_tokenizer(ckpts["bert"])
    spec = build_spec(tok, "mlm", "sequence-classification", LABELS, "{text} It was {mask}.", HEROINES, True)
    pool_examples = _examples()
    pool = DemonstrationPool(pool_examples, [1, 0, 1], torch.eye(3), embed=lambda exs: torch.tensor([[0.0, 1, 0]]))
    prompts = PromptTokenizer(tok, spec, pool)
    query = [TextExample("Anne and Captain Wentworth walked to Bath.", None, "persuasion", "q")]
    ids = prompts.encode_prompts(query, LABELS, 128)[0]["input_ids"]
    words = tok.decode(ids)
    # [CLS] query [SEP] demo of class emma (pool 1) [SEP] demo of class persuasion (pool 0 or 2: the nearest) [SEP]
    assert words.count("[SEP]") == 3 and words.startswith("[CLS] anne and captain wentworth")
    assert ids.count(tok.mask_token_id) == spec.max_pieces
    query_part, demo_emma, demo_persuasion, end = [part.strip() for part in words.split(" [SEP]")]
    assert query_part.endswith("it was " + " ".join(["[MASK]"] * spec.max_pieces) + ".")
    assert demo_emma.startswith("emma sat at hartfield") and demo_emma.endswith("it was emma.")
    assert demo_persuasion.endswith("it was anne.") and end == ""
    short = prompts.encode_prompts(query, LABELS, 30)[0]["input_ids"]
    assert len(short) <= 30 and short[:len(tok(query[0].text)["input_ids"]) - 1] == ids[:len(
        tok(query[0].text)["input_ids"]) - 1]  # the query is intact; the demonstrations were cut
    assert short.count(tok.mask_token_id) == spec.max_pieces
    # training: the examples are the pool; none is its own demonstration
    train = prompts.encode_prompts(pool_examples, LABELS, 128, exclude_self=True)
    first = [part.strip() for part in tok.decode(train[0]["input_ids"]).split(" [SEP]")]
    assert first[0].startswith("[CLS] anne walked to bath") and len(first) == 4
    assert not any(part.startswith("anne walked to bath") for part in first[1:])


def test_truncation_helpers():
    segs = [("fixed", [1, 2]), ("text", [3, 4, 5, 6, 7]), ("fixed", [8]), ("pair", [9, 10, 11])]
    cut = fit_segments(segs, 8)
    assert [ids for _, ids in cut] == [[1, 2], [3, 4, 5], [8], [9, 10]]  # longest first, from the end
    assert fit_segments(segs, 2) is None  # the fixed parts alone do not fit
    assert fit_segments(segs, 50) == segs
    assert share_budget([10, 3, 20], 100) == [10, 3, 20]
    assert share_budget([10, 3, 20], 21) == [9, 3, 9]


# ---------------------------------------------------------------------------------------- CLI errors

def test_bad_prompt_inputs_are_one_line_errors(ckpts, cue_task, tmp_path):
    train, ev = cue_task
    base = ["finetune", "--model", str(ckpts["bert"]), "--task", "sequence-classification", "--train", train,
            "--eval", ev, "--method", "prompt", "--max-steps", "1", "--set", "threads=1"]
    for extra, expect in [(["--set", "template={text} It was."], "template: needs exactly one {mask}"),
                          (["--set", "verbalizer={anne: anne}"], "verbalizer: label 'captain' has no word")]:
        r = run_cli(*base, "--out", str(tmp_path / "run"), *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and expect in r.stderr, r.stderr
        assert not (tmp_path / "run").exists()
    with pytest.raises(SelfsupError, match="--method prompt: supports"):
        finetune(ckpts["bert"], "sequence-regression", train, ev, tmp_path / "x", method="prompt")
    with pytest.raises(SelfsupError, match="--method prompt: model type 'bart' is not supported"):
        lm_kind_of("bart", "sequence-classification")
