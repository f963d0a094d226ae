"""Task kinds: one table of everything that differs between them.

A kind names its modality, the default columns of its files, the transformers Auto class of its head, the
metric accumulator that scores it (`selfsup.metrics`), the main metric (what `--seeds` summaries, suites and
best-epoch selection use) and whether its labels form a class set read from the training file. Every other
module asks this table instead of comparing kind names. A new kind (audio, tables) is one row here plus its
reader in `tasks.py` (or its own module, as `images.py` and `audio.py`) and its scoring in `evaluation.py`.
"""
from __future__ import annotations

import dataclasses

from selfsup.errors import SelfsupError


@dataclasses.dataclass(frozen=True)
class Columns:
    text: str = "text"
    pair: str | None = None
    label: str = "label"


@dataclasses.dataclass(frozen=True)
class TaskKind:
    name: str
    modality: str  # "text" | "image" | "speech" | "table"
    columns: Columns  # default column names of the task files
    auto_class: str | None  # transformers Auto class of the head (text and speech kinds)
    metric: str  # class name in selfsup.metrics
    main_metric: str  # higher is better for every kind
    class_labels: bool  # labels are a class set taken from the training file
    sequence_level: bool  # one prediction per example (not per token / span)
    pair: bool = False  # examples carry a second text
    # fewest optimizer steps when neither epochs nor min_steps is given; None: options.DEFAULT_MIN_STEPS (300).
    # Audio's 600: speaker ID on 320 clips gained 10 points from 300 to 600 steps (bench/small_data_kinds.py)
    min_steps: int | None = None


KINDS: dict[str, TaskKind] = {k.name: k for k in (
    TaskKind("sequence-classification", "text", Columns("text", None, "label"),
             "AutoModelForSequenceClassification", "ClassificationMetrics", "accuracy", True, True),
    TaskKind("sequence-regression", "text", Columns("text", None, "label"),
             "AutoModelForSequenceClassification", "RegressionMetrics", "pearson", False, True),
    TaskKind("pair-classification", "text", Columns("premise", "hypothesis", "label"),
             "AutoModelForSequenceClassification", "ClassificationMetrics", "accuracy", True, True, pair=True),
    TaskKind("token-classification", "text", Columns("tokens", None, "tags"),
             "AutoModelForTokenClassification", "TaggingMetrics", "token_accuracy", True, False),
    TaskKind("extractive-qa", "text", Columns("context", "question", "answers"),
             "AutoModelForQuestionAnswering", "QAMetrics", "f1", False, False, pair=True),
    TaskKind("image-classification", "image", Columns("image", None, "label"),
             None, "ClassificationMetrics", "accuracy", True, True),
    TaskKind("audio-classification", "speech", Columns("path", None, "label"),
             "AutoModelForAudioClassification", "ClassificationMetrics", "accuracy", True, True, min_steps=600),
    TaskKind("table-classification", "table", Columns("features", None, "label"),
             None, "ClassificationMetrics", "accuracy", True, True),
)}

TASK_KINDS: tuple[str, ...] = tuple(KINDS)
TEXT_KINDS: tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.modality == "text")
SPEECH_KINDS: tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.modality == "speech")
CLASSIFICATION_KINDS: tuple[str, ...] = tuple(k for k, v in KINDS.items()
                                              if v.modality == "text" and v.class_labels and v.sequence_level)


def task_kind(name: str) -> TaskKind:
    """The kind called `name`; an unknown name is a one-line error listing the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise SelfsupError(f"--task: unknown kind {name!r} (known: {', '.join(TASK_KINDS)})") from None


def main_metric(kind: str) -> str:
    return task_kind(kind).main_metric


def columns_for(kind: str, text: str | None = None, pair: str | None = None, label: str | None = None) -> Columns:
    d = task_kind(kind).columns
    return Columns(text or d.text, pair or d.pair, label or d.label)
