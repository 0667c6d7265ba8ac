"""Every ``aina-dsr`` command fails loudly, in one line: the database away, a wrong key, a bad file.

The commands are read from the typer app itself, so a command added later is
covered without touching this file. The matrix of every command against each
fault calls the app in this process (``aina_dsr_here``: the same command line
and environment, a second less a call); ``run``, and the cases of ``run`` and ``check`` after the
matrix, run as a real process, as an operator (or a cron job) would run them.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import typer
import typer.core
import typer.main
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aina_dsr import cli
from tests.cli_command import NOT_IN_PROCESS, aina_dsr, aina_dsr_here
from tests.clocks import FrozenClock
from tests.conftest import postgres_url
from tests.mailservers import free_port
from tests.paths import DATA
from workflows.directory.csv_import import import_customers
from workflows.persistence.engines import head_revision, make_engine
from workflows.persistence.tables import Customer
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

# A reference of the right shape that no test database holds.
SOME_REFERENCE = "DSR-2026-000001"
# Options a command needs to reach the database at all (an identifier to look up).
NEEDED_OPTIONS: dict[tuple[str, ...], list[str]] = {
    ("customers", "find"): ["--phone", "+77011234567"],
    ("requests", "file"): [
        *("--channel", "post", "--kind", "access", "--received", "2026-01-05"),
        *("--name", "Айгерим", "--address", "Алматы", "--language", "kk"),
    ],
    ("report",): ["--html", "register.html"],
}
# `demo` reads no DSR_ setting: it runs on a throw-away database and key of its own, so
# there is nothing of the operator's for it to fail on (tests/e2e/test_demo.py tests it).
SELF_CONTAINED = {("demo",)}
# Commands with nothing to read from the database, or nothing encrypted to read.
NO_DATABASE = {("keys", "generate")}
NO_KEY_NEEDED = {("keys", "generate"), ("db", "upgrade")}
# A log record as ``aina-dsr run`` writes it (text format): a time first.
LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def every_command() -> list[tuple[str, ...]]:
    """The path of each command of the ``aina-dsr`` app: ("run",), ("requests", "list") ..."""
    found: list[tuple[str, ...]] = []

    def walk(group: typer.core.TyperGroup, path: tuple[str, ...]) -> None:
        for name, command in sorted(group.commands.items()):
            if isinstance(command, typer.core.TyperGroup):
                walk(command, (*path, name))
            else:
                found.append((*path, name))

    root = typer.main.get_command(cli.app)
    assert isinstance(root, typer.core.TyperGroup)
    walk(root, ())
    return found


COMMANDS = [path for path in every_command() if path not in SELF_CONTAINED]


def command_of(path: tuple[str, ...]) -> typer.core.TyperCommand:
    command = typer.main.get_command(cli.app)
    for name in path:
        assert isinstance(command, typer.core.TyperGroup)
        command = command.commands[name]
    assert isinstance(command, typer.core.TyperCommand)
    return command


def arguments(path: tuple[str, ...], directory: Path) -> list[str]:
    """What the command needs on its command line to get as far as the database."""
    given: list[str] = []
    for param in command_of(path).params:
        if not isinstance(param, typer.core.TyperArgument) or not param.required:
            continue
        if param.type_descriptor.annotation is Path:
            csv = directory / f"{param.name}.csv"
            csv.write_text("id;phone\nC-1;+7 701 123 45 67\n", encoding="utf-8")
            given.append(str(csv))
        else:
            given.append(SOME_REFERENCE)
    return [*path, *given, *NEEDED_OPTIONS.get(path, [])]


def failure_lines(stderr: str) -> list[str]:
    """Stderr without the log (``run`` logs as it starts): what the command says of itself."""
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


def assert_one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert result.returncode in (1, 2), shown
    lines = failure_lines(result.stderr)
    assert len(lines) == 1, shown
    [line] = lines
    assert line.startswith("aina-dsr: "), shown
    for word in words:
        assert word in line, shown
    return line


def call(
    path: tuple[str, ...], cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """The command of ``path`` with ``args``: in this process unless it needs one of its own."""
    return (aina_dsr if path[0] in NOT_IN_PROCESS else aina_dsr_here)(cwd, *args, **env)


def ids(path: tuple[str, ...]) -> str:
    return " ".join(path)


def test_the_commands_are_found() -> None:
    # The enumeration itself: a broken walk would make every test below pass on nothing.
    for expected in (("run",), ("check",), ("requests", "list"), ("customers", "import")):
        assert expected in COMMANDS


# The database away


@pytest.mark.parametrize("path", COMMANDS, ids=ids)
def test_every_command_with_postgresql_unreachable_is_one_line(
    path: tuple[str, ...], tmp_path: Path
) -> None:
    keys = f"{Vault.generate_key()},{Vault.generate_key()}"
    url = f"postgresql://desk@127.0.0.1:{free_port()}/desk"

    result = call(
        path, tmp_path, *arguments(path, tmp_path), DSR_DATABASE_URL=url, DSR_ENCRYPTION_KEY=keys
    )

    if path in NO_DATABASE:
        assert result.returncode == 0, result.stderr
        return
    line = assert_one_line(result, "database")
    assert result.returncode == 1, "the database away is exit code 1"
    assert keys.split(",")[0] not in line


@pytest.mark.parametrize("path", COMMANDS, ids=ids)
def test_every_command_with_an_unreadable_sqlite_file_is_one_line(
    path: tuple[str, ...], tmp_path: Path
) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    (tmp_path / "desk.db").mkdir()

    result = call(
        path,
        tmp_path,
        *arguments(path, tmp_path),
        DSR_DATABASE_URL="sqlite:///desk.db",
        DSR_ENCRYPTION_KEY=f"{Vault.generate_key()},{Vault.generate_key()}",
    )

    if path in NO_DATABASE:
        assert result.returncode == 0, result.stderr
        return
    assert_one_line(result, "database")
    assert result.returncode == 1


@pytest.fixture
async def empty_schema() -> AsyncIterator[str]:
    """A PostgreSQL schema no migration has run in."""
    url = postgres_url()
    if url is None:
        pytest.skip("DSR_TEST_DATABASE_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{url}{'&' if '?' in url else '?'}search_path={schema}"
    finally:
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.mark.parametrize("path", COMMANDS, ids=ids)
def test_every_command_on_a_schema_not_migrated_says_to_upgrade(
    path: tuple[str, ...], tmp_path: Path, empty_schema: str
) -> None:
    result = call(
        path,
        tmp_path,
        *arguments(path, tmp_path),
        DSR_DATABASE_URL=empty_schema,
        DSR_ENCRYPTION_KEY=f"{Vault.generate_key()},{Vault.generate_key()}",
    )

    if path in NO_DATABASE or path == ("db", "upgrade"):
        assert result.returncode == 0, result.stderr
        return
    assert_one_line(result, "aina-dsr db upgrade", head_revision())
    assert result.returncode == 1


async def test_customers_import_with_the_database_down_blames_the_database_not_the_file(
    tmp_path: Path,
) -> None:
    url = f"postgresql://desk@127.0.0.1:{free_port()}/desk"

    result = aina_dsr_here(
        tmp_path,
        "customers",
        "import",
        str(DATA / "customers.csv"),
        DSR_DATABASE_URL=url,
        DSR_ENCRYPTION_KEY=Vault.generate_key(),
    )

    line = assert_one_line(result, "database")
    assert "customers.csv" not in line


# A wrong key


@pytest.fixture
async def stored(service: RequestService, database_url: str) -> str:
    """A database holding personal data under the test's key; returns its URL."""
    await service.open_request(
        kind="complaint", channel="email", language="en", email="someone@example.kz"
    )
    return database_url


