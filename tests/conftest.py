"""Shared fixtures: a database per test (SQLite, and PostgreSQL when asked), a clock, a vault."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.botapi import BotAPI
from tests.clocks import FrozenClock
from tests.migrated import MigratedTemplate
from tests.paths import DATA
from tests.telegram_desk import Desk
from workflows.deadlines.calendar import WorkingCalendar
from workflows.directory.csv_import import import_customers, import_purchases
from workflows.directory.sql_directory import SqlDirectory
from workflows.persistence.engines import make_engine, make_sessionmaker
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

STAFF_ID = 5001
STAFF_IDS = frozenset({STAFF_ID, 5002})


def postgres_url() -> str | None:
    """The PostgreSQL the suite also runs on, from ``DSR_TEST_DATABASE_URL``."""
    url = os.environ.get("DSR_TEST_DATABASE_URL")
    if not url:
        return None
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


BACKENDS = ["sqlite"] + (["postgresql"] if postgres_url() else [])

LAYERS = ("unit", "integration", "e2e")


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own, which names each test's group
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its folder's layer, so ``-m "not e2e"`` works as ``tests/unit`` does.

    Under ``--dist loadgroup``, refuse to run tests of an ``xdist_group`` that the
    worker did not group: they share a Redis database or a process, and run side by
    side on two workers they would meet. pytest 9.2 silently stops the grouping
    (pytest-xdist issue 1386), so this is checked, not assumed.
    """
    for item in items:
        layer = item.path.parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))
    if getattr(config.option, "loadgroup", False):
        ungrouped = [
            item.nodeid
            for item in items
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
        ]
        if ungrouped:
            raise pytest.UsageError(
                f"--dist loadgroup does not group {len(ungrouped)} test(s), e.g. "
                f"{ungrouped[0]}: this pytest breaks pytest-xdist's groups (use pytest<9.2)"
            )


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/desk.db"
        return
    url = postgres_url()
    assert url is not None
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


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> MigratedTemplate:
    """The database at head, migrated once per test process (once per xdist worker)."""
    return MigratedTemplate(tmp_path_factory.mktemp("migrated"))


@pytest.fixture
async def engine(
    database_url: str, migrated_template: MigratedTemplate
) -> AsyncIterator[AsyncEngine]:
    """The test's database, at head: a copy of the migrated template."""
    await migrated_template.fill(database_url)
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine, vault: Vault) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine, vault)


@pytest.fixture(scope="session")
def encryption_key() -> str:
    return Vault.generate_key()


@pytest.fixture
def vault(encryption_key: str) -> Vault:
    return Vault(encryption_key)


@pytest.fixture
def clock() -> FrozenClock:
    # Tuesday 24 November 2026, 11:00 in Almaty.
    return FrozenClock(datetime(2026, 11, 24, 6, 0, tzinfo=UTC))


@pytest.fixture
def calendar() -> WorkingCalendar:
    return WorkingCalendar()


@pytest.fixture
def service(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> RequestService:
    return RequestService(sessions, vault, clock, calendar, staff_user_ids=STAFF_IDS)


@pytest.fixture
async def directory(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, clock: FrozenClock
) -> SqlDirectory:
    """The customer directory, tests/data's customers and purchases imported (C-1001 is Alice)."""
    await import_customers(sessions, vault, DATA / "customers.csv", now=clock.now())
    await import_purchases(sessions, vault, DATA / "purchases.csv")
    return SqlDirectory(sessions, vault, clock)


# The Telegram channel against the Bot API stand-in, shared by the bot's tests.


@pytest.fixture
async def api() -> AsyncIterator[BotAPI]:
    async with BotAPI() as api:
        yield api


@pytest.fixture
async def desk(
    api: BotAPI,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> AsyncIterator[Desk]:
    desk = Desk(api, service, sessions, vault, clock, STAFF_IDS)
    await desk.start()
    try:
        yield desk
    finally:
        await desk.stop()
