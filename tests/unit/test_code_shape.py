"""The shape issue 15 set for the code: small modules, short functions, handlers at top level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("aina_dsr", "bot", "mail", "workflows")
MODULE_LINES = 500
FUNCTION_LINES = 80
WORKFLOWS_TOP_LEVEL = 10


def _modules() -> list[Path]:
    found = [
        path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if "versions" not in path.parts  # migrations are frozen history
    ]
    assert len(found) > 50, "the production modules were not found"
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(REPO)))
def test_a_module_holds_one_idea_in_at_most_500_lines(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MODULE_LINES, f"{lines} lines: split it by idea"
    assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), "say its idea first"


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length})")
    assert long == []


def test_workflows_keeps_at_most_ten_modules_at_its_top_level() -> None:
    top = sorted(p.name for p in (REPO / "workflows").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= WORKFLOWS_TOP_LEVEL, top


def test_no_bot_handler_is_defined_inside_another_function() -> None:
    nested = []
    for path in sorted((REPO / "bot").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                decorated = isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef)
                if inner is not node and decorated and inner.decorator_list:
                    nested.append(f"{path.relative_to(REPO)}:{inner.lineno} {inner.name}")
    assert nested == []
