"""Downstream text tasks: fine-tune any checkpoint (a selfsup run or a local HF folder) with a task head,
evaluate, predict, run GLUE-style suites, extract contextual embeddings.

Task kinds: sequence-classification, sequence-regression, pair-classification, token-classification,
extractive-qa. Heavy imports (torch, transformers) happen inside the functions.
"""
from __future__ import annotations

TASK_KINDS = ("sequence-classification", "sequence-regression", "pair-classification", "token-classification",
              "extractive-qa")


def finetune(*args, **kwargs):
    from selfsup.adapt.finetune import finetune as _f

    return _f(*args, **kwargs)


def evaluate_finetuned(*args, **kwargs):
    from selfsup.adapt.finetune import evaluate_finetuned as _f

    return _f(*args, **kwargs)
