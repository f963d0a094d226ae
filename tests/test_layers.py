"""The layout is the pipeline, and this test keeps it so: it parses `src/selfsup` with `ast` (imports inside
functions count) and fails on an import cycle between modules, an import from a higher layer into a lower one,
an adaptation method importing another method, a `_private` name imported from another module, a class
defined inside a function, or a module over 450 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "selfsup"
MAX_LINES = 450

# lowest first; a module may import only from its own layer or a lower one (the first matching prefix wins)
LAYERS: list[tuple[str, ...]] = [
    ("selfsup.errors", "selfsup.config", "selfsup.fileio", "selfsup.metrics", "selfsup.losses",
     "selfsup.diagnostics", "selfsup.report", "selfsup.registry", "selfsup.distributed", "selfsup.loggers",
     "selfsup.console", "selfsup.seeding"),
    ("selfsup.data",),
    ("selfsup.pretext",),
    ("selfsup.backbones",),
    ("selfsup.recipes", "selfsup.objectives"),
    ("selfsup.engine",),
    ("selfsup.adapt.core", "selfsup.adapt.registry"),
    ("selfsup.adapt.shared",),
    ("selfsup.adapt.methods",),
    ("selfsup.adapt.tools",),
    ("selfsup.adapt.cli", "selfsup.adapt"),
    ("selfsup.evaluation",),
    ("selfsup.demo", "selfsup.cli", "selfsup.__main__", "selfsup"),
]
METHOD_PACKAGE = "selfsup.adapt.methods"
METHOD_LIBRARY = ("selfsup.adapt.methods.base",)  # what every method may import


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        name = ".".join(path.with_suffix("").relative_to(SRC).parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, list[tuple[str, str | None, int]]]:
    """module -> [(imported module, imported name or None, line)], every import statement, nested ones too."""
    out: dict[str, list[tuple[str, str | None, int]]] = {}
    for mod, path in mods.items():
        edges = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges += [(a.name, None, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    edges.append((full, None, node.lineno) if full in mods else (node.module, a.name, node.lineno))
        resolved = []
        for target, name, line in edges:
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != mod and target.startswith(PACKAGE):
                resolved.append((target, name, line))
        out[mod] = resolved
    return out


def layer_of(mod: str) -> int:
    best = (-1, -1)
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best[1]:
                best = (i, len(p))
    assert best[0] >= 0, f"{mod}: in no layer of tests/test_layers.py"
    return best[0]


def is_parent_package(a: str, b: str, mods: dict[str, Path]) -> bool:
    """A package's __init__ re-exporting its own submodule is not an edge of the pipeline."""
    return b.startswith(a + ".") and mods[a].name == "__init__.py"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph():
    mods = modules()
    return mods, imports(mods)


def test_no_import_cycle(graph):
    mods, edges = graph
    g = {m: {t for t, _, _ in e if not is_parent_package(m, t, mods) and not is_parent_package(t, m, mods)}
         for m, e in edges.items()}
    assert cycles(g) == []


def test_arrows_point_down(graph):
    mods, edges = graph
    upward = [f"{m}:{line} imports {t}" for m, e in edges.items() for t, _, line in e
              if not is_parent_package(t, m, mods) and not is_parent_package(m, t, mods)
              and layer_of(t) > layer_of(m)]
    assert upward == []


def test_methods_never_import_each_other(graph):
    _, edges = graph
    bad = [f"{m}:{line} imports {t}" for m, e in edges.items() if m.startswith(METHOD_PACKAGE + ".")
           for t, _, line in e if t.startswith(METHOD_PACKAGE + ".") and t not in METHOD_LIBRARY]
    assert bad == []


def test_no_private_name_crosses_modules(graph):
    _, edges = graph
    bad = [f"{m}:{line} imports {t}.{n}" for m, e in edges.items() for t, n, line in e
           if n and n.startswith("_") and not n.startswith("__")]
    assert bad == []


def test_no_class_defined_inside_a_function():
    bad = []
    for mod, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bad += [f"{mod}:{inner.lineno} class {inner.name} in {node.name}()" for inner in ast.walk(node)
                        if isinstance(inner, ast.ClassDef)]
    assert bad == []


def test_modules_stay_short():
    long = {m: n for m, p in modules().items() if (n := p.read_text(encoding="utf-8").count("\n")) > MAX_LINES}
    assert long == {}


def test_every_registered_method_is_one_file_with_its_contract():
    from selfsup.adapt.registry import METHOD_MODULES, get_method

    for name, module in METHOD_MODULES.items():
        method = get_method(name)
        assert module.startswith(METHOD_PACKAGE + ".") and method.name == name
        assert method.help and method.kinds and method.default_lr > 0, name
        assert (SRC / Path(*module.split("."))).with_suffix(".py").is_file()
