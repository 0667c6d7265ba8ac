"""The deployment's commands, run for real: the image's health check against ``aina-dsr run``,
its entrypoint, the README's SQLite backups of a running desk, and (when a docker daemon
answers) the image itself, built and started as an unprivileged user.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from tests.botapi import BotAPI
from tests.deployment_files import DOCKERFILE, ENTRYPOINT, dockerfile_instructions
from tests.desk_process import DeskProcess, aina_dsr, base_env, eventually, processes
from tests.mailservers import free_port
from tests.telegram_desk import STAFF_CHAT
from workflows.persistence.engines import head_revision

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PERSON = 777001


def health_check_command() -> str:
    """The shell command of the Dockerfile's ``HEALTHCHECK ... CMD``."""
    (check,) = [args for name, args in dockerfile_instructions() if name == "HEALTHCHECK"]
    _, _, command = check.partition(" CMD ")
    assert command, check
    return command


async def run(
    *argv: str,
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = 60,  # noqa: ASYNC109 (a test's bound)
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def python_on_path(directory: Path) -> str:
    """A PATH whose ``python`` and ``aina-dsr`` are this interpreter and this checkout's desk."""
    directory.mkdir(exist_ok=True)
    (directory / "python").symlink_to(sys.executable)
    script = directory / "aina-dsr"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m aina_dsr "$@"\n')
    script.chmod(0o755)
    return f"{directory}:{os.environ.get('PATH', '/usr/bin:/bin')}"


async def health_check(port: int | str, path: str) -> int:
    """The image's health check, as docker runs it (``/bin/sh -c``); its exit code."""
    env = {"PATH": path, "DSR_METRICS_PORT": str(port)}
    code, _ = await run("/bin/sh", "-c", health_check_command(), env=env, timeout=30)
    return code


@asynccontextmanager
async def telegram_desk(
    api: BotAPI, tmp_path: Path, encryption_key: str
) -> AsyncIterator[tuple[DeskProcess, int, str]]:
    """``aina-dsr run`` on SQLite with Telegram and /healthz, until the check passes."""
    port = free_port()
    path = python_on_path(tmp_path / "bin")
    env = {
        **base_env(tmp_path, f"sqlite:///{tmp_path}/aina-dsr.db", encryption_key),
        "DSR_TELEGRAM_BOT_TOKEN": api.token,
        "DSR_TELEGRAM_API_URL": api.base,
        "DSR_STAFF_CHAT_ID": str(STAFF_CHAT),
        "DSR_METRICS_PORT": str(port),
    }
    desk = DeskProcess("desk", env, tmp_path)
    async with processes(desk):
        await desk.start()

        async def healthy() -> bool:
            assert desk.running, desk.log()
            return await health_check(port, path) == 0

        await eventually(healthy, timeout=90, every=0.5, what="the image's health check")
        yield desk, port, path


# The health check


async def test_the_health_check_passes_on_a_working_desk_and_fails_once_it_is_gone(
    api: BotAPI, tmp_path: Path, encryption_key: str
) -> None:
    async with telegram_desk(api, tmp_path, encryption_key) as (desk, port, path):
        assert await desk.stop() == 0
        assert await health_check(port, path) != 0


async def test_the_health_check_fails_when_healthz_answers_503(tmp_path: Path) -> None:
    answer = {"status": 200}

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({}, status=answer["status"])

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    path = python_on_path(tmp_path / "bin")
    try:
        answer["status"] = 200
        assert await health_check(port, path) == 0
        answer["status"] = 503
        assert await health_check(port, path) != 0
    finally:
        await runner.cleanup()


async def test_the_health_check_fails_without_a_metrics_port(tmp_path: Path) -> None:
    assert await health_check("", python_on_path(tmp_path / "bin")) != 0


# The entrypoint


async def test_the_entrypoint_upgrades_the_schema_before_run_and_passes_other_commands(
    tmp_path: Path, encryption_key: str
) -> None:
    env = base_env(tmp_path, f"sqlite:///{tmp_path}/aina-dsr.db", encryption_key)
    env["PATH"] = python_on_path(tmp_path / "bin")

    code, output = await run(str(ENTRYPOINT), "--help", env=env, cwd=tmp_path)
    assert code == 0, output
    assert "Usage: aina-dsr" in output
    assert not (tmp_path / "aina-dsr.db").exists()

    # No command is `run`: the schema first, then the desk (which has no channel here).
    code, output = await run(str(ENTRYPOINT), env=env, cwd=tmp_path)
    assert code == 2, output
    upgraded = output.index(f"schema at revision {head_revision()}")
    assert upgraded < output.index("no channel is configured")

    # Replicas on PostgreSQL leave the upgrade to one command run once.
    fresh = {**env, "DSR_DATABASE_URL": f"sqlite:///{tmp_path}/fresh.db"}
    code, output = await run(
        str(ENTRYPOINT), "run", "--help", env={**fresh, "UPGRADE_ON_START": "false"}, cwd=tmp_path
    )
    assert code == 0, output
    assert "Usage: aina-dsr run" in output
    assert not (tmp_path / "fresh.db").exists()


# Backups (README, "Backups and restore")


def readme_command(start: str) -> list[str]:
    """The README's command line beginning with ``start``, split as the shell would."""
    (line,) = [line for line in README.read_text().splitlines() if line.startswith(start)]
    return shlex.split(line)


async def test_the_readme_backups_of_a_running_desk_are_working_databases(
    api: BotAPI, tmp_path: Path, encryption_key: str
) -> None:
    python_backup = readme_command("python3 -c 'import sqlite3")
    assert python_backup[3:] == ["/var/lib/aina-dsr/aina-dsr.db", "/var/lib/aina-dsr/backup.db"]
    sqlite_backup = readme_command("runuser -u aina-dsr -- sqlite3 ")
    assert sqlite_backup[5] == "/var/lib/aina-dsr/aina-dsr.db"
    assert sqlite_backup[6].startswith(".backup '/var/backups/aina-dsr/")
    database = tmp_path / "aina-dsr.db"
    copies = [tmp_path / "python-backup.db"]
    if shutil.which("sqlite3"):
        copies.append(tmp_path / "sqlite3-backup.db")

    async with telegram_desk(api, tmp_path, encryption_key) as (desk, _, _):
        # Something encrypted to back up: a person's dialog, in the database while it runs.
        await api.offer(api.private_message(PERSON, "/start"))
        await api.wait_for("sendMessage", lambda call: call.chat_id == PERSON, timeout=30)
        code, output = await run(
            sys.executable, "-c", python_backup[2], str(database), str(copies[0]), env={}
        )
        assert code == 0, output
        if len(copies) > 1:
            command = ["sqlite3", str(database), f".backup '{copies[1]}'"]
            code, output = await run(*command, env={"PATH": os.environ["PATH"]})
            assert code == 0, output
        assert desk.running
        assert await desk.stop() == 0

    for copy in copies:
        with sqlite3.connect(copy) as backup:
            assert backup.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert backup.execute("SELECT version_num FROM alembic_version").fetchone() == (
                head_revision(),
            )
    # Every stored value of the copy reads with the key, every audit event verifies (else 1).
    env = base_env(tmp_path, f"sqlite:///{copies[0]}", encryption_key)
    await aina_dsr(env, tmp_path, "keys", "check")


# The image itself


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    info = subprocess.run(["docker", "info"], capture_output=True, timeout=60, check=False)
    return info.returncode == 0


@pytest.mark.timeout(1800)
def test_the_image_builds_and_runs_aina_dsr_as_an_unprivileged_user() -> None:
    if not docker_answers():
        pytest.skip("no docker daemon answers here (`docker info`): the image is not built")
    tag = f"aina-dsr-test:{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        ["docker", "build", "-t", tag, "-f", str(DOCKERFILE), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    try:
        shown = subprocess.run(
            ["docker", "run", "--rm", tag, "--help"], capture_output=True, text=True, check=False
        )
        assert shown.returncode == 0, shown.stderr
        assert "Usage: aina-dsr" in shown.stdout
        uid = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert uid.stdout.strip() not in ("", "0")
        check = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .Config.Healthcheck}}", tag],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "/healthz" in check.stdout
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
