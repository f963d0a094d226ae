"""What every recipe key means, written from the schemas themselves so it cannot drift from them.

`commented_yaml(recipe)` is a resolved recipe as YAML with each key's meaning and default as a trailing comment
(`selfsup recipes NAME`, `selfsup pretrain ... --print-config`); it loads back as the same recipe.
`reference_markdown(...)` is docs/recipe-keys.md (`selfsup recipes --reference`): one table per schema, with
type, bounds, default and meaning.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Iterable, Sequence

import yaml

from selfsup.config import type_name
from selfsup.recipes import Recipe, TrainConfig

REFERENCE_COMMAND = "selfsup recipes --reference > docs/recipe-keys.md"
_NO_DEFAULT = object()


def flow(value: Any) -> str:
    """One value as a single line of YAML (flow style; strings quoted only where YAML needs it)."""
    text = yaml.safe_dump([value], default_flow_style=True, width=float("inf"), sort_keys=False).strip()
    return text[1:-1]  # the list's brackets


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_DEFAULT


def field_doc(f: dataclasses.Field) -> str:
    return " ".join(str(f.metadata.get("doc") or "").split())


def bounds(f: dataclasses.Field) -> str:
    """`>= 0, < 1` from a `bounded(...)` field's metadata."""
    signs = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
    return ", ".join(f"{sign} {f.metadata[k]:g}" for k, sign in signs if f.metadata.get(k) is not None)


def _comment(f: dataclasses.Field, hint: Any) -> str:
    default = field_default(f)
    parts = [field_doc(f)] if field_doc(f) else []
    if typing.get_origin(hint) is typing.Literal:
        parts.append(f"one of {', '.join(flow(choice) for choice in typing.get_args(hint))}")
    if default is not _NO_DEFAULT and not dataclasses.is_dataclass(default):
        parts.append(f"default {flow(default)}")
    return f"  # {'; '.join(parts)}" if parts else ""


def commented_fields(obj: Any, indent: int = 0) -> list[str]:
    """YAML lines of a schema instance: `key: value  # meaning; default X`, nested sections indented."""
    pad, lines = " " * indent, []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            doc = field_doc(f)
            lines.append(f"{pad}{f.name}:" + (f"  # {doc}" if doc else ""))
            lines += commented_fields(value, indent + 2) or [f"{pad}  {{}}"]
        else:
            lines.append(f"{pad}{f.name}: {flow(value)}{_comment(f, hints[f.name])}")
    return lines


def commented_yaml(recipe: Recipe) -> str:
    """The resolved recipe, every key of its schemas (defaults included), each with its meaning and default."""
    lines = [f"description: {flow(recipe.description)}",
             "objective:  # the method and its options",
             f"  name: {flow(recipe.name)}  # the method (`selfsup recipes` lists the built-in recipes)"]
    lines += commented_fields(recipe.objective, 2)
    for name, obj, doc in (("model", recipe.model, "the backbone: type and sizes"),
                           ("data", recipe.data, "how raw data becomes examples"),
                           ("train", recipe.train, "the engine's settings (every method)")):
        body = commented_fields(obj, 2)
        lines += [f"{name}:  # {doc}", *(body or ["  {}"])]
    return "\n".join(lines) + "\n"


def keys_table(cls: type, prefix: str = "") -> list[str]:
    """A markdown table of a schema's keys (nested sections as dotted keys): key, type, default, meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += _rows(cls, prefix)
    return rows


def _rows(cls: type, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += _rows(tp, key + ".")
            continue
        default = field_default(f)
        kind = type_name(tp) + (f" ({bounds(f)})" if bounds(f) else "")
        shown = "required" if default is _NO_DEFAULT else f"`{flow(default)}`"
        out.append(f"| `{key}` | {_cell(kind)} | {_cell(shown)} | {_cell(field_doc(f))} |")
    return out


def _summary(cls: type) -> str:
    """The first paragraph of an objective's docstring (or its module's): the method and its paper."""
    import sys

    doc = cls.__doc__ or sys.modules[cls.__module__].__doc__ or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _grouped(items: Iterable[tuple[str, type]]) -> list[tuple[list[str], type]]:
    """[(names, schema)] with the names that share one schema class together, in first-seen order."""
    groups: dict[int, tuple[list[str], type]] = {}
    for name, cls in items:
        groups.setdefault(id(cls), ([], cls))[0].append(name)
    return list(groups.values())


def reference_markdown(finetune: Sequence[tuple[str, str, type]] = ()) -> str:
    """docs/recipe-keys.md: every pretraining recipe section per schema, then the `finetune --set` keys
    (`finetune`: (title, text, schema) for the shared keys and each method's own)."""
    from selfsup.registry import backbone_names, get_backbone, get_objective, objective_names

    objectives = [(name, get_objective(name)) for name in objective_names()]
    lines = ["# Recipe keys", "",
             f"Generated from the schemas by `{REFERENCE_COMMAND}`; do not edit by hand (a test compares it).",
             "`selfsup recipes NAME` prints one recipe with every key, its meaning and its default; "
             "`--set section.key=value` overrides a key on `selfsup pretrain`, `--set key=value` on "
             "`selfsup finetune`.",
             "", "A recipe has five sections: `description` (one line), `objective` (the method: `name` and its "
             "options), `model` (the backbone: `type` and sizes), `data` and `train`. The objective chooses the "
             "schema of `objective` and `data`, `model.type` the schema of `model`.", "",
             "## train (every recipe)", "", *keys_table(TrainConfig, "train."), ""]
    lines += ["## objective (one schema per method)", ""]
    for name, cls in objectives:
        backbone = f", default `model.type: {cls.default_backbone}`" if cls.default_backbone else ""
        lines += [f"### objective.name: {name}", "", f"{_summary(cls)} A {cls.modality} method{backbone}.", ""]
        lines += keys_table(cls.Options, "objective.") if dataclasses.fields(cls.Options) else ["(no options)"]
        lines.append("")
    lines += ["## model (one schema per backbone type)", ""]
    for names, cfg in _grouped((name, get_backbone(name).Config) for name in backbone_names()):
        lines += [f"### model.type: {', '.join(names)}", "", *keys_table(cfg, "model."), ""]
    lines += ["## data (one schema per kind of data)", ""]
    for names, cfg in _grouped((name, cls.data_config_class()) for name, cls in objectives):
        lines += [f"### data for {', '.join(names)}", "", *keys_table(cfg, "data."), ""]
    if finetune:
        lines += ["## selfsup finetune --set", ""]
        for title, text, cfg in finetune:
            lines += [f"### {title}", "", *([text, ""] if text else [])]
            lines += keys_table(cfg) if dataclasses.fields(cfg) else ["(no keys of its own)"]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
