"""A regression check for the fine-tuning defaults on small data (issue 15): a short real-data run with the
shipped defaults (only the thread count set) must beat the most-frequent-label baseline by a stated margin.
Before `min_steps` defaulted to 300, a set of 300 training sentences got 30 optimizer steps (batch 32, 3 epochs)
and stayed near the majority baseline; the measured sweep behind the default is in docs/benchmarks.md."""
from __future__ import annotations

import json
from collections import Counter

import pytest

MARGIN = 0.10  # accuracy points above the majority label on held-out sentences


@pytest.fixture(scope="module")
def speech_task(tmp_path_factory):
    from selfsup.data.austen import austen_speech_task

    return austen_speech_task(tmp_path_factory.mktemp("speech"), train_per_class=150, eval_per_class=100,
                              novels=["persuasion", "emma"])


def majority_accuracy(task: dict) -> float:
    train = [json.loads(line)["label"] for line in open(task["train"])]
    gold = [json.loads(line)["label"] for line in open(task["eval"])]
    top = Counter(train).most_common(1)[0][0]
    return sum(g == top for g in gold) / len(gold)


def test_defaults_beat_the_majority_label_by_a_margin_on_small_real_data(tuned_bert, speech_task, tmp_path):
    from selfsup.adapt.core.run import finetune

    m = finetune(tuned_bert, "sequence-classification", speech_task["train"], speech_task["eval"], tmp_path / "run",
                 overrides=["threads=1"])
    assert m["steps"] >= 300  # 300 sentences still get enough optimizer steps
    assert m["eval"]["accuracy"] >= majority_accuracy(speech_task) + MARGIN, m["eval"]
