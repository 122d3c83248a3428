"""Walls between vlmkit's rooms, read from the source with ``ast`` (nothing is imported).

Every ``import``/``from ... import`` of every module under ``vlmkit/`` counts, at module level or inside
functions, classes, ``try`` and ``if TYPE_CHECKING`` blocks, and so do ``importlib.import_module("vlmkit...")``
calls with a literal name. A room is the first component under ``vlmkit`` (``vlmkit.models.conse.model``
is in room ``models``).

* ``perturb`` and ``metrics`` import no ``models``, ``evaluate``, ``attacks``, ``tasks``;
* ``models`` imports no ``perturb``, ``metrics``, ``evaluate``, ``attacks``, ``results``, ``grid``,
  ``report``, ``tasks``;
* ``attacks`` imports no ``evaluate``, ``tasks``, ``grid``, ``report``;
* the core rooms (models, data, perturb, metrics, attacks, evaluate, tasks, interpret, robust, toyworld)
  never import ``grid`` or ``report``;
* ``evaluate`` imports no ``tasks``, ``robust``;
* ``stats`` imports no other room (only ``errors``);
* no module imports a private name of another vlmkit module (``from vlmkit.x import _y``, or a path
  ``vlmkit.x._y``); a private *sub-module* ``vlmkit.p._m`` is private to its package ``vlmkit.p``, so
  modules inside ``vlmkit.p`` may import it and no module outside may;
* the module-level imports between vlmkit modules form no cycle (imports inside functions and under
  ``if TYPE_CHECKING`` do not run at import time and are left out; an import names the module it
  imports, ``from vlmkit.p import m`` the sub-module ``vlmkit.p.m`` when there is one, and the implicit
  import of the parent packages is not an edge).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "vlmkit"

CORE = ("models", "data", "perturb", "metrics", "attacks", "evaluate", "tasks", "interpret", "robust", "toyworld",
        "stats")


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to a vlmkit module."""

    importer: str  # dotted module doing the import
    target: str  # dotted vlmkit module imported
    names: tuple[str, ...]  # names taken from ``target`` (``from target import a, b``), () for ``import``
    line: int
    module_level: bool  # runs when the importer is imported (not in a function, not under TYPE_CHECKING)
    file: str

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path, root: Path = PKG) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(root: Path = PKG) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (``__init__.py`` names its package)."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve_relative(importer: str, is_package: bool, module: str | None, level: int) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return ".".join(base + ([module] if module else []))


def read_imports(source: str, importer: str, modules: set[str], *, is_package: bool = False,
                 file: str = "<string>") -> list[Import]:
    """Every vlmkit import of one module's source (see the module docstring for what counts)."""
    tree = ast.parse(source)
    out: list[Import] = []

    def add(target: str, names: tuple[str, ...], node: ast.AST, module_level: bool) -> None:
        if target != "vlmkit" and not target.startswith("vlmkit."):
            return
        if names:  # ``from P import m``: the sub-module P.m when it is one
            subs = [n for n in names if f"{target}.{n}" in modules]
            for n in subs:
                out.append(Import(importer, f"{target}.{n}", (), node.lineno, module_level, file))
            names = tuple(n for n in names if n not in subs)
            if not names:
                return
        out.append(Import(importer, target, names, node.lineno, module_level, file))

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, (), node, module_level)
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve_relative(importer, is_package, node.module, node.level) if node.level else node.module
            add(mod or "", tuple(a.name for a in node.names), node, module_level)
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                add(node.args[0].value, (), node, False)  # dynamic: counted for the walls, not for cycles
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            module_level = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            visit(node.test, module_level)
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, module_level)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, module_level)

    visit(tree, True)
    return out


def package_imports(root: Path = PKG) -> list[Import]:
    mods = all_modules(root)
    names = set(mods)
    out: list[Import] = []
    for name, path in mods.items():
        out += read_imports(path.read_text(encoding="utf-8"), name, names, is_package=path.name == "__init__.py",
                            file=str(path.relative_to(root.parent)))
    return out


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def private_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        parts = imp.target.split(".")
        for i, part in enumerate(parts):
            if _private(part) and not _inside(imp.importer, ".".join(parts[:i])):
                bad.append(f"{imp.where()}: {imp.importer} imports private module {imp.target}")
                break
        for n in imp.names:
            if _private(n) and imp.importer != imp.target:
                bad.append(f"{imp.where()}: {imp.importer} imports private name {n} from {imp.target}")
    return bad


def wall_violations(imports: list[Import], rooms: tuple[str, ...], forbidden: set[str]) -> list[str]:
    """Imports by a module of ``rooms`` of a module of a ``forbidden`` room."""
    bad = []
    for imp in imports:
        src, dst = room(imp.importer), room(imp.target)
        if src in rooms and dst in forbidden:
            kind = "" if imp.module_level else " (not at module level)"
            bad.append(f"{imp.where()}: {imp.importer} ({src}) imports {imp.target} ({dst}){kind}")
    return bad


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components (size > 1, or a self-import) of the module-level import graph."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.module_level and imp.target != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.target)
        elif imp.module_level:
            graph.setdefault(imp.importer, set()).add(imp.importer)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan, iterative over edges via recursion depth ~ module count
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(found)


