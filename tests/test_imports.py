"""The import graph of hrsa/, read with ``ast``: imports run one way (no cycle), and no
module imports another module's private (``_``-prefixed) name.

Every import counts, at module level or inside a function, under ``TYPE_CHECKING`` or not:
an import moved into a function to dodge a cycle is still an edge. Importing ``a.b.c``
from outside package ``a.b`` also runs ``a.b``'s ``__init__``, so it adds that edge too.
A private module (``metrics/_util.py``) may be imported from inside its package only
(``hrsa.metrics`` and its subpackages).
"""

from __future__ import annotations

import ast
from pathlib import Path

import hrsa

ROOT = Path(hrsa.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, path: Path, modules: dict) -> list[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` for every hrsa import in ``path``."""
    package = _package(module, path)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.split(".")[0] == "hrsa"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
                if base.split(".")[0] != "hrsa":
                    continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, None) if sub in modules else (base, alias.name))
    return out


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for module, path in modules.items():
        package = _package(module, path)
        for target, name in _imports(module, path, modules):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the packages it runs, and the module
                ancestor = ".".join(parts[:i])
                if ancestor in modules and ancestor != module and \
                        not (package + ".").startswith(ancestor + "."):
                    edges[module].add(ancestor)
            for i, part in enumerate(parts):  # a private module: within its package only
                if part.startswith("_") and not part.startswith("__") and \
                        not (package + ".").startswith(".".join(parts[:i]) + "."):
                    private.append(f"{module} imports {target}")
            if name and name.startswith("_") and not name.startswith("__"):
                private.append(f"{module} imports {name} from {target}")
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert _cycles(_graph()[0]) == []


def test_no_import_of_another_modules_private_name():
    assert _graph()[1] == []


def _bound_names(path: Path) -> set[str]:
    """The names a module binds at its top level (defs, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_every_hrsa_import_resolves():
    """Each imported module exists and binds each imported name: a relative import that
    climbs to the wrong package fails here, not when its function first runs."""
    modules = _modules()
    missing = [f"{module}: {target}" + (f".{name}" if name else "")
               for module, path in modules.items()
               for target, name in _imports(module, path, modules)
               if target not in modules or (name and name not in _bound_names(modules[target]))]
    assert missing == []


def test_the_checks_see_a_cycle_and_a_private_import():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    modules = _modules()
    assert ("hrsa.metrics", "_util") not in _imports("hrsa.engine.scoring",
                                                      modules["hrsa.engine.scoring"], modules)
    graph = _graph()[0]
    assert "hrsa.engine.pairs" in graph["hrsa.compare"]  # `from .engine.pairs import ...`
    assert "hrsa.engine" in graph["hrsa.compare"]  # which runs hrsa/engine/__init__.py
    assert "hrsa.metrics" not in graph["hrsa.metrics.base"]  # its own package: no edge


def test_layers_import_one_way():
    """The engine and the metrics never reach up to the entry points or the scale layer."""
    edges = _graph()[0]
    upper = {"hrsa", "hrsa.compare", "hrsa.streaming", "hrsa.distributed", "hrsa.cli",
             "hrsa.capture", "hrsa.store", "hrsa.plot", "hrsa.report"}
    for module, targets in edges.items():
        if module.startswith(("hrsa.metrics", "hrsa.engine", "hrsa.schema")):
            assert not targets & upper, (module, targets & upper)
        if module.startswith("hrsa.metrics"):
            assert all(t.startswith("hrsa.metrics") for t in targets), (module, targets)
