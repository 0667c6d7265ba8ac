"""The tests' own layout: test modules share helpers through helper modules, never each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.paths import REPO

TESTS = REPO / "tests"


def imported_test_modules(source: str) -> list[str]:
    """The ``test_*`` modules ``source`` imports, by their dotted names (``.`` for relative)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [name for name in names if name.rpartition(".")[2].startswith("test_")]
    return found


def _python_files() -> list[Path]:
    found = sorted(TESTS.rglob("*.py"))
    assert len(found) > 50, "the test modules were not found"
    return found


@pytest.mark.parametrize(
    "source",
    [
        "from tests.e2e.test_telegram_bot import the_card",
        "from tests.integration import test_mail_corpus",
        "import tests.unit.test_access_report",
        "from .test_fulfilment import filed",
    ],
)
def test_an_import_of_a_test_module_is_seen(source: str) -> None:
    assert imported_test_modules(source) != []


def test_an_import_of_a_helper_module_is_not_taken_for_one() -> None:
    source = "from tests.telegram_desk import Desk\nfrom tests.conftest import STAFF_ID\n"
    assert imported_test_modules(source) == []


def test_no_module_of_the_tests_imports_a_test_module() -> None:
    offending = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _python_files()
        for name in imported_test_modules(path.read_text(encoding="utf-8"))
    ]
    assert offending == [], "move the shared helper into a helper module under tests/"


def test_every_helper_module_says_its_idea_first() -> None:
    helpers = [
        path
        for path in sorted(TESTS.glob("*.py"))
        if not path.name.startswith("test_") and path.name != "__init__.py"
    ]
    silent = [
        path.name
        for path in helpers
        if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert silent == []
