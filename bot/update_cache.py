"""One update reads its dialog once and writes it once, before its first reply.

A handler reads and writes its dialog several times (state, data, a merge);
each would be a query of its own. Here an update keeps the rows it touched in
a view of its own and owes the writes, committed before its first call to the
Bot API and at its end: a reply the person sees never runs ahead of the
dialog state it belongs to, and the update pays one transaction, shared by the
group commit with whatever other updates write at that moment. One person's
updates are handled one at a time (events isolation), so nothing else changes
the row during an update.

The person's notices the update files (a confirmation) are held in the outbox
(:mod:`workflows.outbox.holds`) and released to this process's dispatcher once
the update's dialog writes are committed: no dispatcher, this one's own round
or another replica's, sends them ahead of the dialog state they belong to.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import TelegramObject

from workflows.channel_state.dialogs import DialogRow, DialogStore
from workflows.outbox.holds import HeldNotices, NoticeHolds


class UpdateDialogs:
    """One update's view of the dialog rows it touched, and the writes it still owes."""

    def __init__(self, holds: NoticeHolds | None = None, held: HeldNotices | None = None) -> None:
        # By storage key: {"state": ..., "data": ...}, as the handlers changed them.
        self.rows: dict[str, dict[str, Any]] = {}
        # By storage key: the store the row is to be written to.
        self.owed: dict[str, DialogStore] = {}
        # Wake-up calls made while writes were owed: made once those writes committed.
        self.wakes: list[AfterDialogWrites] = []
        # The person's notices this update filed, held until its dialog writes commit.
        self._holds = holds
        self._held = held

    async def flush(self) -> None:
        """Commits what this update wrote so far (one transaction per store), then
        releases the notices it held."""
        while self.owed:
            owed, self.owed = self.owed, {}
            by_store: dict[int, tuple[DialogStore, dict[str, DialogRow]]] = {}
            for key, store in owed.items():
                row = self.rows[key]
                entry = by_store.setdefault(id(store), (store, {}))
                entry[1][key] = DialogRow(row["state"], copy.deepcopy(row["data"]))
            for store, rows in by_store.values():
                await store.save(rows)
        self.release()
        wakes, self.wakes = self.wakes, []
        for wake in wakes:
            wake.set_now()

    def release(self) -> None:
        """The notices held so far go to this process's dispatcher (woken), claimed at once."""
        if self._holds is not None and self._held is not None:
            self._holds.release(self._held)


class AfterDialogWrites(asyncio.Event):
    """A wake-up call (the outbox's) that waits for the update's dialog writes.

    A handler changes the dialog, then wakes the outbox to deliver what the
    change filed (the person's confirmation, say). Set at once, the outbox
    could deliver it before the dialog's write is committed, and a reply
    would run ahead of its state; so within an update that owes writes the
    call is made once they are committed (before the update's next Bot API
    call, or at its end).
    """

    def set(self) -> None:
        rows = _THIS_UPDATE.get()
        if rows is not None and rows.owed:
            rows.wakes.append(self)
            return
        super().set()

    def set_now(self) -> None:
        super().set()


_THIS_UPDATE: ContextVar[UpdateDialogs | None] = ContextVar("aina_dsr_fsm_rows", default=None)


def this_update() -> UpdateDialogs | None:
    """The dialogs of the update being handled; None outside an update."""
    return _THIS_UPDATE.get()


class UpdateCacheMiddleware(BaseMiddleware):
    """An outer ``update`` middleware: gives each update its own view of dialog rows.

    What the update wrote is committed at its end, and before its first call
    to the Bot API by :class:`FlushBeforeSending`. With ``holds`` (its
    process's outbox dispatcher's), the person's notices the update files are
    held until then. An update that fails releases them as it ends: no write
    is coming, and the notices' request is committed.
    """

    def __init__(self, holds: NoticeHolds | None = None) -> None:
        self._holds = holds

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        holding: contextlib.AbstractContextManager[HeldNotices | None] = (
            self._holds.hold() if self._holds is not None else contextlib.nullcontext()
        )
        with holding as held:
            rows = UpdateDialogs(self._holds, held)
            token = _THIS_UPDATE.set(rows)
            try:
                result = await handler(event, data)
                await rows.flush()
                return result
            finally:
                _THIS_UPDATE.reset(token)
                rows.release()


class FlushBeforeSending(BaseRequestMiddleware):
    """A Bot API request middleware: the update's dialog writes are committed first."""

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        rows = _THIS_UPDATE.get()
        if rows is not None and rows.owed:
            await rows.flush()
        return await make_request(bot, method)
