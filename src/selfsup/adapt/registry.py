"""Name -> adaptation method (`selfsup finetune --method NAME`), as lazy as the objectives' registry: each
built-in method is listed by module and imported on first use; a plug-in registers with `register_method`.
The CLI's `--method` choices and help, the option checks and the loader of a fine-tuned folder (by the method
name stored in its task.json) all ask this table."""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, TypeVar

from selfsup.errors import SelfsupError

T = TypeVar("T")

METHOD_MODULES: dict[str, str] = {
    "full": "selfsup.adapt.methods.full",
    "linear": "selfsup.adapt.methods.linear",
    "lora": "selfsup.adapt.methods.lora",
    "adapter": "selfsup.adapt.methods.adapter",
    "prefix": "selfsup.adapt.methods.prefix",
    "soft-prompt": "selfsup.adapt.methods.soft_prompt",
    "bitfit": "selfsup.adapt.methods.bitfit",
    "ia3": "selfsup.adapt.methods.ia3",
    "prompt": "selfsup.adapt.methods.prompt",
    "pet": "selfsup.adapt.methods.pet",
    "early-exit": "selfsup.adapt.methods.early_exit",
}
METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[T], T]:
    def wrap(cls: T) -> T:
        METHODS[name] = cls  # type: ignore[assignment]
        cls.name = name  # type: ignore[attr-defined]
        return cls
    return wrap


def method_names() -> list[str]:
    return [*METHOD_MODULES, *(n for n in METHODS if n not in METHOD_MODULES)]


def get_method(name: str, key: str = "--method"):
    """An instance of the method registered as `name`."""
    if name not in METHODS and name in METHOD_MODULES:
        importlib.import_module(METHOD_MODULES[name])
    if name not in METHODS:
        raise SelfsupError(f"{key}: unknown method {name!r} (known: {', '.join(method_names())})")
    return METHODS[name]()


def check_requirements(method) -> None:
    """A one-line "pip install" message when a method's optional package is missing (never an ImportError)."""
    import importlib.util

    for package in getattr(method, "requires", ()):
        if importlib.util.find_spec(package) is None:
            raise SelfsupError(f"--method {method.name} needs the {package} package: "
                               f"pip install 'selfsup[{package}]' (or pip install {package})")


def option_owners() -> dict[str, str]:
    """{option key: the method that owns it}, for an error that says where a misplaced key belongs."""
    owners: dict[str, str] = {}
    for name in method_names():
        for f in dataclasses.fields(get_method(name).Options):
            owners.setdefault(f.name, name)
    return owners
