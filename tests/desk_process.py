"""``aina-dsr run`` as a real process, for the scale-out and fault tests.

``DeskProcess`` starts ``python -m aina_dsr run`` with a given environment,
writes its log to a file (read while it runs), and stops it with SIGTERM or
kills it with SIGKILL. ``postgres_schema`` makes a schema of its own, owned
by a role of its own, so a test can find (and cut off) exactly the desk's
connections without touching anyone else's on the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import BinaryIO, TypeVar

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import postgres_url
from tests.mailservers import Dovecot, SmtpServer
from workflows.persistence.engines import make_engine

T = TypeVar("T")
DESK_ADDRESS = "aina.app@mercury.kz"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,  # noqa: ASYNC109 (a test's bound)
    every: float = 0.2,
    what: str = "the condition",
) -> T:
    """Until ``probe()`` returns something truthy, at most ``timeout`` seconds; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(every)


def access_letter(number: int) -> bytes:
    """A plain English subject access request from ``person<number>@example.kz``."""
    letter = EmailMessage()
    letter["From"] = f"Person {number} <person{number}@example.kz>"
    letter["To"] = DESK_ADDRESS
    letter["Subject"] = "Subject access request"
    letter["Message-ID"] = f"<fault-{number}-{uuid.uuid4().hex[:8]}@example.kz>"
    letter.set_content(
        f"Hello, please tell me what personal data you hold about me.\nPerson {number}\n"
    )
    return letter.as_bytes()


def append_all(dovecot: Dovecot, letters: list[bytes]) -> None:
    """Put ``letters`` in the inbox over one IMAP session (one login, not one per letter)."""
    with dovecot.client() as box:
        for raw in letters:
            box.append(raw, "INBOX")


def base_env(home: Path, database_url: str, encryption_key: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DSR_ENCRYPTION_KEY": encryption_key,
        "DSR_DATABASE_URL": database_url,
        "DSR_LOG_LEVEL": "INFO",
        # On PostgreSQL a replica that does not lead tries for the scheduler's and the
        # mailbox's lock every second, not every 15: a takeover is seen in seconds.
        "DSR_LEADER_RETRY_SECONDS": "1",
    }
    # The code under test, not whatever copy of the package is installed.
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def mail_env(dovecot: Dovecot, smtp: SmtpServer) -> dict[str, str]:
    return {
        "DSR_IMAP_HOST": dovecot.host,
        "DSR_IMAP_PORT": str(dovecot.port),
        "DSR_IMAP_USER": dovecot.user,
        "DSR_IMAP_PASSWORD": dovecot.password,
        "DSR_IMAP_SECURITY": "none",
        "DSR_IMAP_POLL_SECONDS": "5",
        "DSR_SMTP_HOST": smtp.host,
        "DSR_SMTP_PORT": str(smtp.port),
        "DSR_SMTP_SECURITY": "none",
        "DSR_MAIL_FROM": DESK_ADDRESS,
    }


async def aina_dsr(env: Mapping[str, str], cwd: Path, *args: str) -> str:
    """Run one ``aina-dsr`` command to its end (bounded); returns its output, raises on failure."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aina_dsr",
        *args,
        cwd=cwd,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    text_out = output.decode(errors="replace")
    assert process.returncode == 0, text_out
    return text_out


class DeskProcess:
    """One ``aina-dsr run``; its log goes to ``<name>.log`` in ``directory``."""

    def __init__(self, name: str, env: Mapping[str, str], directory: Path) -> None:
        self.name = name
        self.env = dict(env)
        self.directory = directory
        self.log_file = directory / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._open_log() as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "aina_dsr",
                "run",
                cwd=self.directory,
                env=self.env,
                stdout=log,
                stderr=log,
            )

    def _open_log(self) -> BinaryIO:
        return open(self.log_file, "ab")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    async def stop(self, timeout: float = 30) -> int:  # noqa: ASYNC109 (a test's bound)
        """SIGTERM and wait; returns the exit code."""
        process = self.process
        assert process is not None
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout=timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"{self.name} did not stop on SIGTERM:\n{self.log()}") from None

    async def kill(self) -> None:
        """SIGKILL: no goodbye, no cleanup, as when a machine dies."""
        process = self.process
        assert process is not None
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), timeout=10)

    async def ensure_gone(self) -> None:
        """For teardown: whatever state it is in, it does not outlive the test."""
        if self.running:
            with contextlib.suppress(AssertionError):
                await self.stop(timeout=15)


@contextlib.asynccontextmanager
async def processes(*desks: DeskProcess) -> AsyncIterator[None]:
    """Make sure every process is gone when the block ends, however it ends."""
    try:
        yield
    finally:
        for desk in desks:
            await desk.ensure_gone()


async def lock_holders(engine: AsyncEngine, key: int) -> int:
    """How many sessions hold the advisory lock ``key`` (a bigint key: classid, objid)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    async with engine.connect() as connection:
        held = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid::text::bigint = :high AND objid::text::bigint = :low AND objsubid = 1"
            ),
            {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
        )
    return int(held or 0)


@dataclass(frozen=True)
class PostgresSchema:
    """A fresh schema owned by a role of its own.

    ``url`` logs in as that role (the desk's); ``query_url`` as the admin, in
    the same schema (the test's own view, unaffected when the desk is cut off).
    """

    url: str
    query_url: str
    schema: str
    role: str
    admin: AsyncEngine

    async def terminate_connections(self) -> int:
        """Close every connection the desk has open (as a server restart would)."""
        async with self.admin.connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE usename = :role"
                ),
                {"role": self.role},
            )
            return int(result.scalar_one())

    async def refuse_logins(self, refused: bool) -> None:
        """Let the desk's role log in, or not (the database "away" for new connections)."""
        async with self.admin.begin() as connection:
            login = "NOLOGIN" if refused else "LOGIN"
            await connection.execute(text(f'ALTER ROLE "{self.role}" {login}'))


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[PostgresSchema]:
    """A schema and a role for one test on ``DSR_TEST_DATABASE_URL``; both dropped after."""
    url = postgres_url()
    assert url is not None
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE ROLE "{name}" LOGIN'))
        await connection.execute(text(f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}"'))
    in_schema = make_url(url).update_query_dict({"search_path": name})
    desk_url = in_schema.set(username=name)
    try:
        yield PostgresSchema(
            desk_url.render_as_string(hide_password=False),
            in_schema.render_as_string(hide_password=False),
            name,
            name,
            admin,
        )
    finally:
        async with admin.begin() as connection:
            await connection.execute(text(f'ALTER ROLE "{name}" NOLOGIN'))
        schema = PostgresSchema("", "", name, name, admin)
        await schema.terminate_connections()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
            await connection.execute(text(f'DROP OWNED BY "{name}"'))
            await connection.execute(text(f'DROP ROLE "{name}"'))
        await admin.dispose()
