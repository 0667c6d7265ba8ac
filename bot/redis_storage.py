"""Dialogs in Redis, sealed with the desk's key and forgotten after a while.

aiogram's ``RedisStorage`` keeps what a person typed (names, phones, e-mails,
their answers) as plain JSON for as long as Redis lives. Here every value is a
Fernet token of the vault, the key the database's columns are encrypted with,
so Redis alone reveals nothing; and each token seals, with the value, the name
of the record it was written for, so a record copied from another person's
dialog, or from the state to the data, is refused like any value the desk did
not write. What does not unseal is no dialog: the person starts again.

Every record has a time to live, renewed by each write to it. A write to a
dialog renews its other record too, so state and data expire together: a
dialog untouched for its TTL is gone, as the database storage's rows are
purged by retention. Each destiny may have its own TTL (the remembered
language lives as long as retention allows, the dialog far less).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import KeyBuilder, StateType, StorageKey
from aiogram.fsm.storage.redis import RedisStorage
from redis.asyncio.client import Redis

from workflows.privacy.vault import Vault, VaultError

log = logging.getLogger(__name__)

_Part = Literal["state", "data"]
_OTHER: dict[_Part, _Part] = {"state": "data", "data": "state"}


class SealedRedisStorage(RedisStorage):
    """aiogram's Redis storage with values sealed by the vault and records that expire.

    ``ttl`` is the life of a record untouched; ``ttls`` gives some destinies
    another (``{"prefs": retention}``).
    """

    def __init__(
        self,
        redis: Redis,
        vault: Vault,
        *,
        ttl: timedelta,
        ttls: Mapping[str, timedelta] | None = None,
        key_builder: KeyBuilder | None = None,
    ) -> None:
        super().__init__(redis, key_builder=key_builder)
        self._vault = vault
        self._ttl = ttl
        self._ttls = dict(ttls or {})
        for life in (ttl, *self._ttls.values()):
            if life.total_seconds() < 1:
                raise ValueError("a record's time to live must be at least a second")

    def ttl_for(self, key: StorageKey) -> timedelta:
        """How long a record of this key's destiny lives untouched."""
        return self._ttls.get(key.destiny, self._ttl)

    # -- sealing ------------------------------------------------------------------

    def _seal(self, name: str, value: Any) -> bytes:
        return self._vault.encrypt_json({"record": name, "value": value})

    def _unseal(self, name: str, token: bytes | str) -> tuple[bool, Any]:
        """``(True, value)`` for a token the desk sealed for ``name``; else ``(False, None)``."""
        raw = token.encode() if isinstance(token, str) else token
        try:
            sealed = self._vault.decrypt_json(raw)
        except (VaultError, ValueError):  # not a token of ours, or not JSON inside
            sealed = None
        if isinstance(sealed, dict) and sealed.get("record") == name:
            return True, sealed.get("value")
        # Said without the record's name, which carries the person's Telegram id.
        log.warning(
            "a dialog record in Redis was not sealed by this desk for its place (%s): "
            "taken as no dialog",
            ":".join(name.split(":")[-2:]),  # destiny and part only
        )
        return False, None

    # -- writing ------------------------------------------------------------------

    async def _write(self, key: StorageKey, part: _Part, value: Any) -> None:
        """Sets (or, for ``None``, deletes) one record and renews the dialog's other one."""
        name = self.key_builder.build(key, part)
        seconds = int(self.ttl_for(key).total_seconds())
        async with self.redis.pipeline(transaction=True) as pipe:
            if value is None:
                pipe.delete(name)
            else:
                pipe.set(name, self._seal(name, value), ex=seconds)
            # The dialog is in use: its other record lives as long (no-op when absent).
            pipe.expire(self.key_builder.build(key, _OTHER[part]), seconds)
            await pipe.execute()

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        await self._write(key, "state", value)

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        if not isinstance(data, dict):
            msg = f"Data must be a dict or dict-like object, got {type(data).__name__}"
            raise DataNotDictLikeError(msg)
        await self._write(key, "data", data or None)

    # -- what others left -----------------------------------------------------------

    async def forget_unsealed(self, *, batch: int = 500) -> int:
        """Deletes the dialog records that have no TTL; returns how many.

        This storage gives every record a TTL, so one without was written by
        something else: an earlier version of the desk (in clear, for good) or
        anyone with access to Redis. It could never be read as a dialog, and
        nobody may ever come back to overwrite it, so it goes.
        """
        prefix = self.key_builder.build(StorageKey(bot_id=0, chat_id=0, user_id=0)).split(":")[0]
        forgotten = 0
        names: list[bytes] = []
        async for name in self.redis.scan_iter(match=f"{prefix}:*", count=batch):
            if name.endswith((b":state", b":data")):
                names.append(name)
            if len(names) >= batch:
                forgotten += await self._forget_lasting(names)
                names = []
        if names:
            forgotten += await self._forget_lasting(names)
        return forgotten

    async def _forget_lasting(self, names: list[bytes]) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.ttl(name)
            ttls = await pipe.execute()
        lasting = [name for name, ttl in zip(names, ttls, strict=True) if ttl == -1]
        if lasting:
            await self.redis.delete(*lasting)
        return len(lasting)

    # -- reading ------------------------------------------------------------------

    async def get_state(self, key: StorageKey) -> str | None:
        name = self.key_builder.build(key, "state")
        token = await self.redis.get(name)
        if token is None:
            return None
        ok, value = self._unseal(name, token)
        return value if ok and isinstance(value, str) else None

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        name = self.key_builder.build(key, "data")
        token = await self.redis.get(name)
        if token is None:
            return {}
        ok, value = self._unseal(name, token)
        return value if ok and isinstance(value, dict) else {}
