"""Less padding in fine-tuning and inference: the length-grouped training order (`group_by_length`) is a seeded
permutation of the examples per epoch whose batches hold similar lengths, a resumed epoch draws the same order,
and length-sorted inference batches give back the predictions of unsorted inference, in input order."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from selfsup.adapt.core.evaluation import predict, run_eval
from selfsup.adapt.core.features import collate, encode
from selfsup.adapt.core.fit import EpochBatches
from selfsup.adapt.core.length_groups import feature_lengths, length_sorted_positions
from selfsup.adapt.core.options import FinetuneConfig
from selfsup.adapt.core.tasks import TaggedSentence, TextExample


def _lengths(n: int = 400, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(3.3, 0.6, n), 4, 128)]


def _padded_positions(batches: list[list[int]], lengths: list[int]) -> int:
    """Positions a right-padded batch holds beyond its examples' own tokens."""
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_length_grouped_epochs_are_seeded_permutations_of_similar_lengths():
    lengths = _lengths()
    grouped = EpochBatches(len(lengths), 32, 1, seed=5, lengths=lengths)
    first, second = list(grouped), list(grouped)
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(len(lengths)))  # every example once per epoch
        assert [len(b) for b in epoch] == [32] * 12 + [16]
    assert first != second  # each epoch its own order
    assert list(EpochBatches(len(lengths), 32, 1, seed=5, lengths=lengths)) == first  # a function of the seed
    resumed = EpochBatches(len(lengths), 32, 1, seed=5, lengths=lengths)
    resumed.epoch = 1  # what a resumed fit's sampler is set to: the killed run's next epoch, exactly
    assert list(resumed) == second
    assert list(EpochBatches(len(lengths), 32, 1, seed=6, lengths=lengths)) != first
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    assert longest in first[0]  # the longest batch first: running out of memory shows at the first step
    plain = list(EpochBatches(len(lengths), 32, 1, seed=5))
    assert _padded_positions(first, lengths) < 0.5 * _padded_positions(plain, lengths)
    # the batch order is shuffled, not long-to-short within each megabatch
    widths = [max(lengths[i] for i in b) for b in first[1:-1]]
    assert widths != sorted(widths, reverse=True)


def test_grouping_applies_to_token_sequences_only_and_is_the_default():
    assert FinetuneConfig().group_by_length is True
    assert feature_lengths([{"input_ids": [1, 2, 3]}, {"input_ids": [1]}]) == [3, 1]
    assert feature_lengths([{"x": torch.zeros(3)}]) is None  # images, clips: the plain random order
    assert length_sorted_positions([{"x": 1}, {"x": 2}]) == [0, 1]
    assert length_sorted_positions([{"input_ids": [1]}, {"input_ids": [1, 2]}, {"input_ids": [3]}]) == [1, 0, 2]


def _texts(n: int = 23) -> list[str]:
    words = "she said that the walk to the village had been very pleasant in the morning".split()
    rng = np.random.default_rng(1)
    return [" ".join(rng.choice(words, size=int(rng.integers(2, 40)))) for _ in range(n)]


@pytest.mark.parametrize("kind", ["sequence-classification", "token-classification"])
def test_sorted_inference_equals_unsorted_in_input_order(tiny_bert, kind):
    import transformers as tf

    from selfsup.adapt.core.models import load_tokenizer

    tok = load_tokenizer(tiny_bert)
    torch.manual_seed(0)
    texts = _texts()
    if kind == "token-classification":
        labels = ["O", "X"]
        model = tf.AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=2)
        examples = [TaggedSentence(t.split(), None, f"row {i}") for i, t in enumerate(texts)]
    else:
        labels = ["a", "b", "c"]
        model = tf.AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
        examples = [TextExample(t, None, None, f"row {i}") for i, t in enumerate(texts)]
    model.eval()
    with torch.no_grad():  # outputs that differ visibly between inputs, so a mix-up of the order would show
        model.classifier.weight.mul_(100)
    cfg = FinetuneConfig(eval_batch_size=5)
    feats = encode(kind, tok, examples, labels, 64, False, cfg)
    widths: list[int] = []
    model.register_forward_pre_hook(lambda m, args, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    sorted_preds: list = []
    run_eval(model, feats, examples, kind, labels, cfg, tok.pad_token_id, torch.device("cpu"),
             predictions=sorted_preds)
    one_by_one: list = []
    for f, ex in zip(feats, examples):  # a batch of one has no order and no padding
        run_eval(model, [{**f, "example": 0}], [ex], kind, labels, FinetuneConfig(eval_batch_size=1),
                 tok.pad_token_id, torch.device("cpu"), predictions=one_by_one)
    assert len(sorted_preds) == len(examples)
    first = [str(p["probabilities"])[:40] for p in one_by_one]
    assert len(set(first)) > len(first) // 2
    for got, want in zip(sorted_preds, one_by_one):
        if kind == "token-classification":
            assert got["words"] == want["words"] and got["tags"] == want["tags"]
            assert [x is None for x in got["probabilities"]] == [x is None for x in want["probabilities"]]
            assert np.allclose([x or 0 for x in got["probabilities"]], [x or 0 for x in want["probabilities"]],
                               atol=1e-4)
        else:
            assert got["label"] == want["label"]
            assert np.allclose(list(got["probabilities"].values()), list(want["probabilities"].values()), atol=1e-4)
    # no wasted positions beyond input-order batches: sorted batches pad far less
    lengths = [len(f["input_ids"]) for f in feats]
    in_order = sum(max(lengths[i:i + 5]) * len(lengths[i:i + 5]) for i in range(0, len(lengths), 5))
    sorted_batches = [b * len(ch) for b, ch in zip(widths[:5], [range(5)] * 4 + [range(3)])]
    assert sum(sorted_batches) < in_order
    assert max(widths[:5]) == max(lengths)  # padded to the batch's longest, never to max_length
    assert collate(feats[:1], tok.pad_token_id)["input_ids"].shape[1] == lengths[0]


def test_predict_of_a_file_keeps_input_order(tiny_bert, tmp_path):
    from selfsup.adapt.core.run import finetune

    texts = _texts(40)
    rows = [{"text": t, "label": "long" if len(t.split()) > 20 else "short"} for t in texts]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    finetune(tiny_bert, "sequence-classification", str(data), str(data), tmp_path / "run", max_steps=12,
             overrides=["threads=1", "batch_size=8", "max_length=64", "lr=3e-3"])
    batched = list(predict(tmp_path / "run" / "model", str(data), batch_size=4))
    # the reference: plain transformers, one text at a time, in the file's order
    import transformers as tf

    net = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    tok = tf.AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    with torch.no_grad():
        want = [torch.softmax(net(**tok(t, return_tensors="pt")).logits[0], -1).tolist() for t in texts]
    assert len(batched) == len(texts)
    for got, ref in zip(batched, want):
        assert np.allclose([got["probabilities"][net.config.id2label[k]] for k in range(len(ref))], ref, atol=1e-4)
    # a different model output per input: a mix-up of the order would show
    assert len({round(p["probabilities"]["long"], 5) for p in batched}) > len(texts) // 2
