"""The import structure of ``mixflow_bench``: no cycles and no arrow from a lower layer to a higher one.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import``, at module level and
inside functions alike (a lazy import is still a dependency). A package is the first name under
``mixflow_bench`` (``mixflow_bench.hub.fetch`` is in ``hub``; ``mixflow_bench.atomic`` is its own). Packages may
import from their own layer and the layers below, never from a layer above; neither modules nor packages may
import each other in a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mixflow_bench"

# Lowest first. A new package goes into the lowest layer whose packages it needs; the test names any that is
# missing here.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("base utilities",
     frozenset({"mixflow_bench", "atomic", "choices", "cpu_memory", "errors", "merge", "progress", "registry",
                "runs", "terminal"})),
    ("building blocks", frozenset({"flow", "samplers", "models", "hub", "metrics", "data"})),
    ("methods and runs", frozenset({"methods", "recipes", "sampling", "train", "results", "analysis", "launch"})),
    ("jobs and studies", frozenset({"pipeline", "rehearsal", "toy", "experiments"})),
    ("command line", frozenset({"cli", "__main__"})),
)


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` below ``root`` (a package's ``__init__`` is the package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the import}, for imports of modules below ``root``."""
    modules = module_names(root)
    top = root.name

    def known(name: str) -> str | None:  # the module a dotted name lives in (an attribute's module)
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                # ``from a.b import c``: the submodule a.b.c when there is one, else a.b
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                if target == top or target.startswith(top + "."):
                    found = known(target)
                    if found is not None and found != name:
                        edges.setdefault(found, node.lineno)
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """One cycle (a list of nodes, first repeated at the end) through each strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graphs here are a few hundred nodes deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(c)) for c in components]


def _cycle_in(graph: dict[str, Iterable[str]], component: set[str]) -> list[str]:
    """A shortest way from the component's first node back to itself, inside the component (breadth first)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    chain = [v]
                    while chain[-1] != start:
                        chain.append(came_from[chain[-1]])
                    return [start, *reversed(chain[:-1]), start]
                if w in component and w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


def package_graph(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, tuple[str, str]]]:
    """package -> {package it imports: (one importing module, the imported module)}."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for a, targets in sorted(graph.items()):
        for b in sorted(targets):
            pa, pb = package_of(a), package_of(b)
            if pa != pb:
                out.setdefault(pa, {}).setdefault(pb, (a, b))
    return out


def problems(root: Path, layers: tuple[tuple[str, frozenset[str]], ...] = LAYERS) -> list[str]:
    """Every cycle (between modules, then packages) and every upward or unplaced import, one line each."""
    graph = import_graph(root)
    found = []
    for cycle in cycles(graph):
        steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
        found.append("module cycle: " + " -> ".join([*steps, cycle[-1]]))
    packages = package_graph(graph)
    for cycle in cycles(packages):
        steps = [f"{a} [{packages[a][b][0]} imports {packages[a][b][1]}]" for a, b in zip(cycle, cycle[1:])]
        found.append("package cycle: " + " -> ".join([*steps, cycle[-1]]))
    level = {package: i for i, (_, members) in enumerate(layers) for package in members}
    for package in sorted({package_of(m) for m in graph} - set(level)):
        found.append(f"package {package} is in no layer: add it to LAYERS in {Path(__file__).name}")
    for a, targets in sorted(packages.items()):
        for b, (importer, imported) in sorted(targets.items()):
            if a in level and b in level and level[b] > level[a]:
                found.append(
                    f"upward import: {importer} (line {graph[importer][imported]}, {layers[level[a]][0]}) "
                    f"imports {imported} ({layers[level[b]][0]})"
                )
    return found


def test_no_cycles_and_no_upward_imports():
    found = problems(PACKAGE)
    assert not found, "\n".join(found)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "mixflow_bench"


@pytest.mark.parametrize(
    "files, expected",
    [
        (  # a cycle through a function-level import
            {"a/x.py": "from mixflow_bench.a import y\n", "a/y.py": "def f():\n    import mixflow_bench.a.x\n"},
            "module cycle: mixflow_bench.a.x (line 1) -> mixflow_bench.a.y (line 2) -> mixflow_bench.a.x",
        ),
        (  # packages in a cycle although their modules are not
            {"a/x.py": "from mixflow_bench.b.y import f\n", "b/y.py": "", "b/z.py": "from ..a import x\n"},
            "package cycle: a [mixflow_bench.a.x imports mixflow_bench.b.y] -> b [mixflow_bench.b.z imports "
            "mixflow_bench.a.x] -> a",
        ),
        (  # a lower layer importing a higher one
            {"a/x.py": "from mixflow_bench.b import y\n", "b/y.py": ""},
            "upward import: mixflow_bench.a.x (line 1, low) imports mixflow_bench.b.y (high)",
        ),
        (
            {"a/x.py": "", "c/x.py": ""},
            "package c is in no layer",
        ),
    ],
)
def test_the_check_finds_cycles_and_upward_imports(tmp_path, files, expected):
    root = _write(tmp_path, {"mixflow_bench/__init__.py": "", "mixflow_bench/a/__init__.py": "",
                             "mixflow_bench/b/__init__.py": "", "mixflow_bench/c/__init__.py": "",
                             **{f"mixflow_bench/{k}": v for k, v in files.items()}})  # fmt: skip
    layers = (("base", frozenset({"mixflow_bench"})), ("low", frozenset({"a"})), ("high", frozenset({"b"})))
    found = problems(root, layers)
    assert any(line.startswith(expected) for line in found), found
