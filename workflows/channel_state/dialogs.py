"""A chat dialog's state and data between updates, in ``conversation_state``, the data sealed.

The data holds what the person typed, so the vault encrypts it. A dialog with
no state and no data is deleted rather than kept as a row of nulls: clearing a
dialog leaves nothing behind. Writes go through a group commit
(:mod:`workflows.channel_state.group_commit`); a store told to remember keeps
the dialogs it read or wrote in memory (:mod:`workflows.channel_state.recent_dialogs`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.channel_state.group_commit import GroupCommit
from workflows.channel_state.recent_dialogs import RecentDialogs
from workflows.clock import Clock
from workflows.persistence.tables import ConversationState
from workflows.persistence.upsert import upsert
from workflows.privacy.vault import Vault

# Built once: building a statement anew costs more than running it (BENCHMARKS.md 6).
_ROWS = select(ConversationState.key, ConversationState.state, ConversationState.data_enc).where(
    ConversationState.key.in_(bindparam("keys", expanding=True))
)


class DialogRow(NamedTuple):
    """A dialog as stored: its state and its (decrypted) data."""

    state: str | None
    data: dict[str, Any]


class DialogStore:
    """Dialogs by name (the channel's key for a chat): loaded, saved, merged, deleted when empty.

    What :meth:`load` and :meth:`merge_data` return is the caller's own copy.
    ``remember`` keeps that many dialogs in memory, each for ``remember_seconds``;
    only for a process that alone handles its bot's updates.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        *,
        remember: int = 0,
        remember_seconds: float = 600.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._memory: RecentDialogs[DialogRow] | None = (
            RecentDialogs(remember, remember_seconds, monotonic) if remember else None
        )
        self._writer: GroupCommit[DialogRow] = GroupCommit(self._write_rows)

    async def load(
        self, name: str, *, also: Callable[[], Iterable[str]] | None = None
    ) -> DialogRow:
        """The dialog under ``name``: remembered, or read in one query.

        A store that remembers reads the dialogs named by ``also()`` in the same
        query and keeps them for the updates to come (a person's dialog and their
        remembered choices, say), so a new person costs one query, not one per
        record. ``also`` is called only when there is a query to make.
        """
        row = self._memory.recall(name) if self._memory is not None else None
        if row is None:
            names = [name]
            if self._memory is not None and also is not None:
                names.extend(also())
            row = (await self._read(dict.fromkeys(names)))[name]
        return DialogRow(row.state, copy.deepcopy(row.data))

    async def _read(self, names: Iterable[str]) -> dict[str, DialogRow]:
        wanted = list(names)
        async with self._sessions() as session:
            found = {
                row[0]: (row[1], row[2]) for row in await session.execute(_ROWS, {"keys": wanted})
            }
        rows: dict[str, DialogRow] = {}
        for name in wanted:
            state, token = found.get(name, (None, None))
            decrypted = self._vault.decrypt_json(token)
            rows[name] = DialogRow(state, dict(decrypted) if decrypted else {})
            if self._memory is not None:
                self._memory.keep(name, rows[name])
        return rows

    async def save(self, rows: dict[str, DialogRow]) -> None:
        """Writes these dialogs (deleting the empty ones), with whatever others are written
        meanwhile, in one transaction; returns once it has committed."""
        try:
            await self._writer.commit(rows)
        except BaseException:
            if self._memory is not None:
                for name in rows:  # what the database holds is unknown now: read it again
                    self._memory.forget(name)
            raise
        if self._memory is not None:
            for name, (state, data) in rows.items():
                self._memory.keep(name, DialogRow(state, copy.deepcopy(data)))

    async def merge_data(self, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Merges ``data`` into the dialog's data in one transaction; the merged data.

        The row is locked on PostgreSQL, and SQLite's BEGIN IMMEDIATE already
        holds the write lock, so no concurrent merge is lost.
        """
        async with self._sessions.begin() as session:
            row = (
                await session.execute(
                    select(ConversationState.state, ConversationState.data_enc)
                    .where(ConversationState.key == name)
                    .with_for_update()
                )
            ).first()
            state = row[0] if row is not None else None
            decrypted = self._vault.decrypt_json(row[1] if row is not None else None)
            current = dict(decrypted) if decrypted else {}
            current.update(data)
            await self._write(session, {name: DialogRow(state, current)})
        if self._memory is not None:
            self._memory.keep(name, DialogRow(state, copy.deepcopy(current)))
        return copy.deepcopy(current)

    async def _write_rows(self, rows: dict[str, DialogRow]) -> None:
        async with self._sessions.begin() as session:
            await self._write(session, rows)

    async def _write(self, session: AsyncSession, rows: dict[str, DialogRow]) -> None:
        """Upserts the rows with something in them and deletes the empty ones."""
        now = self._clock.now()
        empty = [name for name, (state, data) in rows.items() if state is None and not data]
        full = [
            {
                "key": name,
                "state": state,
                "data_enc": self._vault.encrypt_json(data) if data else None,
                "updated_at": now,
            }
            for name, (state, data) in rows.items()
            if state is not None or data
        ]
        if empty:
            await session.execute(delete(ConversationState).where(ConversationState.key.in_(empty)))
        if full:
            # The rows as parameters, not in the statement: one statement, compiled once
            # for the process (a multi-row VALUES is compiled again each time).
            statement = upsert(session, ConversationState)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[ConversationState.key],
                    set_={
                        "state": statement.excluded.state,
                        "data_enc": statement.excluded.data_enc,
                        "updated_at": statement.excluded.updated_at,
                    },
                ),
                full,
            )

    async def close(self) -> None:
        """Waits for the group commit under way, if any; the sessions stay their maker's."""
        await self._writer.close()
