"""Model cards: the `README.md` of every exported model folder (pretrained `model/`, `exports/step-N/`, a
fine-tuned seed's `model/`) — what was trained, on what, how well, the command that made it, and how to load
it — in the Hugging Face model-card layout (YAML metadata block, then Markdown), so the hub and people read it.
Written here: transformers' `ModelCard` is deprecated and takes no selfsup facts."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Mapping

CARD = "README.md"
PEFT_CLASSES = {"SEQ_CLS": "ForSequenceClassification", "TOKEN_CLS": "ForTokenClassification",
                "QUESTION_ANS": "ForQuestionAnswering", "CAUSAL_LM": "ForCausalLM",
                "FEATURE_EXTRACTION": "ForFeatureExtraction"}


_command: list[str] | None = None  # the CLI's arguments while `selfsup.cli.main` runs


def set_invocation(argv: list[str] | None) -> None:
    """Called by `selfsup.cli.main` with its arguments (and None when it returns)."""
    global _command
    _command = None if argv is None else list(argv)


def invocation() -> str | None:
    """The `selfsup ...` command line being run, or None outside the CLI (the Python API)."""
    return None if _command is None else "selfsup " + shlex.join(_command)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v[:12])) + (f", … ({len(v)})" if len(v) > 12 else "")
    return str(v)


def loading_snippet(folder: Path, location: Path | None = None, labels: list[str] | None = None) -> str:
    """Python that loads the folder (found at `location` once in place): the transformers class its
    config.json names, else selfsup's own format."""
    where = location or folder
    try:
        adapter = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        adapter = None
    if isinstance(adapter, dict):
        cls = "AutoPeftModel" + PEFT_CLASSES.get(str(adapter.get("task_type")), "")
        head = ""
        if labels and adapter.get("task_type") in ("SEQ_CLS", "TOKEN_CLS"):  # the base config has no labels
            head = (f",\n    id2label={dict(enumerate(labels))!r},\n    label2id={ {l: i for i, l in enumerate(labels)}!r}")
        return (f'from peft import {cls}\n\nmodel = {cls}.from_pretrained(  # loads the base model too\n'
                f'    "{where}"{head})')
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    arch = (config.get("architectures") or [None])[0]
    if arch and config.get("model_type"):
        has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
        has_processor = (folder / "preprocessor_config.json").is_file()  # image classifiers
        lines = [f"from transformers import {arch}" + (", AutoTokenizer" if has_tokenizer else "")
                 + (", AutoImageProcessor" if has_processor else ""), "",
                 f'model = {arch}.from_pretrained("{where}")']
        if has_tokenizer:
            lines.append(f'tokenizer = AutoTokenizer.from_pretrained("{where}")')
        if has_processor:
            lines += [f'processor = AutoImageProcessor.from_pretrained("{where}")',
                      "# images: a list of PIL images or (H, W, C) / (C, H, W) uint8 arrays",
                      "# logits = model(**processor(images, return_tensors=\"pt\")).logits",
                      "# labels = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]"]
        return "\n".join(lines)
    return f'# selfsup format (model.safetensors + config.json): read by selfsup verbs, e.g. --model {where}'


def model_card(folder: Path, *, title: str, summary: str, facts: Mapping[str, Any],
               metrics: Mapping[str, Any] | None = None, command: str | None = None,
               tags: tuple[str, ...] = (), location: Path | None = None, labels: list[str] | None = None) -> str:
    """The card's text (pure: reads only `folder/config.json` for the loading snippet)."""
    head = ["---", "library_name: transformers" if (folder / "config.json").is_file() else "library_name: selfsup",
            "tags:", *[f"- {t}" for t in ("selfsup", *tags)], "---", "", f"# {title}", "", summary, ""]
    body = ["## What it is", "", "| | |", "|---|---|",
            *[f"| {k} | {_value(v)} |" for k, v in facts.items() if v is not None and v != ""], ""]
    shown = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if shown:
        body += ["## Results", "", "| metric | value |", "|---|---|", *[f"| {k} | {_value(v)} |" for k, v in shown.items()],
                 ""]
    body += ["## How it was made", "", "```bash", command or "# made with the selfsup Python API", "```", "",
             "## Load it", "", "```python", loading_snippet(folder, location, labels), "```", ""]
    return "\n".join(head + body)


def write_model_card(folder: str | Path, **kwargs: Any) -> Path:
    """Write `folder/README.md` (atomically); `command` defaults to this process's CLI invocation."""
    from selfsup.fileio import atomic_write_text

    folder = Path(folder)
    kwargs.setdefault("command", invocation())
    path = folder / CARD
    atomic_write_text(path, model_card(folder, **kwargs))
    return path
