"""The Telegram side of the outbox: delivers one rendered message, or says why not.

The outbox dispatcher owns retries, so nothing here sleeps: a flood-control
answer from Telegram, or a send our own rate limits would refuse, becomes
:class:`RetryLater` with the wait, and the row goes back to the outbox. A 400
(Telegram refuses the message as it is) would be refused again: it is a
:class:`PermanentFailure`, which staff hear about. A text over Telegram's
limit never goes: a card is shortened, any other message split.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from aiogram import Bot
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import (
    BufferedInputFile,
    ForceReply,
    InlineKeyboardMarkup,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    ReplyParameters,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.reachability import mark_unreachable
from bot.telegram_text import shorten, split
from workflows.channel_state.staff_cards import CardMessage, StaffCards
from workflows.clock import Clock
from workflows.metrics import count_telegram_error
from workflows.outbox.queue import (
    Audience,
    Channel,
    DeliveryReceipt,
    OutgoingMessage,
    PermanentFailure,
    RecipientUnreachable,
    RetryLater,
    StaffGroupClosed,
)

log = logging.getLogger(__name__)

Markup = InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | ForceReply


def _count(error: TelegramAPIError) -> None:
    # TelegramRetryAfter -> retry_after, TelegramForbiddenError -> forbidden, ...
    name = type(error).__name__.removeprefix("Telegram").removesuffix("Error")
    count_telegram_error(re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() or "api")


@dataclass(frozen=True)
class Rendered:
    """A message ready for Telegram: HTML text (already escaped) and its keyboard.

    ``card_request_id`` marks a request's card in the staff group, kept as one
    message that is edited in place; ``card_at`` is where it is, when the
    renderer read that with the card (``card_known``), else it is looked up.
    """

    text: str
    reply_markup: Markup | None = None
    card_request_id: int | None = None
    card_known: bool = False
    card_at: CardMessage | None = None
    # A staff message about a request goes into the thread of its card.
    thread_request_id: int | None = None
    # Files sent after the text (an access report's PDF and JSON): (filename, content).
    documents: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class RateLimits:
    """Telegram's published limits for bots."""

    per_chat_per_second: int = 1
    group_per_minute: int = 20
    overall_per_second: int = 30


