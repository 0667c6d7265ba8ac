"""The ``aina-dsr`` console command run to its end, as an operator runs it, or in this process.

``aina_dsr`` starts the real console entry point in a subprocess: what a cron job or
an operator's shell gets, exit code and streams, Python's start-up included (a
second or so a call). ``aina_dsr_here`` gives the same app the same command line and
environment in this process, through typer's runner: the same code from the command
down, in a few milliseconds. Tests of a command's answers use it; tests of the
process itself (``run``, signals, the entry point, a fresh interpreter's imports)
keep the subprocess.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Commands that hold a process of their own (signals, servers): never run in this one.
NOT_IN_PROCESS = {"run", "demo"}
# The working directory is the process's: one call at a time changes it.
_HERE = threading.Lock()


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


def aina_dsr_here(
    cwd: Path, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """``aina_dsr`` in this process: the app's exit code, stdout and stderr for the same call.

    Run in a thread of its own, so that a command's ``asyncio.run`` works from a test
    whose event loop is running; the test waits for it as it would for a process. No
    ``DSR_`` variable of the test's own environment is seen, as in ``aina_dsr``. An
    exception the app lets out is written to stderr as Python would print it, so a
    test that finds no "Traceback" means what it says.
    """
    assert not args or args[0] not in NOT_IN_PROCESS, f"{args[0]} needs a process of its own"
    from typer.testing import CliRunner

    from aina_dsr import cli

    environment: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("DSR_")
    }
    environment.update(HOME=str(cwd), **env)

    def invoke() -> subprocess.CompletedProcess[str]:
        with _HERE, contextlib.chdir(cwd):
            result = CliRunner().invoke(cli.app, list(args), env=environment, prog_name="aina-dsr")
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))
        return subprocess.CompletedProcess(
            ["aina-dsr", *args], result.exit_code, result.stdout, stderr
        )

    pool = ThreadPoolExecutor(1, thread_name_prefix="aina-dsr")
    try:
        return pool.submit(invoke).result(timeout=timeout)
    finally:
        pool.shutdown(wait=False)


def rotate(tmp_path: Path, database_url: str, keys: str) -> tuple[int, str, str]:
    """``aina-dsr keys rotate`` with ``keys`` (new first): exit code, stdout, stderr."""
    result = aina_dsr_here(
        tmp_path, "keys", "rotate", DSR_DATABASE_URL=database_url, DSR_ENCRYPTION_KEY=keys
    )
    return result.returncode, result.stdout, result.stderr
