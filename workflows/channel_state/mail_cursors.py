"""Where the mail poller stands in each folder: its UIDVALIDITY and the last UID it finished.

The cursor is a ``mail_cursor`` row, so a restart goes on where the last run
stopped. It moves only forward; a new UIDVALIDITY sets it back to the start
(the intake's dedupe, not the old UID, then decides what is new).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.persistence.tables import MailCursor


@dataclass(frozen=True)
class Position:
    """Where reading a folder starts: after ``last_uid``.

    ``reset_from`` is the folder's former UIDVALIDITY when it changed: the
    folder is read again from the start.
    """

    last_uid: int
    reset_from: int | None = None


class MailCursors:
    """One poller's cursors, remembering where each was last read or moved to."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        # The cursor as last read or written here: a move to where it stands writes nothing.
        self._moved: dict[tuple[str, int], int] = {}

    async def start(self, folder: str, validity: int) -> Position:
        """The cursor of ``folder``, made (at 0) or set back to 0 under a new ``validity``."""
        async with self._sessions.begin() as session:
            cursor = await session.scalar(select(MailCursor).where(MailCursor.folder == folder))
            now = self._clock.now()
            self._moved[(folder, validity)] = 0 if cursor is None else int(cursor.last_uid)
            if cursor is None:
                session.add(
                    MailCursor(folder=folder, uidvalidity=validity, last_uid=0, updated_at=now)
                )
                return Position(0)
            if cursor.uidvalidity != validity:
                former = int(cursor.uidvalidity)
                cursor.uidvalidity, cursor.last_uid, cursor.updated_at = validity, 0, now
                self._moved[(folder, validity)] = 0
                return Position(0, reset_from=former)
            return Position(int(cursor.last_uid))

    async def advance(self, folder: str, validity: int, uid: int) -> None:
        """Move the cursor forward to ``uid`` (never back, never under another validity)."""
        if uid <= self._moved.get((folder, validity), 0):
            return  # nothing new below the first UID still to do
        async with self._sessions.begin() as session:
            await session.execute(
                update(MailCursor)
                .where(
                    MailCursor.folder == folder,
                    MailCursor.uidvalidity == validity,
                    MailCursor.last_uid < uid,
                )
                .values(last_uid=uid, updated_at=self._clock.now())
            )
        self._moved[(folder, validity)] = uid
