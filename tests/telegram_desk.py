"""A running Telegram channel against the Bot API stand-in, for the dialog and staff tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import SimpleEventIsolation
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channel import TelegramChannel, make_bot
from bot.config import BotConfig
from bot.delivery import RateLimits
from bot.storage import make_fsm_storage
from bot.texts import Texts
from tests.botapi import BotAPI, Call, Person
from tests.clocks import FrozenClock
from workflows.fulfilment.work import Fulfilment
from workflows.i18n import DeskInfo
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

STAFF_CHAT = -1001234567890
# Generous limits: the rate limiter has its own tests; here it would only need clock moves.
NO_LIMITS = RateLimits(per_chat_per_second=1000, group_per_minute=1000, overall_per_second=1000)


def words(language: str, msgid: str, **params: Any) -> str:
    """The exact text the bot sends for ``msgid`` in ``language``."""
    return Texts(language, DeskInfo())(msgid, **params)


class Desk:
    """The bot as it runs in production (dialog, staff group, outbox), on a test's clock."""

    def __init__(
        self,
        api: BotAPI,
        service: RequestService,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: FrozenClock,
        staff_user_ids: frozenset[int],
        storage: Callable[[], BaseStorage] | None = None,
        *,
        fulfilment: Fulfilment | None = None,
        info: DeskInfo | None = None,
    ) -> None:
        self.api = api
        self.fulfilment = fulfilment  # None: the desk's own directory, as in production
        self.service = service
        self.sessions = sessions
        self.vault = vault
        self.clock = clock
        self.config = BotConfig(
            staff_chat_id=STAFF_CHAT, staff_user_ids=staff_user_ids, info=info or DeskInfo()
        )
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.channel: TelegramChannel | None = None
        # Makes the dialog storage at each start (the channel closes it when it stops).
        self._make_storage = storage

    async def start(self) -> None:
        # As `aina-dsr run` polls: the one process handling updates remembers dialogs.
        storage: BaseStorage = (
            self._make_storage()
            if self._make_storage is not None
            else make_fsm_storage(None, self.sessions, self.vault, self.clock, sole_handler=True)
        )
        self.config.outbox_wake = asyncio.Event()
        self.channel = TelegramChannel(
            bot=make_bot(self.api.token, self.api.base),
            config=self.config,
            service=self.service,
            sessions=self.sessions,
            vault=self.vault,
            clock=self.clock,
            storage=storage,
            events_isolation=SimpleEventIsolation(),
            limits=NO_LIMITS,
            outbox_interval=0.05,
            fulfilment=self.fulfilment,
        )
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.channel.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=20)
            self._task = None

    # -- talking to it ---------------------------------------------------------

    def mark(self) -> int:
        return len(self.api.calls())

    async def expect(
        self,
        chat_id: int,
        since: int,
        predicate: Callable[[Call], bool] | None = None,
        *,
        methods: tuple[str, ...] = ("sendMessage", "editMessageText"),
        timeout: float = 10.0,  # noqa: ASYNC109 (a test's bound)
    ) -> Call:
        """The first call to ``chat_id`` after ``since`` that matches (waits, bounded)."""

        def find(calls: list[Call]) -> Call | None:
            for call in calls[since:]:
                if (
                    call.method in methods
                    and str(call.chat_id) == str(chat_id)
                    and (predicate is None or predicate(call))
                ):
                    return call
            return None

        call = await self.api.wait_until(find, timeout=timeout)
        if call is None:
            made = [(c.method, c.chat_id, str(c.params.get("text"))[:90]) for c in self.api.calls()]
            raise AssertionError(f"nothing matched for chat {chat_id}; calls: {made[since:]}")
        return call

    async def send(
        self, user: Person, text: str, expect: str | None = None, **kwargs: Any
    ) -> Call | None:
        since = self.mark()
        await self.api.offer(self.api.private_message(user, text, **kwargs))
        if expect is None:
            return None
        return await self.expect(user.id, since, lambda c: c.params.get("text") == expect)

    async def press(
        self, user: Person, chat_id: int, message_id: int, data: str, expect: str | None = None
    ) -> Call | None:
        since = self.mark()
        await self.api.offer(self.api.callback_query(user, chat_id, message_id, data))
        if expect is None:
            return None
        return await self.expect(chat_id, since, lambda c: c.params.get("text") == expect)


def button(call: Call, index: int = 0) -> str:
    """The callback data of the ``index``-th inline button of a sent message."""
    markup = call.params.get("reply_markup") or {}
    buttons = [b for row in markup.get("inline_keyboard", []) for b in row]
    return str(buttons[index]["callback_data"])


def buttons(call: Call) -> dict[str, str]:
    """Button text → callback data."""
    markup = call.params.get("reply_markup") or {}
    return {b["text"]: b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row}


def message_id(call: Call) -> int:
    result = call.result
    if isinstance(result, dict):
        return int(result["message_id"])
    return int(call.params["message_id"])
