"""Who holds the outbox's claims, and which holders are gone, so a dead one's claims free at once.

Every outbox dispatcher claims rows under an owner token of its own (a random
string, fresh each time a dispatcher is made). A claim also has a lease; the
lease frees it in the end, but a desk restarted after ``kill -9`` should not
wait the lease out. So each dispatcher first *holds* its token here, and a
claim whose owner is known to be gone is taken back at once:

- **SQLite** (:class:`SoleProcess`): one process delivers a database's outbox.
  That is made true and checked: holding a token takes an exclusive ``flock`` on
  ``<database file>.outbox.lock`` (kept until the last token of the process is
  let go; the kernel drops it when the process dies), and a second process is
  refused with :class:`OutboxOwnedElsewhere`. So every claim whose token this
  process does not hold is stale: a restarted desk sends at once what its dead
  predecessor had claimed.
- **PostgreSQL** (:class:`AdvisoryOwners`): a process holds a session-level
  advisory lock per token, keyed by the token, on a connection of its own. A
  process that dies closes that connection and PostgreSQL drops its locks (at
  once after a crash or SIGKILL; within about 25 s, by TCP keepalives, when its
  machine vanishes). An owner whose lock another session can take is gone.
  As for the scheduler's lock, a transaction-pooling PgBouncer breaks this.
- :class:`LeaseOnly` knows nothing of the others: a claim frees when its lease
  runs out (what a dispatcher made without owners does).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import time
from collections.abc import Collection
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import bindparam, make_url, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workflows.deadlines.leader_lock import advisory_key, discard, keep_alive

log = logging.getLogger(__name__)

# How long a checked lock connection is trusted before it is checked again.
_RECHECK_SECONDS = 1.0


class OutboxOwnedElsewhere(RuntimeError):
    """Another process delivers this SQLite database's outbox (SQLite means one process)."""


class ClaimOwners(Protocol):
    """The live owners of outbox claims, as far as this process can tell."""

    async def hold(self, token: str) -> None:
        """Vouch for ``token`` from now on; called before each claim. Raises when it cannot."""
        ...

    async def gone(self, tokens: Collection[str]) -> set[str]:
        """Those of ``tokens`` whose owner is known to be dead."""
        ...

    async def release(self, token: str) -> None:
        """Stop vouching for ``token`` (its claims become free at once)."""
        ...


class LeaseOnly:
    """Nothing is known about other owners: their claims free when the lease runs out."""

    async def hold(self, token: str) -> None:
        return None

    async def gone(self, tokens: Collection[str]) -> set[str]:
        return set()

    async def release(self, token: str) -> None:
        return None


class SoleProcess:
    """SQLite: this process alone delivers the outbox, so every other token is dead."""

    def __init__(self, database: Path | None) -> None:
        # ``None``: an in-memory database, which no other process can open anyway.
        self._database = database
        self._path = (
            None if database is None else database.with_name(database.name + ".outbox.lock")
        )
        self._file: IO[str] | None = None
        self._tokens: set[str] = set()

    async def hold(self, token: str) -> None:
        if self._path is not None and self._file is None:
            lock = open(self._path, "a")  # noqa: SIM115, ASYNC230 (held until release; local)
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise OutboxOwnedElsewhere(
                    f"another process delivers the outbox of {self._database}: "
                    "SQLite means one process (use PostgreSQL to run several)"
                ) from None
            self._file = lock
        self._tokens.add(token)

    async def gone(self, tokens: Collection[str]) -> set[str]:
        if self._path is not None and self._file is None:
            return set()  # not holding the file: another process may be alive
        return {token for token in tokens if token not in self._tokens}

    async def release(self, token: str) -> None:
        self._tokens.discard(token)
        if not self._tokens and self._file is not None:
            self._file.close()  # closing the file drops the lock
            self._file = None


def owner_key(token: str) -> int:
    """The advisory lock key of an owner token."""
    return advisory_key("aina-dsr outbox owner", token)


class AdvisoryOwners:
    """PostgreSQL: each token is a session-level advisory lock on this process's own connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._tokens: set[str] = set()
        self._checked_at = float("-inf")
        self._guard = asyncio.Lock()  # the connection serves one statement at a time

    async def hold(self, token: str) -> None:
        async with self._guard:
            connection = self._connection
            due = time.monotonic() - self._checked_at >= _RECHECK_SECONDS
            if connection is not None and due and not await _alive(connection):
                # Its locks went with it: others may already have taken our claims back.
                log.warning("the outbox owners' lock connection is gone; locking again")
                await discard(connection)
                connection = self._connection = None
            if connection is None:
                self._connection = await self._connect({*self._tokens, token})
            elif token not in self._tokens:
                await self._lock(connection, token)
            self._tokens.add(token)
            self._checked_at = time.monotonic()

    async def _connect(self, tokens: Collection[str]) -> AsyncConnection:
        connection = await self._engine.connect()
        try:
            await keep_alive(connection)
            for token in sorted(tokens):
                await self._lock(connection, token)
        except BaseException:
            await discard(connection)
            raise
        return connection

    @staticmethod
    async def _lock(connection: AsyncConnection, token: str) -> None:
        held = await connection.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": owner_key(token)}
        )
        await connection.commit()
        if not held:
            # A token is random and fresh: only its own holder, gone astray, could have it.
            raise RuntimeError(f"the outbox owner lock of {token[:8]} is held elsewhere")

    async def gone(self, tokens: Collection[str]) -> set[str]:
        others = {owner_key(token): token for token in tokens if token not in self._tokens}
        if not others:
            return set()
        # A lock another session can take has no holder; the transaction lets it go again.
        statement = text(
            "SELECT k FROM unnest(:keys) AS k WHERE pg_try_advisory_xact_lock(k)"
        ).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))
        async with self._engine.begin() as connection:
            free = await connection.scalars(statement, {"keys": list(others)})
            return {others[key] for key in free}

    async def release(self, token: str) -> None:
        async with self._guard:
            self._tokens.discard(token)
            connection = self._connection
            if connection is None:
                return
            if self._tokens:
                try:
                    await connection.scalar(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": owner_key(token)}
                    )
                    await connection.commit()
                except Exception:
                    log.warning("cannot let go of an outbox owner lock", exc_info=True)
                return
            self._connection = None
            await discard(connection)  # the last token: closing drops the lock


async def _alive(connection: AsyncConnection) -> bool:
    try:
        await connection.scalar(text("SELECT 1"))
        await connection.commit()
    except Exception:
        log.debug("the owners' lock connection failed its check", exc_info=True)
        return False
    return True


def claim_owners(engine: AsyncEngine) -> ClaimOwners:
    """The owners of this process's claims on ``engine``: make one per process and share it."""
    if engine.dialect.name == "postgresql":
        return AdvisoryOwners(engine)
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        return SoleProcess(None)
    return SoleProcess(Path(database).absolute())
