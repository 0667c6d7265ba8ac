"""The ``aina-dsr`` command frame and the process lifecycle it runs."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from aina_dsr import cli, heap, runtime
from aina_dsr.runtime import Component, serve
from tests.cli_command import aina_dsr
from tests.parts import Crasher, Worker, recording_sleep

# The console script


def test_a_wrong_setting_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = aina_dsr(tmp_path, "check", DSR_ENCRYPTION_KEY="nonsense")

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aina-dsr: DSR_ENCRYPTION_KEY: ")
    assert "nonsense" not in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_setting_refused_inside_a_command_is_one_line_too(tmp_path: Path) -> None:
    # The key is checked only when ``run`` needs it, not while reading the settings.
    result = aina_dsr(tmp_path, "run")

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "aina-dsr: DSR_ENCRYPTION_KEY: is required; generate one with `aina-dsr keys "
        "generate` (or set DSR_DEV_MODE=true for local development)"
    ]


def test_keys_generate_prints_a_usable_key(tmp_path: Path) -> None:
    result = aina_dsr(tmp_path, "keys", "generate")

    assert result.returncode == 0
    key = result.stdout.strip()
    assert len(result.stdout.splitlines()) == 1
    Fernet(key.encode())
    assert "DSR_ENCRYPTION_KEY" in result.stderr
    assert key not in result.stderr


def test_run_with_no_channel_says_what_to_set(tmp_path: Path) -> None:
    result = aina_dsr(tmp_path, "run", DSR_DEV_MODE="true")

    assert result.returncode == 2, result.stderr
    for variable in (
        "DSR_TELEGRAM_BOT_TOKEN",
        "DSR_STAFF_CHAT_ID",
        "DSR_IMAP_HOST",
        "DSR_IMAP_USER",
        "DSR_IMAP_PASSWORD",
        "DSR_SMTP_HOST",
    ):
        assert variable in result.stderr
    assert "DEVELOPMENT MODE" in result.stderr
    assert "Traceback" not in result.stderr
    # On the way it made the development key and the embedded database.
    assert (tmp_path / "dsr-dev.key").exists()
    assert (tmp_path / "aina-dsr.db").exists()


def test_a_second_run_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "aina-dsr.db.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = aina_dsr(tmp_path, "run", DSR_DEV_MODE="true")

    assert result.returncode == 2
    refusal = [line for line in result.stderr.splitlines() if "already using" in line]
    assert refusal == [
        f"aina-dsr: another aina-dsr run is already using {tmp_path / 'aina-dsr.db'}; "
        "SQLite means one process (use PostgreSQL to run several)"
    ]
    assert not (tmp_path / "aina-dsr.db").exists()


def test_check_reports_each_part_without_secrets(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    result = aina_dsr(
        tmp_path,
        "check",
        DSR_ENCRYPTION_KEY=key,
        DSR_DATABASE_URL="sqlite:///desk.db",
        # A mailbox half configured is a failure, not a silence.
        DSR_IMAP_HOST="127.0.0.1",
        DSR_IMAP_PASSWORD="hunter2-imap",
        COLUMNS="200",
    )

    assert result.returncode == 1, result.stdout + result.stderr
    for part in ("settings", "encryption key", "database", "telegram", "imap", "smtp"):
        assert part in result.stdout
    assert "DSR_IMAP_USER" in result.stdout
    assert "DSR_SMTP_HOST" in result.stdout
    assert key not in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_check_exits_0_when_no_configured_part_fails(tmp_path: Path) -> None:
    result = aina_dsr(
        tmp_path, "check", DSR_ENCRYPTION_KEY=Fernet.generate_key().decode(), COLUMNS="200"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "not configured" in result.stdout


def test_db_upgrade_brings_the_schema_to_head(tmp_path: Path) -> None:
    from workflows.persistence.engines import database_revision, head_revision

    result = aina_dsr(tmp_path, "db", "upgrade", DSR_DATABASE_URL="sqlite:///desk.db")

    assert result.returncode == 0, result.stderr
    assert head_revision() in result.stdout
    assert database_revision(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}") == head_revision()


# ``run`` in-process, with the channels and the lifecycle stubbed


@pytest.fixture
def desk_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("DSR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DSR_DEV_MODE", "true")
    monkeypatch.setenv("DSR_TELEGRAM_BOT_TOKEN", "123456:telegram-token")
    monkeypatch.setenv("DSR_STAFF_CHAT_ID", "-1001")
    return tmp_path


def test_run_serves_the_components_it_builds(
    monkeypatch: pytest.MonkeyPatch, desk_dir: Path
) -> None:
    built = [Worker("telegram")]
    served: list[list[Component]] = []

    async def fake_serve(components: list[Component], **_: object) -> int:
        served.append(components)
        return 0

    monkeypatch.setattr(runtime, "build_components", lambda settings, core=None, health=None: built)
    monkeypatch.setattr(runtime, "serve", fake_serve)

    result = CliRunner().invoke(cli.app, ["run"])

    assert result.exit_code == 0, result.output
    assert served == [built]


def test_run_settles_its_heap_once_built_and_before_serving(
    monkeypatch: pytest.MonkeyPatch, desk_dir: Path
) -> None:
    """What start-up built is out of the collector's sight, and young objects go in batches
    (aina_dsr/heap.py: full collections stopped a busy desk for up to 364 ms)."""
    built = [Worker("telegram")]
    seen: list[tuple[int, tuple[int, int, int]]] = []

    async def fake_serve(components: list[Component], **_: object) -> int:
        seen.append((gc.get_freeze_count(), gc.get_threshold()))
        return 0

    monkeypatch.setattr(runtime, "build_components", lambda settings, core=None, health=None: built)
    monkeypatch.setattr(runtime, "serve", fake_serve)
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        result = CliRunner().invoke(cli.app, ["run"])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)

    assert result.exit_code == 0, result.output
    ((frozen, (young, older, oldest)),) = seen
    assert frozen > 10_000  # the modules, the settings, the parts built...
    assert young == heap.YOUNG_THRESHOLD and (older, oldest) == threshold[1:]


# The lifecycle


async def test_a_crashing_part_restarts_with_backoff_while_the_others_keep_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    worker, crasher = Worker("worker"), Crasher(crashes=8)
    asked, sleep = recording_sleep()

    served = asyncio.create_task(
        serve([worker, crasher], install_signals=False, stop=stop, sleep=sleep)
    )
    await asyncio.wait_for(crasher.steady.wait(), 5)

    assert asked == [1, 2, 4, 8, 16, 32, 60, 60]
    assert crasher.starts == 9
    assert worker.starts == 1
    assert not served.done()
    assert caplog.text.count("crasher crashed") == 8
    assert "RuntimeError: crash number 1" in caplog.text  # with its traceback

    stop.set()
    assert await asyncio.wait_for(served, 5) == 0


async def test_a_part_that_ran_a_long_while_restarts_after_a_short_pause() -> None:
    stop = asyncio.Event()
    now = [0.0]
    asked, sleep = recording_sleep()

    class LongLived:
        name = "long-lived"
        starts = 0

        async def run(self, stop: asyncio.Event) -> None:
            self.starts += 1
            if self.starts <= 3:
                raise RuntimeError("quick failure")
            if self.starts == 4:
                now[0] += 3600  # ran an hour, then failed
                raise RuntimeError("failure after an hour")
            stop.set()

    await asyncio.wait_for(
        serve(
            [LongLived()], install_signals=False, stop=stop, sleep=sleep, monotonic=lambda: now[0]
        ),
        5,
    )

    assert asked == [1, 2, 4, 1]


async def test_stop_interrupts_the_pause_before_a_restart() -> None:
    stop = asyncio.Event()
    crasher = Crasher(crashes=1_000)
    pausing = asyncio.Event()

    async def real_sleep(seconds: float) -> None:
        pausing.set()
        await asyncio.sleep(seconds)

    served = asyncio.create_task(
        serve([crasher], install_signals=False, stop=stop, sleep=real_sleep)
    )
    await asyncio.wait_for(pausing.wait(), 5)
    # Now it waits 1 s (real time) before starting again; stop must not wait for that.
    stop.set()

    assert await asyncio.wait_for(served, 0.5) == 0
    assert crasher.starts == 1


async def test_stop_returns_promptly_and_stubborn_parts_are_cancelled() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    class Stubborn:
        name = "stubborn"

        async def run(self, stop: asyncio.Event) -> None:
            try:
                await asyncio.Event().wait()  # ignores stop
            except asyncio.CancelledError:
                cancelled.set()
                raise

    worker = Worker("worker")
    served = asyncio.create_task(
        serve([worker, Stubborn()], install_signals=False, stop=stop, grace=0.1)
    )
    await asyncio.wait_for(worker.running.wait(), 5)
    stop.set()

    assert await asyncio.wait_for(served, 2) == 0
    assert cancelled.is_set()


SERVE_UNTIL_SIGNALLED = textwrap.dedent(
    """
    import asyncio, sys
    from aina_dsr.runtime import serve

    class Idle:
        name = "idle"
        async def run(self, stop):
            print("ready", flush=True)
            await stop.wait()
            print("stopped cleanly", flush=True)

    sys.exit(asyncio.run(serve([Idle()])))
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_process_with_exit_code_0(
    tmp_path: Path, signum: signal.Signals
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_UNTIL_SIGNALLED],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signum)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, err
    assert "stopped cleanly" in out
    assert "Traceback" not in err