def _cycle_path(comp: list[str], imports: list[Import]) -> str:
    """One concrete cycle through ``comp``, with the file:line of each edge."""
    members = set(comp)
    edges: dict[str, list[Import]] = {}
    for imp in imports:
        if imp.module_level and imp.importer in members and imp.target in members:
            edges.setdefault(imp.importer, []).append(imp)
    start = comp[0]
    seen: dict[str, Import | None] = {start: None}
    frontier = [start]
    while frontier:  # breadth first back to start
        nxt = []
        for v in frontier:
            for imp in sorted(edges.get(v, []), key=lambda i: i.target):
                if imp.target == start:
                    chain = [imp]
                    u = v
                    while seen[u] is not None:
                        chain.append(seen[u])  # type: ignore[arg-type]
                        u = seen[u].importer  # type: ignore[union-attr]
                    return " -> ".join(f"{i.importer} ({i.where()})" for i in reversed(chain)) + f" -> {start}"
                if imp.target not in seen:
                    seen[imp.target] = imp
                    nxt.append(imp.target)
        frontier = nxt
    return " <-> ".join(comp)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    found = package_imports()
    assert len({i.importer for i in found}) > 50, "the import reader found too few modules: is PKG right?"
    return found


def _report(bad: list[str]) -> str:
    return f"{len(bad)} violation(s):\n" + "\n".join(bad)


def test_reader_sees_every_kind_of_import():
    mods = {"vlmkit", "vlmkit.a", "vlmkit.a.b", "vlmkit.a._k", "vlmkit.c", "vlmkit.c.d"}
    src = """
import vlmkit.a.b
from vlmkit.a import b, thing, _hidden
from . import d
from ..a._k import x
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from vlmkit.c import T
try:
    import vlmkit.c.d as dd
except ImportError:
    pass
def f():
    from vlmkit.c.d import g
    import importlib
    importlib.import_module("vlmkit.a.b")
class K:
    from vlmkit import a
"""
    got = {(i.target, i.names, i.module_level) for i in read_imports(src, "vlmkit.c.e", mods)}
    assert got == {
        ("vlmkit.a.b", (), True), ("vlmkit.a", ("thing", "_hidden"), True), ("vlmkit.c.d", (), True),
        ("vlmkit.c", ("T",), False), ("vlmkit.c.d", ("g",), False), ("vlmkit.a.b", (), False),
        ("vlmkit.a", (), True),
        ("vlmkit.a._k", ("x",), True),
    }
    imps = read_imports(src, "vlmkit.c.e", mods)
    bad = private_violations(imps)
    assert any("private name _hidden" in v for v in bad) and any("private module vlmkit.a._k" in v for v in bad)
    ok = read_imports("from vlmkit.a import _k\nimport vlmkit.a._k\n", "vlmkit.a.b", mods)
    assert private_violations(ok) == []  # a private sub-module is open to its own package
    out = read_imports("from vlmkit.a import _k\n", "vlmkit.c", mods)
    assert private_violations(out) == ["<string>:1: vlmkit.c imports private module vlmkit.a._k"]
    loop = read_imports("import vlmkit.c\n", "vlmkit.a", mods) + read_imports("from vlmkit.a import thing\n",
                                                                               "vlmkit.c", mods)
    assert cycles(loop) == [["vlmkit.a", "vlmkit.c"]]
    lazy = read_imports("import vlmkit.c\n", "vlmkit.a", mods) + read_imports("def f():\n    import vlmkit.a\n",
                                                                               "vlmkit.c", mods)
    assert cycles(lazy) == []


def test_perturb_and_metrics_import_no_models_evaluate_attacks_tasks(imports):
    bad = wall_violations(imports, ("perturb", "metrics"), {"models", "evaluate", "attacks", "tasks"})
    assert not bad, _report(bad)


def test_models_import_no_perturb_metrics_evaluate_attacks_results_grid_report_tasks(imports):
    bad = wall_violations(imports, ("models",),
                          {"perturb", "metrics", "evaluate", "attacks", "results", "grid", "report", "tasks"})
    assert not bad, _report(bad)


def test_attacks_import_no_evaluate_tasks_grid_report(imports):
    bad = wall_violations(imports, ("attacks",), {"evaluate", "tasks", "grid", "report"})
    assert not bad, _report(bad)


def test_core_rooms_never_import_grid_or_report(imports):
    bad = wall_violations(imports, CORE, {"grid", "report"})
    assert not bad, _report(bad)


def test_stats_knows_only_numbers(imports):
    """``stats`` resamples per-item outcomes: it imports no other room than ``errors``."""
    rooms = {"models", "data", "perturb", "metrics", "attacks", "evaluate", "tasks", "interpret", "robust",
             "toyworld", "grid", "report", "results", "registry", "runtime", "search"}
    bad = wall_violations(imports, ("stats",), rooms)
    assert not bad, _report(bad)


def test_evaluate_imports_no_tasks_robust(imports):
    bad = wall_violations(imports, ("evaluate",), {"tasks", "robust"})
    assert not bad, _report(bad)


def test_no_private_names_across_modules(imports):
    bad = private_violations(imports)
    assert not bad, _report(bad)


def test_module_level_imports_are_acyclic(imports):
    found = cycles(imports)
    assert not found, f"{len(found)} import cycle(s):\n" + "\n".join(_cycle_path(c, imports) for c in found)
