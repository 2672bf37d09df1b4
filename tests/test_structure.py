"""The package's import graph: no cycles, and every arrow points down the layers docs/architecture.md draws.

Every import statement counts, the ones inside functions too: a cycle that only closes at call time is still
a knot for whoever reads or moves the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "transfer"
# Lower layers never import higher ones; modules of one layer may import each other (without a cycle).
LAYERS = [
    {"transfer", "transfer.errors", "transfer.files", "transfer.runtime", "transfer.recipe", "transfer.recipes",
     "transfer.runs"},
    {"transfer.eval"},
    {"transfer.data"},
    {"transfer.models"},
    {"transfer.engine", "transfer.convert", "transfer.export"},
    {"transfer.stages"},
    {"transfer.cli", "transfer.docs", "transfer.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(text: str, name: str, is_package: bool = False) -> set[str]:
    """The package's modules that module `name` (source `text`) imports anywhere in its body."""
    package = name if is_package else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "transfer"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "transfer":
                continue
            submodules = {f"{source}.{a.name}" for a in node.names if is_module(f"{source}.{a.name}")}
            # `from pkg import sub` imports the submodule; `from pkg import name` imports pkg itself
            out |= submodules if len(submodules) == len(node.names) else submodules | {source}
    # a package's __init__ runs before any of its modules, so an arrow to an enclosing package says nothing
    return {m for m in out if m != name and not name.startswith(m + ".")}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p.read_text(), module_name(p), p.name == "__init__.py")
            for p in sorted(PACKAGE.rglob("*.py"))}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer(name: str) -> int:
    best = max((p for group in LAYERS for p in group if name == p or name.startswith(p + ".")), key=len)
    return next(i for i, group in enumerate(LAYERS) if best in group)


def test_the_graph_sees_imports_inside_functions_and_the_cycle_finder_finds_cycles():
    text = "def f():\n    from ..models import zoo\n    from . import index, retrieval\n    from ..runs import RunDir\n"
    assert imports(text, "transfer.eval.x") == {"transfer.models.zoo", "transfer.eval.index",
                                                "transfer.eval.retrieval", "transfer.runs"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer("transfer.eval.x") < layer("transfer.models.zoo")


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_every_import_points_down_the_layers():
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in graph().items() for d in sorted(deps) if layer(d) > layer(m)]
    assert upward == []


def test_every_module_has_a_layer():
    assert all(isinstance(layer(m), int) for m in graph())
