"""One scheduler at a time: who may run the scheduled work.

On PostgreSQL the holder of a session-level advisory lock runs it. The lock is
taken on a connection of its own that is held for as long as the process
leads; when the process dies its connection closes, PostgreSQL drops the lock,
and another process's next try takes it. TCP keepalives on that connection
make the server notice a holder that vanished without closing it. A
transaction-pooling PgBouncer hands a session's connection to others and so
breaks this lock: point the desk at PostgreSQL itself or at a session pool.

On SQLite there is one process (``aina-dsr run`` holds a lock on the file),
so it always leads.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

SCHEDULER_LOCK = "aina-dsr scheduler"


class LeaderLock(Protocol):
    """Taken by the one process that runs the scheduled work."""

    async def acquire(self) -> bool: ...

    async def alive(self) -> bool: ...

    async def release(self) -> None: ...


class SingleProcessLock:
    """SQLite: this process is the only one, so it always leads."""

    async def acquire(self) -> bool:
        return True

    async def alive(self) -> bool:
        return True

    async def release(self) -> None:
        return None


def advisory_key(name: str, schema: str) -> int:
    """A signed 64-bit lock key for ``name`` in ``schema`` (desks in other schemas differ)."""
    digest = hashlib.sha256(f"{name}\x00{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock held on its own connection."""

    def __init__(self, engine: AsyncEngine, name: str = SCHEDULER_LOCK) -> None:
        self._engine = engine
        self._name = name
        self._connection: AsyncConnection | None = None
        self.key: int | None = None

    async def acquire(self) -> bool:
        """Try once, without waiting; ``True`` when this process now holds the lock."""
        if self._connection is not None:
            return await self.alive()
        connection = await self._engine.connect()
        try:
            schema = str(await connection.scalar(text("SELECT current_schema()")))
            key = advisory_key(self._name, schema)
            await keep_alive(connection)
            held = bool(
                await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
            )
            await connection.commit()
        except Exception:
            log.warning("cannot try the lock %r", self._name, exc_info=True)
            await discard(connection)
            return False
        if not held:
            await discard(connection)
            return False
        self._connection, self.key = connection, key
        log.info("this process now holds %r (advisory lock %s)", self._name, key)
        return True

    async def alive(self) -> bool:
        """Whether the lock's connection still works (and so the lock is still ours)."""
        connection = self._connection
        if connection is None:
            return False
        try:
            await connection.scalar(text("SELECT 1"))
            await connection.commit()
        except Exception:
            log.warning(
                "the connection of lock %r is gone; stepping down", self._name, exc_info=True
            )
            self._connection = None
            await discard(connection)
            return False
        return True

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            await connection.commit()
        except Exception:
            log.debug("unlock failed; closing the connection drops the lock", exc_info=True)
        await discard(connection)


async def keep_alive(connection: AsyncConnection) -> None:
    """TCP keepalives on a lock's connection: the server notices a holder gone without a
    goodbye (its machine vanished) within about 25 s, and drops its locks."""
    for setting, value in (
        ("tcp_keepalives_idle", 10),
        ("tcp_keepalives_interval", 5),
        ("tcp_keepalives_count", 3),
    ):
        await connection.execute(text(f"SET {setting} = {value}"))


async def discard(connection: AsyncConnection) -> None:
    """Close a connection that may hold a lock; never hand it back to the pool."""
    try:
        await connection.invalidate()
    except Exception:
        log.debug("invalidating the lock connection failed", exc_info=True)
    try:
        await connection.close()
    except Exception:
        log.debug("closing the lock connection failed", exc_info=True)
