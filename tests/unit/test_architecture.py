"""The layers of the design, as the import-linter contracts in pyproject.toml state them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO


def test_dependencies_point_one_way() -> None:
    # workflows/ imports no channel library; bot/ and mail/ do not import each other;
    # nothing below the composition root imports it; the channels do not touch tables.
    beside_python = Path(sys.executable).parent / "lint-imports"
    lint_imports = str(beside_python) if beside_python.exists() else shutil.which("lint-imports")
    assert lint_imports, "import-linter is not installed (pip install -e '.[dev]')"

    result = subprocess.run(
        [lint_imports, "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
