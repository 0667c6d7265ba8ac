"""Engines, sessions and migrations, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, make_url
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction, SessionTransactionOrigin
from sqlalchemy.util import await_only

import workflows.deadlines.notice_plan

# For their session listeners: every session chains the audit events it writes (audit),
# and a request changed through any session is planned again (notice_plan).
import workflows.privacy.audit
from workflows.persistence import sqlite_in_loop
from workflows.privacy.vault import Vault

# APScheduler keeps its own job table in our database; migrations leave it alone.
FOREIGN_TABLES = frozenset({"apscheduler_jobs"})


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url``, set up for safe concurrent writes on SQLite.

    On PostgreSQL a ``search_path`` query parameter selects the schema.
    SQLite starts every writer's transaction with ``BEGIN IMMEDIATE`` so two
    writers queue on the database lock (for up to 30 s) instead of failing when
    a read lock is upgraded; WAL lets readers go on meanwhile. Its statements
    run on the event loop's thread and its commits on another
    (:mod:`workflows.persistence.sqlite_in_loop`).
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, async_creator=_sqlite_creator(url), **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Connection) -> None:
            # A session's transaction is begun by _begin_session_transaction below, which
            # knows whether the session reads or writes; everyone else writes.
            if not connection.get_execution_options().get(_ORM_BIND):
                sqlite_in_loop.begin_immediate(connection)

        return engine
    parsed = make_url(url)
    search_path = parsed.query.get("search_path")
    if isinstance(search_path, str):
        # A schema of its own (tests, or several desks on one database) as a URL option.
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("server_settings", {})["search_path"] = search_path
        parsed = parsed.difference_update_query(["search_path"])
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(parsed, **kwargs)


def _sqlite_creator(url: str) -> Callable[[], Awaitable[Any]]:
    """Opens the URL's database with statements on the loop's thread (:mod:`.sqlite_in_loop`)."""
    arguments, options = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))

    async def creator() -> Any:
        return await sqlite_in_loop.connect(arguments[0], uri=bool(options.get("uri", False)))

    return creator


def make_sessionmaker(
    engine: AsyncEngine, vault: Vault | None = None
) -> async_sessionmaker[AsyncSession]:
    """The one session factory of a process.

    ``sessions.begin()`` (or ``session.begin()``) is a writer's transaction;
    a session used without it reads. On SQLite the difference matters: a
    writer takes the database's write lock at its start (``BEGIN IMMEDIATE``),
    so two writers queue instead of failing on a lock upgrade, while a reader
    takes none (``BEGIN``: a snapshot in WAL) and never waits behind a writer.

    The sessions sign the audit events they write with ``vault``'s audit key
    (:mod:`workflows.privacy.audit`); without a vault they can read but not audit.
    """
    if engine.dialect.name == "sqlite":
        engine = engine.execution_options(**{_ORM_BIND: True})
    info = workflows.privacy.audit.signing_info(vault) if vault is not None else {}
    return async_sessionmaker(engine, expire_on_commit=False, info=info)


# Marks the connections of sessions, whose BEGIN the session event below issues.
_ORM_BIND = "aina_dsr_session"


@event.listens_for(Session, "after_begin")
def _begin_session_transaction(
    session: Session, transaction: SessionTransaction, connection: Connection
) -> None:
    """On SQLite: a session begun on purpose writes (BEGIN IMMEDIATE); one begun by a read reads.

    The event comes after SQLAlchemy has begun its transaction on the connection
    and before the session's first statement, so the BEGIN here is the first
    thing the database sees.
    """
    if transaction.nested or not connection.get_execution_options().get(_ORM_BIND):
        return  # a savepoint is begun inside the transaction, by SQLAlchemy
    root = transaction
    while root.parent is not None:
        root = root.parent
    writes = root.origin is not SessionTransactionOrigin.AUTOBEGIN
    if not writes:
        connection.exec_driver_sql("BEGIN")
        return
    lock = _writers_of(connection)
    if lock is not None:
        # This process's writers take turns here, in the order they came, before asking
        # SQLite for its write lock: a writer waiting in SQLite's busy handler sleeps in
        # steps of up to 100 ms and may lose the lock to a newer one again and again.
        # A plain acquire: cancelled, it gives up its place and never keeps the lock (on
        # Python 3.11 wait_for could lose a lock granted as it was cancelled, and every
        # later writer of the process would then wait forever). The turn's holder is a
        # transaction under way, bounded by the wait for SQLite's lock (begin_immediate).
        await_only(lock.acquire())
        session.info[_WRITER_TURN] = lock
    try:
        sqlite_in_loop.begin_immediate(connection)
    except BaseException:
        _end_turn(session)
        raise


# In a session's info while its transaction holds this process's writer turn.
_WRITER_TURN = "aina_dsr_writer_turn"
# By pool (one database file), by event loop: the queue of this process's writers.
_WRITERS: weakref.WeakKeyDictionary[Any, dict[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _writers_of(connection: Connection) -> asyncio.Lock | None:
    """The queue of this process's writers to the connection's SQLite file; None off asyncio."""
    if not connection.dialect.is_async:
        return None
    loop = asyncio.get_running_loop()
    by_loop = _WRITERS.setdefault(connection.engine.pool, {})
    if loop not in by_loop:
        for old in [other for other in by_loop if other.is_closed()]:
            del by_loop[old]
        by_loop[loop] = asyncio.Lock()
    return by_loop[loop]


def _end_turn(session: Session) -> None:
    lock = session.info.pop(_WRITER_TURN, None)
    if lock is not None:
        lock.release()


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    """A writer's turn ends with its transaction, once committed or rolled back."""
    if transaction.parent is None:
        _end_turn(session)


def alembic_config() -> Config:
    """Alembic's configuration, pointing at the migrations shipped in the package."""
    config = Config()
    location = resources.files("workflows.persistence") / "migrations"
    config.set_main_option("script_location", str(location))
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` on an open engine."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, revision)


async def downgrade_engine(engine: AsyncEngine, revision: str) -> None:
    """Run the migrations down to ``revision`` (``base`` for an empty schema)."""
    async with engine.begin() as connection:
        await connection.run_sync(_downgrade, revision)


async def engine_revision(engine: AsyncEngine) -> str | None:
    """The revision the database stands at, or ``None`` when it has none."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


def head_revision() -> str:
    """The newest revision shipped with this version."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade_database(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (synchronous; for the CLI)."""

    async def _run() -> None:
        engine = make_engine(url)
        try:
            await upgrade_engine(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(_run())


def database_revision(url: str) -> str | None:
    """The revision of the database at ``url`` (synchronous; for the CLI)."""

    async def _run() -> str | None:
        engine = make_engine(url)
        try:
            return await engine_revision(engine)
        finally:
            await engine.dispose()

    return asyncio.run(_run())
