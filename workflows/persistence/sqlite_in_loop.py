"""SQLite statements run on the event loop's own thread; commits, which wait for the disk, do not.

aiosqlite hands every statement to the connection's own thread and back: the
statement waits for that thread, for the event loop to come round again, and
for the GIL, which a busy loop holds for up to its switch interval (5 ms). A
transaction of a dozen statements on a busy desk took a dozen such round
trips, and the process's next writer waited behind all of them (issue 18:
readers' BEGINs alone waited up to 283 ms at 100 updates/s). A statement on a
small local database takes microseconds, so here it runs where it is asked
for, at once; only ``COMMIT``, which waits for the disk to keep the
transaction (``synchronous=FULL``), goes to a thread, and the loop goes on
meanwhile.

A connection here never waits long for SQLite's locks on the loop's thread:
its busy timeout is short (:data:`BUSY_MS`), and a writer's ``BEGIN
IMMEDIATE`` that finds another process writing (a command of the CLI, another
replica) is tried again after an asynchronous sleep (:func:`begin_immediate`)
for as long as the usual busy timeout, the loop serving others meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiosqlite
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.util import await_only

# How long a statement may wait on the loop's thread for a lock another process holds
# (a reader in WAL waits only while a writer rebuilds the shared index: rare and short).
BUSY_MS = 50
# How long a writer waits, in all, for another process's write lock (as SQLite's busy
# timeout did before), and the steps of its asynchronous waits.
WRITE_WAIT_SECONDS = 30.0
_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


class _AtOnce:
    """Stands for aiosqlite's queue to its thread: what is put in it runs at once.

    SQLAlchemy's adapter sets a connection's ``isolation_level`` by putting a
    call in that queue and waiting for its future.
    """

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:
            if future is not None and not future.done():
                future.set_exception(error)
            return
        if future is not None and not future.done():
            future.set_result(result)


class LoopConnection(aiosqlite.Connection):
    """An aiosqlite connection whose statements run on the caller's thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _AtOnce()  # type: ignore[assignment]

    def __await__(self) -> Any:
        return self._open().__await__()

    async def _open(self) -> LoopConnection:
        self._connection = self._connector()
        return self

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def commit(self) -> None:
        connection = self._conn
        # The one call that waits for the disk (the WAL's fsync). Nothing else uses the
        # connection meanwhile: its session awaits this, and if the wait is cancelled the
        # commit is still waited for (a rollback must not run beside it on the loop's thread).
        done = asyncio.get_running_loop().run_in_executor(_committer(), connection.commit)
        cancelled = False
        for _ in range(1_000_000):  # bounded by the commit, which ends
            try:
                await asyncio.shield(done)
                break
            except asyncio.CancelledError:
                if done.cancelled() or done.done():
                    raise
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    def stop(self) -> asyncio.Future[Any] | None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        return None


_COMMITTER: list[ThreadPoolExecutor] = []


def _committer() -> ThreadPoolExecutor:
    """The process's threads that wait for commits (writers take turns, so few are busy)."""
    if not _COMMITTER:
        _COMMITTER.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="sqlite-commit"))
    return _COMMITTER[0]


def connect(database: str, *, uri: bool = False) -> LoopConnection:
    """A connection to ``database`` (a path, or a ``file:`` URI with ``uri=True``).

    Its busy timeout is short: the writers' long wait is :func:`begin_immediate`'s.
    """

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(database, uri=uri, timeout=BUSY_MS / 1000, check_same_thread=False)

    return LoopConnection(connector)


def sqlite_of(connection: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``connection`` when it is one of ours, else None."""
    adapted = connection.connection.dbapi_connection
    driver = getattr(adapted, "_connection", None)
    if isinstance(driver, LoopConnection) and driver._connection is not None:
        return driver._connection
    return None


def begin_immediate(connection: Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for another process's write lock without holding the loop.

    Called in SQLAlchemy's greenlet (a session's or a connection's begin
    event); on a thread-run connection SQLite's own busy timeout waits instead.
    """
    raw = sqlite_of(connection)
    if raw is None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    deadline = time.monotonic() + WRITE_WAIT_SECONDS
    raw.execute("PRAGMA busy_timeout=0")
    try:
        for attempt in range(1_000_000):  # bounded by the deadline
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as error:
                if not _locked(error) or time.monotonic() >= deadline:
                    raise
            await_only(asyncio.sleep(_STEPS[min(attempt, len(_STEPS) - 1)]))
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_MS}")


def _locked(error: OperationalError) -> bool:
    original = error.orig
    return isinstance(original, sqlite3.OperationalError) and "locked" in str(original).lower()