class _Window:
    """Instants of the sends within the last ``seconds``."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.sent: deque[datetime] = deque()

    def wait(self, now: datetime) -> float:
        """Seconds until one more send fits in the window (0 if it fits now)."""
        while self.sent and (now - self.sent[0]).total_seconds() >= self.seconds:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            return 0.0
        oldest_to_leave = self.sent[len(self.sent) - self.limit]
        return max(0.0, self.seconds - (now - oldest_to_leave).total_seconds())


class SendRateLimiter:
    """Sliding windows over the injected clock: one per chat, one per group, one overall.

    ``reserve`` either takes a slot for a send now or tells how long to wait;
    it never sleeps. Group chats (negative ids) have a per-minute window too.
    """

    def __init__(self, clock: Clock, limits: RateLimits = RateLimits()) -> None:
        self._clock = clock
        self._limits = limits
        self._overall = _Window(limits.overall_per_second, 1.0)
        self._chats: dict[int, _Window] = {}
        self._groups: dict[int, _Window] = {}

    def wait(self, chat_id: int) -> float:
        """Seconds until a send to ``chat_id`` is allowed; 0 when it is allowed now."""
        now = self._clock.now()
        return max(window.wait(now) for window in self._windows(chat_id))

    def reserve(self, chat_id: int) -> float:
        """Take a slot for a send to ``chat_id`` now and return 0, or return the wait."""
        now = self._clock.now()
        windows = self._windows(chat_id)
        delay = max(window.wait(now) for window in windows)
        if delay == 0.0:
            for window in windows:
                window.sent.append(now)
        self._forget_idle(now)
        return delay

    def _windows(self, chat_id: int) -> list[_Window]:
        limits = self._limits
        windows = [
            self._overall,
            self._chats.setdefault(chat_id, _Window(limits.per_chat_per_second, 1.0)),
        ]
        if chat_id < 0:
            windows.append(self._groups.setdefault(chat_id, _Window(limits.group_per_minute, 60.0)))
        return windows

    def _forget_idle(self, now: datetime) -> None:
        # Keeps memory bounded by the chats written to within the last minute.
        for table in (self._chats, self._groups):
            if len(table) > 1000:
                for chat_id, window in list(table.items()):
                    if window.wait(now) == 0.0 and not window.sent:
                        del table[chat_id]


class TelegramPort:
    """The outbox's way out to Telegram: people in private chats, and the staff group."""

    channel = Channel.TELEGRAM

    def __init__(
        self,
        bot: Bot,
        render: Callable[[OutgoingMessage], Awaitable[Rendered]],
        *,
        staff_chat_id: int | None,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        limits: RateLimits = RateLimits(),
        storage: BaseStorage | None = None,
    ) -> None:
        self._bot = bot
        self._render = render
        self._staff_chat_id = staff_chat_id
        self._cards = StaffCards(sessions, clock)
        self._limiter = SendRateLimiter(clock, limits)
        # The dialog storage, where a person's next update finds that they were unreachable.
        self._storage = storage

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
        """Send (or, for a staff card, edit) one message; raise the outbox's errors on failure."""
        chat_id = self._chat_of(message)
        rendered = await self._render(message)
        # One slot per delivery: a card whose edit failed is re-posted in the same slot,
        # or the retry would edit, fail and be held back again, forever.
        delay = self._limiter.reserve(chat_id)
        if delay > 0:
            raise RetryLater("rate limit", delay=delay)
        keep = None
        try:
            if message.audience is Audience.STAFF_GROUP and rendered.card_request_id is not None:
                message_id, posted = await self._card(chat_id, rendered.card_request_id, rendered)
                if posted:  # its place is kept with the delivery's record, in one commit
                    keep = partial(
                        self._cards.write,
                        request_id=rendered.card_request_id,
                        chat_id=chat_id,
                        message_id=message_id,
                    )
            else:
                reply_to = await self._card_message(chat_id, rendered.thread_request_id)
                message_id = await self._send_all(chat_id, rendered, reply_to)
                # A failure part-way retries the whole message: the text may come twice,
                # which is better than a report without its files.
                for filename, content in rendered.documents:
                    await self._bot.send_document(
                        chat_id=chat_id, document=BufferedInputFile(content, filename=filename)
                    )
        except TelegramRetryAfter as exc:
            _count(exc)
            raise RetryLater(f"flood control: {exc.message}", delay=exc.retry_after) from exc
        except TelegramForbiddenError as exc:
            _count(exc)
            if message.audience is Audience.STAFF_GROUP:
                raise StaffGroupClosed(f"staff group closed to the bot: {exc.message}") from exc
            if message.audience is Audience.SUBJECT and self._storage is not None:
                await mark_unreachable(self._storage, self._bot, chat_id)
            raise RecipientUnreachable(exc.message) from exc
        except TelegramBadRequest as exc:
            _count(exc)
            # Telegram refuses the message as it is: sent again, it would be refused again.
            if message.audience is Audience.STAFF_GROUP and "chat not found" in exc.message.lower():
                raise StaffGroupClosed(exc.message) from exc
            raise PermanentFailure(exc.message) from exc
        except TelegramEntityTooLarge as exc:
            _count(exc)
            raise PermanentFailure(exc.message) from exc
        except (TelegramNetworkError, TelegramServerError) as exc:
            _count(exc)
            raise RetryLater(f"{type(exc).__name__}: {exc.message}") from exc
        except TelegramAPIError as exc:
            _count(exc)
            raise
        return DeliveryReceipt(external_id=f"{chat_id}:{message_id}", body=rendered.text, keep=keep)

    def _chat_of(self, message: OutgoingMessage) -> int:
        if message.audience is Audience.STAFF_GROUP:
            if self._staff_chat_id is None:
                raise StaffGroupClosed("no staff chat is configured (DSR_STAFF_CHAT_ID)")
            return self._staff_chat_id
        try:
            return int(message.address or "")
        except ValueError:
            raise PermanentFailure("the message has no Telegram user id to go to") from None

    async def _send_all(self, chat_id: int, rendered: Rendered, reply_to: int | None) -> int:
        """Sends the text in as many messages as Telegram's limit needs; the first one's id.

        The buttons go with the last piece, under the text they belong to.
        """
        pieces = split(rendered.text)
        first: int | None = None
        for number, piece in enumerate(pieces, start=1):
            markup = rendered.reply_markup if number == len(pieces) else None
            message_id = await self._send(
                chat_id, piece, markup, reply_to if first is None else None
            )
            first = message_id if first is None else first
        assert first is not None
        return first

    async def _send(
        self, chat_id: int, text: str, markup: Markup | None, reply_to: int | None = None
    ) -> int:
        sent = await self._bot.send_message(
            chat_id=chat_id,
            text=text,
            parse_mode=ParseMode.HTML,
            reply_markup=markup,
            reply_parameters=(
                ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
                if reply_to is not None
                else None
            ),
        )
        return sent.message_id

    async def _card_message(self, chat_id: int, request_id: int | None) -> int | None:
        if request_id is None:
            return None
        card = await self._cards.find(request_id)
        if card is None or card.chat_id != chat_id:
            return None
        return card.message_id

    async def _card(self, chat_id: int, request_id: int, rendered: Rendered) -> tuple[int, bool]:
        """The card's message id, and whether it was posted now (not edited in place).

        A card is one message, edited in place: if the renderer's own fitting fell
        short, it is cut here rather than refused."""
        text = shorten(rendered.text)
        card = rendered.card_at if rendered.card_known else await self._cards.find(request_id)
        if card is not None and card.chat_id == chat_id:
            message_id = card.message_id
            markup = rendered.reply_markup
            try:
                await self._bot.edit_message_text(
                    text=text,
                    chat_id=chat_id,
                    message_id=message_id,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup if isinstance(markup, InlineKeyboardMarkup) else None,
                )
                return message_id, False
            except TelegramBadRequest as exc:
                reason = exc.message.lower()
                if "message is not modified" in reason:
                    return message_id, False
                if "message to edit not found" not in reason:
                    raise
                log.warning("card of request %s was deleted; posting a new one", request_id)
        return await self._send(chat_id, text, rendered.reply_markup), True
