"""The Python API mirrors the CLI (`selfsup.finetune`, `evaluate`, `predict`, ...) and takes data in memory
(a list of dicts, a pandas DataFrame, a `datasets.Dataset`) as well as files, with the same results."""
from __future__ import annotations

import json

import pytest
import torch

import selfsup
from selfsup.data.austen import austen_novels_task
from selfsup.errors import SelfsupError
from test_adapt_heads import make_checkpoint

FAST = ["threads=1", "max_length=32", "batch_size=16", "dropout=0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, persuasion):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("api")
    texts = [t for t in persuasion.read_text().split("\n\n")[:200] if t.strip()]
    bert = make_checkpoint(d / "ck", "bert", texts)
    task = austen_novels_task(d / "task", train_per_class=24, eval_per_class=8, novels=["persuasion", "emma"])
    rows = {k: [json.loads(line) for line in open(task[k])] for k in ("train", "eval")}
    return d, bert, task, rows


def test_in_memory_rows_train_exactly_like_the_file(setup, tmp_path):
    import pandas as pd
    from datasets import Dataset

    _, bert, task, rows = setup
    from_file = selfsup.finetune(bert, "sequence-classification", task["train"], task["eval"], tmp_path / "file",
                                 max_steps=3, overrides=FAST)
    as_dicts = selfsup.finetune(bert, "sequence-classification", rows["train"], rows["eval"], tmp_path / "dicts",
                                max_steps=3, overrides=FAST)
    as_frame = selfsup.finetune(bert, "sequence-classification", pd.DataFrame(rows["train"]),
                                Dataset.from_list(rows["eval"]), tmp_path / "frame", max_steps=3, overrides=FAST)
    for m in (as_dicts, as_frame):
        assert m["eval"] == pytest.approx(from_file["eval"])
        assert m["history"][-1]["train_loss"] == pytest.approx(from_file["history"][-1]["train_loss"])


def test_evaluate_and_predict_take_rows_too(setup, tmp_path):
    _, bert, task, rows = setup
    run = tmp_path / "run"
    selfsup.finetune(bert, "sequence-classification", task["train"], task["eval"], run, max_steps=2, overrides=FAST)
    assert selfsup.evaluate(run, rows["eval"])["eval"] == selfsup.evaluate(run, task["eval"])["eval"]
    preds = selfsup.predict(run, [r["text"] for r in rows["eval"][:3]])  # plain strings are texts
    assert len(preds) == 3 and set(preds[0]["probabilities"]) == {"emma", "persuasion"}
    (tmp_path / "new.txt").write_text("Anne smiled.\n\nHow very kind of you!\n")  # plain text lines, as --help says
    from_file = selfsup.predict(run, str(tmp_path / "new.txt"))
    assert [p["label"] for p in from_file] == [p["label"] for p in selfsup.predict(run, ["Anne smiled.",
                                                                                         "How very kind of you!"])]


def test_bad_rows_are_one_line_errors(setup, tmp_path):
    _, bert, task, rows = setup
    with pytest.raises(SelfsupError, match=r"<data>\[1\]: no column 'text'"):
        selfsup.finetune(bert, "sequence-classification", [rows["train"][0], {"body": "x", "label": "emma"}],
                         task["eval"], tmp_path / "a", max_steps=1, overrides=FAST)
    with pytest.raises(SelfsupError, match=r"<data>\[0\]: a row must be a dict"):
        selfsup.finetune(bert, "sequence-classification", [42], task["eval"], tmp_path / "b", overrides=FAST)
    with pytest.raises(SelfsupError, match="empty"):
        selfsup.finetune(bert, "sequence-classification", [], task["eval"], tmp_path / "c", overrides=FAST)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_the_api_names_stay_functions_after_every_module_is_imported():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(selfsup.__path__, "selfsup."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    for name in selfsup.__all__:
        assert callable(getattr(selfsup, name)), name
    adapt = importlib.import_module("selfsup.adapt")
    for name in ("finetune", "evaluate_finetuned", "predict", "load_shared", "use_task"):
        assert callable(getattr(adapt, name)), name
