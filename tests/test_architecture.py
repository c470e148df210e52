"""The shape the codebase promises: SQL in one module, one driver boundary, thin entry points,
and layers that point one way (settings and database at the bottom, no import loops)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import functions_framework._function_registry as registry

from tests.conftest import ROOT

SQL = re.compile(r"^\s*(--|SELECT\b|INSERT\s+INTO\b|UPDATE\s+\S+\s+SET\b|DELETE\s+FROM\b|WITH\s+\w+\s+AS\b)", re.I)


def _sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def _string_constants(tree: ast.AST) -> list[str]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_sql_text_lives_only_in_the_statement_module() -> None:
    allowed = {
        ROOT / "shared/pgboss/sql.py",
        ROOT / "shared/pgboss/supervision_sql.py",
        ROOT / "shared/outbox/sql.py",
        ROOT / "shared/db.py",
    }
    offenders = [
        f"{path.relative_to(ROOT)}: {text.strip()[:60]!r}"
        for path in _sources("shared", "functions")
        if path not in allowed
        for text in _string_constants(ast.parse(path.read_text()))
        if SQL.match(text)
    ]
    assert offenders == []


def test_the_check_above_can_see_sql() -> None:
    tree = ast.parse('"""Doc: SELECT 1"""\nQUERY = "SELECT id FROM x"\n')
    assert [text for text in _string_constants(tree) if SQL.match(text)] == ["SELECT id FROM x"]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_db_module_imports_the_driver() -> None:
    users = [
        str(path.relative_to(ROOT))
        for path in _sources("shared", "functions")
        if any(name.split(".")[0] == "pg8000" for name in _imports(path))
    ]
    assert users == ["shared/db.py"]


def _import_graph(root: Path, package: str = "shared") -> dict[str, set[str]]:
    """Module -> the package's modules it imports, counting every import statement.

    Imports inside functions and under ``if TYPE_CHECKING:`` count too: a loop that
    only the type checker walks is still a loop in the design.
    """
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    targets.add(submodule if submodule in modules else node.module)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def _loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import path per loop found, e.g. ``[a, b, a]`` (depth-first, each edge once)."""
    loops: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                loops.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target, [*path, target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return loops


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for target in graph[stack.pop()] - seen:
            seen.add(target)
            stack.append(target)
    return seen


# The ground floor: what settings and the database layer may stand on.
GROUND_FLOOR = {"shared.errors", "shared.secrets", "shared.config", "shared.db"}


def test_shared_has_no_import_loop() -> None:
    assert _loops(_import_graph(ROOT)) == []


def test_settings_and_database_import_nothing_above_them() -> None:
    graph = _import_graph(ROOT)
    for floor in ("shared.config", "shared.db"):
        assert _reachable(graph, floor) - GROUND_FLOOR == set(), f"{floor} reaches up"


def test_the_checks_above_see_loops_and_upward_imports(tmp_path: Path) -> None:
    package = tmp_path / "shared"
    (package / "pgboss").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pgboss" / "__init__.py").write_text("")
    (package / "config.py").write_text("from shared.routes import Table\n")
    (package / "routes.py").write_text("from shared.pgboss import client\n")
    (package / "pgboss" / "client.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shared.config import Settings\n"
    )
    graph = _import_graph(tmp_path)
    assert _loops(graph) == [["shared.config", "shared.routes", "shared.pgboss.client", "shared.config"]]
    assert _reachable(graph, "shared.config") - GROUND_FLOOR == {"shared.routes", "shared.pgboss.client"}


def test_shared_never_imports_functions() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _sources("shared")
        if any(name.split(".")[0] in {"functions", "main"} for name in _imports(path))
    ]
    assert offenders == []


def test_every_entry_point_is_an_http_function_of_its_own_name(client_for) -> None:
    client_for("health")  # loads main.py through functions-framework with a valid environment
    import main

    assert main.__all__, "main.py exposes no entry points"
    for name in main.__all__:
        function = getattr(main, name)
        assert function.__name__ == name
        assert registry.REGISTRY_MAP[name] == registry.HTTP_SIGNATURE_TYPE
        assert function.__module__ == f"functions.{name}"
