"""The shape ARCHITECTURE.md describes, checked on the source: the store is the only way to
the database (nothing outside jml/store/ imports SQLAlchemy, SQLModel or the tables), and
the modules of jml/ and connectors/ import each other without a cycle. Every import counts:
module level, inside functions, and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("jml", "connectors")
DATABASE = ("sqlalchemy", "sqlmodel", "psycopg", "sqlite3", "alembic")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "migrations" in path.parts:  # alembic's own scripts, run by the store
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[str]:
    """Every module name `name` imports (`from x import y` as x.y when that is a module;
    as x, too, when y is a name defined in x)."""
    found = []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            found += submodules
            if len(submodules) < len(node.names):  # some names are the module's own
                found.append(base)
    return found


def _internal(target: str) -> str | None:
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def test_nothing_outside_the_store_touches_the_database() -> None:
    offenders = []
    for name, path in MODULES.items():
        if name == "jml.store" or name.startswith("jml.store."):
            continue
        for target in _imports(name, path):
            if target.split(".")[0] in DATABASE or target == "jml.store.tables" or target.startswith(
                    "jml.store.tables."):
                offenders.append(f"{path.relative_to(ROOT)} imports {target}")
    assert offenders == [], "SQL belongs in jml/store/ repositories:\n" + "\n".join(offenders)


def test_the_import_graph_has_no_cycle() -> None:
    graph = {name: {t for t in (_internal(i) for i in _imports(name, path)) if t and t != name}
             for name, path in MODULES.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_the_code() -> None:
    """The walk finds the packages, and a known edge (so an empty graph cannot pass)."""
    assert {"jml.store.repo", "jml.sync", "connectors.registry"} <= set(MODULES)
    assert "jml.store.repo" in {_internal(i) for i in _imports("jml.sync", MODULES["jml.sync"])}
