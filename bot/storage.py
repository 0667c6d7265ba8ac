"""Where the bot keeps dialog state, so a restart loses no conversation.

By default the state lives in the desk's database (``conversation_state``),
with the data, which holds what the person typed, encrypted by the vault.
When ``DSR_REDIS_URL`` is set, aiogram's Redis storage is used instead, so
several replicas share one view of each dialog.

A record with no state and no data is deleted rather than kept as a row of
nulls: clearing a dialog (``FSMContext.clear()``) leaves nothing behind.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

from aiogram import BaseMiddleware
from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import (
    BaseEventIsolation,
    BaseStorage,
    DefaultKeyBuilder,
    KeyBuilder,
    StateType,
    StorageKey,
)
from aiogram.fsm.storage.memory import SimpleEventIsolation
from aiogram.types import TelegramObject
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.tables import ConversationState
from workflows.vault import Vault


def default_key_builder() -> KeyBuilder:
    """Keys with the destiny in them, so e.g. a remembered language is a record of its own."""
    return DefaultKeyBuilder(with_destiny=True)


# The rows one update has read or written, so a handler's several reads of its own
# dialog cost one query. One person's updates are handled one at a time (events
# isolation), so nothing else changes the row during an update.
_UPDATE_ROWS: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar(
    "aina_dsr_fsm_rows", default=None
)


class UpdateCacheMiddleware(BaseMiddleware):
    """Gives each update its own small cache of dialog rows (see ``_UPDATE_ROWS``)."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        token = _UPDATE_ROWS.set({})
        try:
            return await handler(event, data)
        finally:
            _UPDATE_ROWS.reset(token)


class DatabaseStorage(BaseStorage):
    """aiogram FSM storage in the ``conversation_state`` table, data encrypted.

    One row per storage key holds both the state and the data. Every call
    runs in a transaction of its own; the storage owns no engine, so
    :meth:`close` leaves the session factory to whoever made it.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        key_builder: KeyBuilder | None = None,
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._key_builder = key_builder or default_key_builder()

    def _key(self, key: StorageKey) -> str:
        return self._key_builder.build(key)

    def _cached(self, key: StorageKey) -> dict[str, Any] | None:
        rows = _UPDATE_ROWS.get()
        return rows.setdefault(self._key(key), {}) if rows is not None else None

    async def _load(self, key: StorageKey) -> dict[str, Any]:
        """The row's state and data, from this update's cache or in one query."""
        cached = self._cached(key)
        if cached is not None and "state" in cached and "data" in cached:
            return cached
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ConversationState.state, ConversationState.data_enc).where(
                        ConversationState.key == self._key(key)
                    )
                )
            ).first()
        state, token = (row[0], row[1]) if row is not None else (None, None)
        data = self._vault.decrypt_json(token)
        loaded = {"state": state, "data": dict(data) if data else {}}
        if cached is not None:
            cached.update(loaded)
        return loaded

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        async with self._sessions.begin() as session:
            if value is None:
                await self._clear_column(session, key, state=None)
            else:
                await self._upsert(session, key, state=value)
        cached = self._cached(key)
        if cached is not None:
            cached["state"] = value

    async def get_state(self, key: StorageKey) -> str | None:
        state: str | None = (await self._load(key))["state"]
        return state

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        _require_dict(data)
        async with self._sessions.begin() as session:
            await self._write_data(session, key, data)
        cached = self._cached(key)
        if cached is not None:
            cached["data"] = copy.deepcopy(dict(data))

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        data: dict[str, Any] = (await self._load(key))["data"]
        return copy.deepcopy(data)

    async def update_data(self, key: StorageKey, data: Mapping[str, Any]) -> dict[str, Any]:
        cached = self._cached(key)
        if cached is not None and "data" in cached:
            # This update already read the row, and nobody else writes it meanwhile.
            current = copy.deepcopy(cached["data"])
            current.update(data)
            await self.set_data(key, current)
            return copy.deepcopy(current)
        # Read, merge and write in one transaction: the row is locked on PostgreSQL,
        # and SQLite's BEGIN IMMEDIATE already holds the write lock.
        async with self._sessions.begin() as session:
            current = await self._read_data(session, key, lock=True)
            current.update(data)
            await self._write_data(session, key, current)
        if cached is not None:
            cached["data"] = copy.deepcopy(current)
        return current.copy()

    async def close(self) -> None:
        pass

    async def _read_data(
        self, session: AsyncSession, key: StorageKey, *, lock: bool
    ) -> dict[str, Any]:
        statement = select(ConversationState.data_enc).where(
            ConversationState.key == self._key(key)
        )
        if lock:
            statement = statement.with_for_update()
        token = await session.scalar(statement)
        data = self._vault.decrypt_json(token)
        return dict(data) if data else {}

    async def _write_data(
        self, session: AsyncSession, key: StorageKey, data: Mapping[str, Any]
    ) -> None:
        if data:
            await self._upsert(session, key, data_enc=self._vault.encrypt_json(dict(data)))
        else:
            await self._clear_column(session, key, data_enc=None)

    async def _upsert(self, session: AsyncSession, key: StorageKey, **values: Any) -> None:
        """Insert the record or set ``values`` on it, leaving its other column alone."""
        now = self._clock.now()
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(ConversationState)
            .values(key=self._key(key), updated_at=now, **values)
            .on_conflict_do_update(
                index_elements=[ConversationState.key], set_={**values, "updated_at": now}
            )
        )
        await session.execute(statement)

    async def _clear_column(self, session: AsyncSession, key: StorageKey, **nulls: None) -> None:
        """Null one column, then drop the record if nothing is left in it."""
        storage_key = self._key(key)
        await session.execute(
            update(ConversationState)
            .where(ConversationState.key == storage_key)
            .values(updated_at=self._clock.now(), **nulls)
        )
        await session.execute(
            delete(ConversationState).where(
                ConversationState.key == storage_key,
                ConversationState.state.is_(None),
                ConversationState.data_enc.is_(None),
            )
        )


def _require_dict(data: Mapping[str, Any]) -> None:
    # The same check aiogram's own storages make, so a caller sees the same error.
    if not isinstance(data, dict):
        msg = f"Data must be a dict or dict-like object, got {type(data).__name__}"
        raise DataNotDictLikeError(msg)


def make_fsm_storage(
    redis_url: str | None,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: Clock,
) -> BaseStorage:
    """Redis storage when a Redis URL is configured, the database otherwise."""
    if redis_url:
        # redis is aiogram's optional extra: a desk without Redis need not install it.
        from aiogram.fsm.storage.redis import RedisStorage

        return RedisStorage.from_url(redis_url, key_builder=default_key_builder())
    return DatabaseStorage(sessions, vault, clock)


def make_events_isolation(redis_url: str | None) -> BaseEventIsolation:
    """One person's updates handled in order: in this process, or across replicas via Redis."""
    if redis_url:
        from aiogram.fsm.storage.redis import RedisEventIsolation

        class _ClosingRedisEventIsolation(RedisEventIsolation):
            # aiogram's close() is a no-op; this isolation owns its pool, so it closes it.
            async def close(self) -> None:
                await self.redis.aclose(close_connection_pool=True)

        return _ClosingRedisEventIsolation.from_url(redis_url, key_builder=default_key_builder())
    return SimpleEventIsolation()