@pytest.mark.parametrize("path", COMMANDS, ids=ids)
async def test_every_command_with_a_wrong_key_is_one_line_naming_the_setting(
    path: tuple[str, ...], tmp_path: Path, stored: str
) -> None:
    # Well-formed keys, two of them as while replacing one, neither the one the data is under.
    wrong = f"{Vault.generate_key()},{Vault.generate_key()}"

    result = call(
        path,
        tmp_path,
        *arguments(path, tmp_path),
        DSR_DATABASE_URL=stored,
        DSR_ENCRYPTION_KEY=wrong,
    )

    if path in NO_KEY_NEEDED:
        assert result.returncode == 0, result.stderr
        return
    line = assert_one_line(result, "DSR_ENCRYPTION_KEY")
    assert wrong.split(",")[0] not in line and wrong.split(",")[1] not in line


async def test_run_with_a_wrong_key_stops_at_start_naming_the_setting(
    tmp_path: Path, stored: str
) -> None:
    # Telegram configured: with the right key this would start and run until stopped.
    result = aina_dsr(
        tmp_path,
        "run",
        DSR_DATABASE_URL=stored,
        DSR_ENCRYPTION_KEY=Vault.generate_key(),
        DSR_TELEGRAM_BOT_TOKEN="123456:telegram-token",
        DSR_STAFF_CHAT_ID="-1001",
        DSR_TELEGRAM_API_URL=f"http://127.0.0.1:{free_port()}",
    )

    assert result.returncode == 2
    assert_one_line(result, "DSR_ENCRYPTION_KEY", "cannot be read")


