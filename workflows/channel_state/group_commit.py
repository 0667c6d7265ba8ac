"""Many updates' dialog writes share one transaction, so a busy bot pays one commit for many.

A reply never goes out before its dialog state is durable, so every update
waits for a commit; committing each on its own would cost a disk flush per
update. Here the writes that arrive while one transaction runs gather for the
next, so under load many updates share a transaction, and alone an update
waits for nothing but its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Row = TypeVar("Row")


class GroupCommit(Generic[Row]):
    """Commits the rows of many callers in one transaction (a group commit).

    Each caller waits for the transaction that holds its rows, and sees its
    error if that transaction fails.
    """

    def __init__(self, write: Callable[[dict[str, Row]], Awaitable[None]]) -> None:
        self._write = write
        self._rows: dict[str, Row] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def commit(self, rows: dict[str, Row]) -> None:
        """Returns once a transaction holding these rows has committed."""
        waiter = asyncio.get_running_loop().create_future()
        self._rows.update(rows)
        self._waiters.append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="fsm-group-commit")
        await waiter

    async def _run(self) -> None:
        while self._waiters:
            rows, waiters = self._rows, self._waiters
            self._rows, self._waiters = {}, []
            try:
                await self._write(rows)
            except BaseException as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def close(self) -> None:
        """Waits for the transaction under way, if any."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
