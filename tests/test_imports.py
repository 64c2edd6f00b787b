"""The package's import structure: no cycles, and no module imports a layer above its own
(docs/architecture.md lists the layers; ``../shared/docs/DESIGN.md`` gives the intended order).

Imports are read from the source, lazy ones inside functions included; imports under
``if TYPE_CHECKING:`` are not imports at run time and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lamina"

# Lowest first; a module may import its own layer and the ones before it. The first prefix that
# matches a module's name decides its layer.
LAYERS: list[tuple[str, ...]] = [
    ("lamina", "lamina.errors", "lamina.paths", "lamina.cache", "lamina.compose", "lamina.configs"),
    ("lamina.envs", "lamina.algorithms"),
    ("lamina.agents",),
    ("lamina.trainer",),
    ("lamina.integrations",),
    ("lamina.backend",),
    ("lamina.study",),
    ("lamina.commands",),
    ("lamina.cli",),
]


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "lamina" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)")
    return best


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(root: Path, path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports at run time (lazy imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for sub in node.body for n in ast.walk(sub))
    me = module_name(root, path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    known = {module_name(root, p) for p in paths}
    return {module_name(root, p): runtime_imports(root, p, known) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} (layer {layer_of(module) + 1}) imports {target} (layer {layer_of(target) + 1})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def test_no_import_cycles():
    assert cycles(import_graph(PACKAGE)) == []


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(import_graph(PACKAGE)) == []


def test_every_module_has_a_layer():
    for module in import_graph(PACKAGE):
        layer_of(module)


@pytest.fixture
def toy_package(tmp_path: Path) -> Path:
    """``lamina.envs.a`` <-> ``lamina.envs.b`` (lazily), and ``lamina.envs.b`` -> ``lamina.cli``."""
    root = tmp_path / "lamina"
    (root / "envs").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "cli.py").write_text("")
    (root / "envs" / "__init__.py").write_text("")
    (root / "envs" / "a.py").write_text("from lamina.envs import b\n")
    (root / "envs" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import lamina.trainer\n"
        "def f():\n    from . import a\n    from lamina.cli import main\n"
    )
    return root


def test_the_checks_see_a_lazy_cycle_and_an_upward_import(toy_package: Path):
    graph = import_graph(toy_package)
    assert cycles(graph) == [["lamina.envs.a", "lamina.envs.b"]]
    assert upward_imports(graph) == ["lamina.envs.b (layer 2) imports lamina.cli (layer 9)"]
