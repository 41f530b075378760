"""The package layering and the absence of import cycles, read from the source with ``ast``.

Why: "one owner per concept" only holds while dependencies point one way. A
lower layer that imports a higher one (``report`` reaching into ``tasks``,
``data`` into ``privacy``) drags that layer's imports and its changes along,
and a module-level import cycle makes the import order decide whether a name
exists yet. Nothing is imported here, so the check is fast and cannot be
fooled by import side effects.

Layers (an import may go to the same package or to a lower rank):

    0 primitives (fedsynth/*.py)   1 data   2 privacy   3 generative
    4 report   5 tasks   6 federation   7 cli.py (may import anything)

A package's ``commands.py`` belongs to its package. Imports inside functions
and lazy export maps (``{"name": "fedsynth.pkg.module"}``) count for the
layering; only module-level imports outside ``if TYPE_CHECKING:`` count for
cycles, because only those run while a module is being imported.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "fedsynth"

#: Top-level modules that form layer 0: the standard library, third parties and each other only.
PRIMITIVES = frozenset({
    "__init__", "errors", "config", "io_utils", "progress", "digests", "devices", "runtime", "lazy", "machine_speed", "stopping",
})
RANKS = {"primitives": 0, "data": 1, "privacy": 2, "generative": 3, "report": 4, "tasks": 5,
         "federation": 6, "cli": 7}
_MODULE_STRING = re.compile(r"fedsynth(\.\w+)*(:\w+)?")


@dataclass(frozen=True)
class Import:
    """One dependency of a module: where it is written and whether it runs at import time."""

    line: int
    target: str  # a fedsynth module, e.g. "fedsynth.data.ingest"
    module_level: bool  # runs while the importer is imported (not in a function or TYPE_CHECKING)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The longest known module that ``name`` starts with (an attribute import names its module)."""
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.imports: list[Import] = []
        self._depth = 0  # > 0 inside a function or a TYPE_CHECKING block

    def _add(self, line: int, name: str) -> None:
        if name == "fedsynth" or name.startswith("fedsynth."):
            self.imports.append(Import(line, _resolve(name), self._depth == 0))

    def _deferred(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _deferred

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._deferred(ast.Module(body=node.body, type_ignores=[]))
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node.lineno, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolve against the importing module's package
            package = self.module.split(".")
            package = package if self.is_package else package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self._add(node.lineno, sub if sub in MODULES else base)

    def _lazy(self, node: ast.AST | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_STRING.fullmatch(node.value):
                module = _resolve(node.value.partition(":")[0])
                self.imports.append(Import(node.lineno, module, False))

    def visit_Dict(self, node: ast.Dict) -> None:  # lazy export maps: {"name": "fedsynth.pkg.mod"}
        for value in node.values:
            self._lazy(value)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:  # importlib.import_module("fedsynth.…")
        func = node.func
        name = getattr(func, "attr", None) or getattr(func, "id", None)
        if name == "import_module" and node.args:
            self._lazy(node.args[0])
        self.generic_visit(node)


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    collector = _Collector(module, path.name == "__init__.py")
    collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return list(dict.fromkeys(collector.imports))  # `from m import a, b` is one import of m


IMPORTS: dict[str, list[Import]] = {m: _imports(m) for m in MODULES}


def layer(module: str) -> str:
    """The layer of a fedsynth module: its package; a top-level module is a primitive or the cli."""
    parts = module.split(".")
    if len(parts) == 1:
        return "primitives"  # fedsynth/__init__.py
    if (ROOT / parts[1]).is_dir():
        return parts[1]
    if parts[1] == "cli":
        return "cli"
    if parts[1] in PRIMITIVES:
        return "primitives"
    raise AssertionError(f"fedsynth/{parts[1]}.py has no layer: add it to PRIMITIVES or RANKS")


def test_every_module_has_a_layer() -> None:
    assert {layer(m) for m in MODULES} <= set(RANKS)
    assert len(MODULES) > 50 and "fedsynth.digests" in MODULES  # the scan found the package


def test_imports_only_go_down_the_layers() -> None:
    bad = []
    for module, imports in IMPORTS.items():
        own = layer(module)
        for imp in imports:
            other = layer(imp.target)
            if other != own and RANKS[other] >= RANKS[own]:
                rel = MODULES[module].relative_to(ROOT.parent)
                bad.append(f"{rel}:{imp.line}: {own} (rank {RANKS[own]}) imports {imp.target} "
                           f"({other}, rank {RANKS[other]})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_report_imports_no_stage() -> None:
    # report is below tasks and federation, which use it; it reads plain per-image scores.
    bad = [f"{MODULES[m].relative_to(ROOT.parent)}:{imp.line}: {imp.target}"
           for m, imports in IMPORTS.items() if layer(m) == "report"
           for imp in imports if layer(imp.target) not in {"primitives", "report"}]
    assert not bad, "report imports a stage:\n" + "\n".join(bad)


def _import_time_graph() -> dict[str, set[str]]:
    """Module -> modules it makes Python execute while it is imported.

    Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` unless it is a
    package the importer is itself inside (that one is already importing).
    """
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, imports in IMPORTS.items():
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        for imp in imports:
            if not imp.module_level:
                continue
            parts = imp.target.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in MODULES and (target == imp.target or target not in own_packages):
                    graph[module].add(target)
        graph[module].discard(module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first search meets, each as ``[a, b, …, a]`` (one per back edge)."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the current path, 2 done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        colour[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif colour[nxt] == 0:
                visit(nxt)
        path.pop()
        colour[node] = 2

    for node in sorted(graph):
        if colour[node] == 0:
            visit(node)
    return cycles


def test_find_cycles_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_level_import_cycle() -> None:
    cycles = find_cycles(_import_time_graph())
    assert not cycles, "module-level import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
