"""The shape the codebase promises: SQL in one module, one driver boundary, thin entry points."""

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
    allowed = {ROOT / "shared/pgboss/sql.py", ROOT / "shared/db.py"}
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
