"""Where the bot keeps dialog state, so a restart loses no conversation.

By default the state lives in the desk's database (``conversation_state``),
with the data, which holds what the person typed, encrypted by the vault.
When ``DSR_REDIS_URL`` is set, aiogram's Redis storage is used instead, so
several replicas share one view of each dialog: its values sealed by the same
vault, its records expiring (:mod:`bot.redis_storage`).

A record with no state and no data is deleted rather than kept as a row of
nulls: clearing a dialog (``FSMContext.clear()``) leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import (
    DEFAULT_DESTINY,
    BaseEventIsolation,
    BaseStorage,
    DefaultKeyBuilder,
    KeyBuilder,
    StateType,
    StorageKey,
)
from aiogram.fsm.storage.memory import SimpleEventIsolation
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import TelegramObject
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.persistence.tables import ConversationState
from workflows.persistence.upsert import upsert
from workflows.privacy.retention import DEFAULT_DIALOG_TTL_HOURS, DEFAULT_RETENTION_DAYS
from workflows.privacy.vault import Vault

log = logging.getLogger(__name__)

# Dialogs kept in memory by a process that alone handles its bot's updates.
REMEMBERED = 20_000
# The destiny of a person's remembered choices (bot.language.PREFS).
PREFS = "prefs"
# A person's records read in one query: the dialog, and their choices.
TOGETHER = (DEFAULT_DESTINY, PREFS)
# How long a dialog in Redis lives untouched (DSR_DIALOG_TTL_HOURS).
DEFAULT_DIALOG_TTL = timedelta(hours=DEFAULT_DIALOG_TTL_HOURS)


def default_key_builder() -> KeyBuilder:
    """Keys with the destiny in them, so e.g. a remembered language is a record of its own."""
    return DefaultKeyBuilder(with_destiny=True)


# The rows one update has read or written, so a handler's several reads of its own
# dialog cost one query and its several writes one transaction. One person's updates
# are handled one at a time (events isolation), so nothing else changes the row
# during an update.
class _UpdateRows:
    """One update's view of the dialog rows it touched, and the writes it still owes."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.owed: dict[str, DatabaseStorage] = {}

    async def flush(self) -> None:
        """Commits what this update wrote so far (one transaction per storage)."""
        while self.owed:
            owed, self.owed = self.owed, {}
            by_storage: dict[int, tuple[DatabaseStorage, dict[str, _Row]]] = {}
            for key, storage in owed.items():
                row = self.rows[key]
                entry = by_storage.setdefault(id(storage), (storage, {}))
                entry[1][key] = (row["state"], copy.deepcopy(row["data"]))
            for storage, rows in by_storage.values():
                await storage.commit_rows(rows)


_UPDATE_ROWS: ContextVar[_UpdateRows | None] = ContextVar("aina_dsr_fsm_rows", default=None)

# A dialog row as written: its state and its (decrypted) data.
_Row = tuple[str | None, dict[str, Any]]


class UpdateCacheMiddleware(BaseMiddleware):
    """Gives each update its own view of dialog rows (see ``_UpdateRows``).

    The writes an update makes are committed before its first call to the Bot
    API (see :class:`FlushBeforeSending`) and at its end, so a reply the person
    sees never runs ahead of the dialog state it belongs to.
    """

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        rows = _UpdateRows()
        token = _UPDATE_ROWS.set(rows)
        try:
            result = await handler(event, data)
            await rows.flush()
            return result
        finally:
            _UPDATE_ROWS.reset(token)


class FlushBeforeSending(BaseRequestMiddleware):
    """A Bot API request middleware: the update's dialog writes are committed first."""

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        rows = _UPDATE_ROWS.get()
        if rows is not None and rows.owed:
            await rows.flush()
        return await make_request(bot, method)


class _GroupWriter:
    """Commits the rows of many updates in one transaction (a group commit).

    Each caller waits for the transaction that holds its rows. While one
    transaction runs, the rows that arrive meanwhile gather for the next, so
    under load many updates share a transaction, and alone an update waits for
    nothing but its own.
    """

    def __init__(self, write: Callable[[dict[str, _Row]], Awaitable[None]]) -> None:
        self._write = write
        self._rows: dict[str, _Row] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def commit(self, rows: dict[str, _Row]) -> None:
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
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