async def test_check_with_a_wrong_key_fails_with_that_line(tmp_path: Path, stored: str) -> None:
    result = aina_dsr(
        tmp_path,
        "check",
        DSR_DATABASE_URL=stored,
        DSR_ENCRYPTION_KEY=Vault.generate_key(),
        COLUMNS="300",
    )

    assert result.returncode == 1
    line = assert_one_line(result, "encryption key", "DSR_ENCRYPTION_KEY", "cannot be read")
    assert line.split("DSR_ENCRYPTION_KEY", 1)[1] in " ".join(result.stdout.split())


async def test_a_key_being_replaced_reads_the_data_under_the_old_one(
    tmp_path: Path, stored: str, encryption_key: str
) -> None:
    # NEW,OLD while a rotation is under way: the data is still under OLD, and that is fine.
    keys = f"{Vault.generate_key()},{encryption_key}"

    checked = aina_dsr(
        tmp_path, "check", DSR_DATABASE_URL=stored, DSR_ENCRYPTION_KEY=keys, COLUMNS="300"
    )
    listed = aina_dsr(
        tmp_path, "requests", "list", "--json", DSR_DATABASE_URL=stored, DSR_ENCRYPTION_KEY=keys
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1


async def test_an_empty_database_has_no_key_to_doubt(
    tmp_path: Path, engine: AsyncEngine, database_url: str
) -> None:
    result = aina_dsr_here(
        tmp_path,
        "requests",
        "list",
        "--json",
        DSR_DATABASE_URL=database_url,
        DSR_ENCRYPTION_KEY=Vault.generate_key(),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


async def test_an_import_under_a_wrong_key_writes_nothing(
    tmp_path: Path,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    database_url: str,
) -> None:
    # The shop's list is in; a second import with a mistyped key would re-encrypt every
    # customer under a key nobody holds, unreadable by the right one.
    await import_customers(sessions, vault, DATA / "customers.csv", now=clock.now())
    async with sessions() as session:
        before = (await session.execute(select(Customer.id, Customer.phone_enc))).all()

    result = aina_dsr_here(
        tmp_path,
        "customers",
        "import",
        str(DATA / "customers.csv"),
        DSR_DATABASE_URL=database_url,
        DSR_ENCRYPTION_KEY=Vault.generate_key(),
    )

    assert_one_line(result, "DSR_ENCRYPTION_KEY")
    assert result.returncode == 2
    async with sessions() as session:
        after = (await session.execute(select(Customer.id, Customer.phone_enc))).all()
    assert sorted(after) == sorted(before)


# A bad file


@pytest.mark.parametrize(
    "content",
    # Any byte reads as windows-1251 text: what is not text is binary (a NUL, a workbook).
    [b"id;phone\nC-1;+7 701 123 45 67\n\x00\x01 not text\n", b"PK\x03\x04\x14\x00", b"", None],
    ids=["not-text", "a-workbook", "empty", "a-folder"],
)
async def test_a_bad_csv_is_one_line_naming_the_file(
    tmp_path: Path,
    engine: AsyncEngine,
    database_url: str,
    encryption_key: str,
    content: bytes | None,
) -> None:
    bad = tmp_path / "bad.csv"
    if content is None:
        bad.mkdir()
    else:
        bad.write_bytes(content)

    result = aina_dsr_here(
        tmp_path,
        "customers",
        "import",
        str(bad),
        DSR_DATABASE_URL=database_url,
        DSR_ENCRYPTION_KEY=encryption_key,
    )

    assert_one_line(result, str(bad))
    assert result.returncode == 2


@pytest.mark.parametrize(
    "path", [("requests", "export"), ("directory", "export-suppressions")], ids=ids
)
async def test_an_output_file_that_cannot_be_written_is_one_line(
    path: tuple[str, ...],
    tmp_path: Path,
    engine: AsyncEngine,
    database_url: str,
    encryption_key: str,
) -> None:
    nowhere = tmp_path / "no such folder" / "out.csv"

    result = aina_dsr_here(
        tmp_path,
        *path,
        "--output",
        str(nowhere),
        DSR_DATABASE_URL=database_url,
        DSR_ENCRYPTION_KEY=encryption_key,
    )

    assert_one_line(result, str(nowhere))
    assert result.returncode == 2


def test_the_app_called_in_process_fails_in_one_line_too() -> None:
    # The same frame holds for the app called in-process (as the tests of ``run`` do).
    from typer.testing import CliRunner

    result = CliRunner().invoke(
        cli.app,
        ["requests", "list"],
        env={
            "DSR_DATABASE_URL": f"postgresql://desk@127.0.0.1:{free_port()}/desk",
            "DSR_ENCRYPTION_KEY": Vault.generate_key(),
        },
    )

    assert result.exit_code == 1
    assert "database" in result.output
    assert "Traceback" not in result.output
