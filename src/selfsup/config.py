"""Typed, validated configuration: dataclasses filled from YAML dicts.

Hand-written (about 100 lines) because the chosen stack has no schema library; every error names the dotted
key, e.g. `train.lr: must be > 0, got -1.0`.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union

from selfsup.errors import SelfsupError


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, doc: str = "") -> Any:
    """A dataclass field with numeric bounds checked on load."""
    return dataclasses.field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc})


def type_name(tp: Any) -> str:
    """A type hint as error messages and the key reference (docs/recipe-keys.md) write it."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except SelfsupError:
                continue
        raise SelfsupError(f"{key}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise SelfsupError(f"{key}: must be one of {type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SelfsupError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise SelfsupError(f"{key}: expected {type_name(tp)}, got {value!r}")


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    if value is None or not isinstance(value, (int, float)):
        return
    for name, op, word in (("ge", float.__ge__, ">="), ("gt", float.__gt__, ">"),
                           ("le", float.__le__, "<="), ("lt", float.__lt__, "<")):
        bound = meta.get(name)
        if bound is not None and not op(float(value), float(bound)):
            raise SelfsupError(f"{key}: must be {word} {bound}, got {value!r}")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types with the dotted key."""
    where = prefix or "recipe"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SelfsupError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            known = ", ".join(sorted(fields))
            raise SelfsupError(f"{prefix + '.' if prefix else ''}{k}: unknown key (known: {known})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _coerce(data[name], hints[name], key)
            _check_bounds(value, f.metadata, key)
            kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except SelfsupError as e:
            raise SelfsupError(f"{prefix + '.' if prefix else ''}{e}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (for config.yaml)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    return obj


@functools.lru_cache(maxsize=1)
def _yaml12_loader() -> type:
    """A SafeLoader whose only booleans are true / false (YAML 1.2), made once on first use."""
    import re

    import yaml

    loader = type("Yaml12SafeLoader", (yaml.SafeLoader,), {})
    loader.yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    return loader


def yaml_load(text: str) -> Any:
    """`yaml.safe_load` with YAML 1.2 booleans: only true/false are booleans, so yes / no / on / off stay words
    (a verbalizer `{positive: yes, negative: no}` means the words)."""
    import yaml

    return yaml.load(text, Loader=_yaml12_loader())  # noqa: S506 - a SafeLoader subclass
