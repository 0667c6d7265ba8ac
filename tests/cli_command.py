"""The ``aina-dsr`` console command run to its end in a subprocess, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def aina_dsr(
    cwd: Path, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """The real console entry point, in a clean environment, in ``cwd``."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **env}
    if os.environ.get("PYTHONPATH"):
        # The code under test, when it is not the installed copy (a checkout run in place).
        clean.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
    return subprocess.run(
        [sys.executable, "-m", "aina_dsr", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rotate(tmp_path: Path, database_url: str, keys: str) -> tuple[int, str, str]:
    """``aina-dsr keys rotate`` with ``keys`` (new first): exit code, stdout, stderr."""
    result = aina_dsr(
        tmp_path, "keys", "rotate", DSR_DATABASE_URL=database_url, DSR_ENCRYPTION_KEY=keys
    )
    return result.returncode, result.stdout, result.stderr