class DatabaseStorage(BaseStorage):
    """aiogram FSM storage in the ``conversation_state`` table, data encrypted.

    One row per storage key holds both the state and the data. Outside an
    update every call is a transaction of its own. Within an update (under
    :class:`UpdateCacheMiddleware`) the row is read once and written once,
    before the update's first Bot API call and at its end, in a transaction
    shared with whatever other updates write at that moment.

    ``remember`` keeps that many dialogs in memory between updates, so an
    update reads nothing; the first read of a person's record also reads their
    records of the ``together`` destinies (the dialog and the remembered
    language, say), so a new person costs one query, not one per record.
    Only for a process that alone handles its bot's updates (long polling:
    Telegram gives updates to one poller); replicas behind a webhook share
    their dialogs through Redis instead. A remembered
    dialog is read again after ``remember_seconds``, so a row changed from
    outside (retention, key rotation) is seen within that time.

    The storage owns no engine, so :meth:`close` leaves the session factory to
    whoever made it.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        key_builder: KeyBuilder | None = None,
        *,
        remember: int = 0,
        remember_seconds: float = 600.0,
        monotonic: Callable[[], float] = time.monotonic,
        together: tuple[str, ...] = (),
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._key_builder = key_builder or default_key_builder()
        self._remember = remember
        self._remember_seconds = remember_seconds
        self._monotonic = monotonic
        self._together = together
        self._memory: OrderedDict[str, tuple[float, _Row]] = OrderedDict()
        self._writer = _GroupWriter(self._write_rows)

    def _key(self, key: StorageKey) -> str:
        return self._key_builder.build(key)

    # -- reading ------------------------------------------------------------------

    async def _load(self, key: StorageKey) -> dict[str, Any]:
        """The row's state and data: this update's view, memory, or one query."""
        name = self._key(key)
        update = _UPDATE_ROWS.get()
        if update is not None and name in update.rows:
            return update.rows[name]
        remembered = self._recall(name)
        if remembered is None:
            remembered = (await self._read(key))[name]
        state, data = remembered
        loaded = {"state": state, "data": copy.deepcopy(data)}
        if update is not None:
            update.rows[name] = loaded
        return loaded

    async def _read(self, key: StorageKey) -> dict[str, _Row]:
        """Reads the row, with the person's rows of the other ``together`` destinies."""
        wanted = {self._key(key): key}
        if self._remember:  # read now, the others are kept for the updates to come
            for destiny in self._together:
                other = dataclasses.replace(key, destiny=destiny)
                wanted.setdefault(self._key(other), other)
        async with self._sessions() as session:
            found = {
                row[0]: (row[1], row[2])
                for row in await session.execute(
                    select(
                        ConversationState.key,
                        ConversationState.state,
                        ConversationState.data_enc,
                    ).where(ConversationState.key.in_(list(wanted)))
                )
            }
        rows: dict[str, _Row] = {}
        for name in wanted:
            state, token = found.get(name, (None, None))
            decrypted = self._vault.decrypt_json(token)
            rows[name] = (state, dict(decrypted) if decrypted else {})
            self._keep(name, rows[name])
        return rows

    def _recall(self, name: str) -> _Row | None:
        if not self._remember:
            return None
        entry = self._memory.get(name)
        if entry is None:
            return None
        if self._monotonic() - entry[0] > self._remember_seconds:
            del self._memory[name]
            return None
        self._memory.move_to_end(name)
        return entry[1]

    def _keep(self, name: str, row: _Row) -> None:
        if not self._remember:
            return
        self._memory[name] = (self._monotonic(), row)
        self._memory.move_to_end(name)
        while len(self._memory) > self._remember:
            self._memory.popitem(last=False)

    async def get_state(self, key: StorageKey) -> str | None:
        state: str | None = (await self._load(key))["state"]
        return state

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        data: dict[str, Any] = (await self._load(key))["data"]
        return copy.deepcopy(data)

    # -- writing ------------------------------------------------------------------

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        if not await self._owe(key, state=value):
            current = await self._load(key)
            await self.commit_rows({self._key(key): (value, current["data"])})

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        _require_dict(data)
        value = copy.deepcopy(dict(data))
        if not await self._owe(key, data=value):
            current = await self._load(key)
            await self.commit_rows({self._key(key): (current["state"], value)})

    async def update_data(self, key: StorageKey, data: Mapping[str, Any]) -> dict[str, Any]:
        if _UPDATE_ROWS.get() is not None:
            current = copy.deepcopy((await self._load(key))["data"])
            current.update(data)
            await self.set_data(key, current)
            return copy.deepcopy(current)
        # Read, merge and write in one transaction: the row is locked on PostgreSQL,
        # and SQLite's BEGIN IMMEDIATE already holds the write lock.
        name = self._key(key)
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
            await self._write(session, {name: (state, current)})
        self._keep(name, (state, copy.deepcopy(current)))
        return copy.deepcopy(current)

    async def _owe(self, key: StorageKey, **values: Any) -> bool:
        """Within an update: changes its view of the row and owes the write; else False."""
        update = _UPDATE_ROWS.get()
        if update is None:
            return False
        row = await self._load(key)
        if any(row[name] != value for name, value in values.items()):
            row.update(values)
            update.owed[self._key(key)] = self  # (a write of what is there already is skipped)
        return True

    async def commit_rows(self, rows: dict[str, _Row]) -> None:
        """Writes these rows, with whatever other updates write meanwhile, in one go."""
        try:
            await self._writer.commit(rows)
        except BaseException:
            for name in rows:  # what the database holds is unknown now: read it again
                self._memory.pop(name, None)
            raise
        for name, (state, data) in rows.items():
            self._keep(name, (state, copy.deepcopy(data)))

    async def _write_rows(self, rows: dict[str, _Row]) -> None:
        async with self._sessions.begin() as session:
            await self._write(session, rows)

    async def _write(self, session: AsyncSession, rows: dict[str, _Row]) -> None:
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
            statement = upsert(session, ConversationState).values(full)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[ConversationState.key],
                    set_={
                        "state": statement.excluded.state,
                        "data_enc": statement.excluded.data_enc,
                        "updated_at": statement.excluded.updated_at,
                    },
                )
            )

    async def close(self) -> None:
        await self._writer.close()


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
    *,
    sole_handler: bool = False,
    dialog_ttl: timedelta = DEFAULT_DIALOG_TTL,
    choices_ttl: timedelta = timedelta(days=DEFAULT_RETENTION_DAYS),
) -> BaseStorage:
    """Redis storage when a Redis URL is configured, the database otherwise.

    ``sole_handler`` says this process alone handles the bot's updates (long
    polling), so the database storage may keep dialogs in memory between updates.

    In Redis every value is sealed by the vault; a dialog untouched for
    ``dialog_ttl`` expires, and a person's remembered choices (the ``prefs``
    records: language, reachability) after ``choices_ttl``, the retention
    period, as the database's retention purges a row untouched that long.
    """
    if redis_url:
        # redis is aiogram's optional extra: a desk without Redis need not install it.
        from redis.asyncio import Redis

        from bot.redis_storage import SealedRedisStorage

        return SealedRedisStorage(
            Redis.from_url(redis_url),
            vault,
            ttl=dialog_ttl,
            ttls={PREFS: choices_ttl},
            key_builder=default_key_builder(),
        )
    if not sole_handler:
        return DatabaseStorage(sessions, vault, clock)
    return DatabaseStorage(sessions, vault, clock, remember=REMEMBERED, together=TOGETHER)


async def forget_unsealed_dialogs(storage: BaseStorage) -> None:
    """At start: the dialog records in Redis that this desk did not write go (see
    :meth:`bot.redis_storage.SealedRedisStorage.forget_unsealed`). A Redis that does
    not answer now is said in the log; the bot starts all the same."""
    from bot.redis_storage import SealedRedisStorage

    if not isinstance(storage, SealedRedisStorage):
        return
    try:
        forgotten = await storage.forget_unsealed()
    except Exception:
        log.warning("could not look for dialog records left without a TTL in Redis", exc_info=True)
        return
    if forgotten:
        log.info("%d dialog records without a TTL (not sealed by this desk) deleted", forgotten)


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
