"""Where the bot keeps dialog state, so a restart loses no conversation.

By default the state lives in the desk's database, through
:class:`workflows.channel_state.dialogs.DialogStore` (the data, which holds
what the person typed, encrypted by the vault); here is only aiogram's side of
it. When ``DSR_REDIS_URL`` is set, aiogram's Redis storage is used instead, so
several replicas share one view of each dialog: its values sealed by the same
vault, its records expiring (:mod:`bot.redis_storage`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

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
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.update_cache import this_update
from workflows.channel_state.dialogs import DialogRow, DialogStore
from workflows.clock import Clock
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


class DatabaseStorage(BaseStorage):
    """aiogram FSM storage over the desk's dialog store, one record per storage key.

    Outside an update every call is a transaction of its own. Within an update
    (under :class:`bot.update_cache.UpdateCacheMiddleware`) the record is read
    once and written once, before the update's first Bot API call and at its
    end, in a transaction shared with whatever other updates write at that moment.

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
        self._store = DialogStore(
            sessions,
            vault,
            clock,
            remember=remember,
            remember_seconds=remember_seconds,
            monotonic=monotonic,
        )
        self._key_builder = key_builder or default_key_builder()
        self._together = together

    def _key(self, key: StorageKey) -> str:
        return self._key_builder.build(key)

    # -- reading ------------------------------------------------------------------

    async def _load(self, key: StorageKey) -> dict[str, Any]:
        """The record's state and data: this update's view, or the store's."""
        name = self._key(key)
        update = this_update()
        if update is not None and name in update.rows:
            return update.rows[name]
        state, data = await self._store.load(name, also=lambda: self._together_with(key))
        loaded = {"state": state, "data": data}
        if update is not None:
            update.rows[name] = loaded
        return loaded

    def _together_with(self, key: StorageKey) -> list[str]:
        """The person's records of the ``together`` destinies, read with ``key``'s."""
        return [self._key(dataclasses.replace(key, destiny=d)) for d in self._together]

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
            await self._store.save({self._key(key): DialogRow(value, current["data"])})

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        _require_dict(data)
        value = copy.deepcopy(dict(data))
        if not await self._owe(key, data=value):
            current = await self._load(key)
            await self._store.save({self._key(key): DialogRow(current["state"], value)})

    async def update_data(self, key: StorageKey, data: Mapping[str, Any]) -> dict[str, Any]:
        if this_update() is not None:
            current = copy.deepcopy((await self._load(key))["data"])
            current.update(data)
            await self.set_data(key, current)
            return copy.deepcopy(current)
        return await self._store.merge_data(self._key(key), data)

    async def _owe(self, key: StorageKey, **values: Any) -> bool:
        """Within an update: changes its view of the record and owes the write; else False."""
        update = this_update()
        if update is None:
            return False
        row = await self._load(key)
        if any(row[name] != value for name, value in values.items()):
            row.update(values)
            update.owed[self._key(key)] = self._store  # (what is there already is not written)
        return True

    async def close(self) -> None:
        await self._store.close()


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
