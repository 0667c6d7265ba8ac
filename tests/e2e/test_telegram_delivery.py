"""The outbox delivering through a real aiogram Bot to the Bot API stand-in."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiogram import Bot
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.delivery import RateLimits, Rendered, SendRateLimiter, TelegramPort
from tests.botapi import BotAPI
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import Audience, Channel, DeliveryReceipt, OutgoingMessage, enqueue
from workflows.persistence.tables import DataSubject, OutboxItem, Request, StaffCard
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = 700100
STAFF_CHAT = -1001234567890
DANA = Actor.staff(STAFF_ID, "Dana")


class CardRenderer:
    """Renders a message as ``<b>template</b> reference``; staff cards carry their request."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def __call__(self, message: OutgoingMessage) -> Rendered:
        text = f"<b>{html.escape(message.template)}</b> {html.escape(message.reference or '')}"
        if message.audience is Audience.STAFF_GROUP and message.template == "staff_card":
            async with self._sessions() as session:
                request_id = await session.scalar(
                    select(Request.id).where(Request.reference == message.reference)
                )
            status = html.escape(str(message.params.get("status")))
            return Rendered(f"{text} <i>{status}</i>", card_request_id=request_id)
        return Rendered(text)


class RecordingMail:
    channel = Channel.EMAIL

    def __init__(self) -> None:
        self.delivered: list[OutgoingMessage] = []

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
        self.delivered.append(message)
        return DeliveryReceipt(external_id=f"<{message.id}@test>", body=message.template)


@pytest.fixture
async def bot(api: BotAPI) -> AsyncIterator[Bot]:
    async with api.bot() as bot:
        yield bot


@pytest.fixture
def mail() -> RecordingMail:
    return RecordingMail()


@pytest.fixture
def outbox(
    bot: Bot,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    mail: RecordingMail,
) -> OutboxDispatcher:
    telegram = TelegramPort(
        bot, CardRenderer(sessions), staff_chat_id=STAFF_CHAT, sessions=sessions, clock=clock
    )
    return OutboxDispatcher(
        sessions, vault, clock, {Channel.TELEGRAM: telegram, Channel.EMAIL: mail}
    )


async def outbox_rows(
    sessions: async_sessionmaker[AsyncSession], template: str | None = None
) -> list[OutboxItem]:
    async with sessions() as session:
        query = select(OutboxItem).order_by(OutboxItem.id)
        if template is not None:
            query = query.where(OutboxItem.template == template)
        return list((await session.scalars(query)).all())


async def drain(outbox: OutboxDispatcher, sessions, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    """Deliver everything, moving the clock a second at a time past the rate limits."""
    for _ in range(10):
        await outbox.run_once()
        if not [r for r in await outbox_rows(sessions) if r.status == "pending"]:
            return
        clock.advance(seconds=1)
    raise AssertionError("the outbox did not drain in ten seconds")


async def verified_request(service: RequestService) -> str:
    view = await service.open_request(
        kind="access", channel="telegram", language="ru", telegram_user_id=ALICE
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=ALICE, contact_user_id=ALICE, phone="+77011234567"
    )
    return view.reference


async def test_a_person_gets_their_message_as_html(
    service: RequestService,
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    view = await service.open_request(
        kind="access", channel="telegram", language="ru", telegram_user_id=ALICE
    )

    assert await outbox.run_once() == 1

    [call] = api.calls("sendMessage")
    assert call.params["chat_id"] == ALICE
    assert call.params["parse_mode"] == "HTML"
    assert call.params["text"] == f"<b>request_received</b> {view.reference}"
    [row] = await outbox_rows(sessions)
    assert row.status == "sent"
    assert row.external_id == f"{ALICE}:{call.result['message_id']}"
    assert await service.messages(view.reference) == [
        ("out", "telegram", f"<b>request_received</b> {view.reference}")
    ]


async def test_a_staff_card_is_posted_once_then_edited_in_place(
    service: RequestService,
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    reference = await verified_request(service)
    await drain(outbox, sessions, clock)
    [posted] = [c for c in api.sent_to(STAFF_CHAT) if c.method == "sendMessage"]
    card_id = posted.result["message_id"]

    clock.advance(seconds=1)
    await service.take(reference, DANA)
    await outbox.run_once()

    [edit] = api.calls("editMessageText")
    assert (edit.params["chat_id"], edit.params["message_id"]) == (STAFF_CHAT, card_id)
    assert edit.params["parse_mode"] == "HTML"
    assert "in_review" in edit.params["text"]
    assert [c.method for c in api.sent_to(STAFF_CHAT)] == ["sendMessage", "editMessageText"]
    async with sessions() as session:
        [card] = (await session.scalars(select(StaffCard))).all()
        assert (card.chat_id, card.message_id) == (STAFF_CHAT, card_id)
    assert {r.status for r in await outbox_rows(sessions)} == {"sent"}


async def test_an_unchanged_card_counts_as_delivered(
    service: RequestService,
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    reference = await verified_request(service)
    await drain(outbox, sessions, clock)
    clock.advance(seconds=1)
    api.fail_next(
        "editMessageText",
        status=400,
        description="Bad Request: message is not modified: specified new message content "
        "and reply markup are exactly the same as a current content and reply markup",
    )
    await service.take(reference, DANA)

    await outbox.run_once()

    assert [r.status for r in await outbox_rows(sessions, "staff_card")] == ["sent", "sent"]
    assert len(api.attempts("editMessageText")) == 1
    assert [c.method for c in api.sent_to(STAFF_CHAT)] == ["sendMessage"]


async def test_a_deleted_card_is_posted_again_and_remembered(
    service: RequestService,
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    reference = await verified_request(service)
    await drain(outbox, sessions, clock)
    clock.advance(seconds=1)
    api.fail_next(
        "editMessageText", status=400, description="Bad Request: message to edit not found"
    )
    await service.take(reference, DANA)

    await outbox.run_once()

    first, second = [c for c in api.sent_to(STAFF_CHAT) if c.method == "sendMessage"]
    async with sessions() as session:
        [card] = (await session.scalars(select(StaffCard))).all()
    assert card.message_id == second.result["message_id"] != first.result["message_id"]
    assert card.updated_at == clock.now()


async def test_a_card_posted_when_its_record_failed_is_kept_with_the_record_and_edited_next(
    service: RequestService,
    engine: AsyncEngine,
    bot: Bot,
    api: BotAPI,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # The card's place is written in its delivery's record (one commit): when that record
    # fails and is made again, the place comes with it, and the card stays one message.
    failing = [True]

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def refuse_sent(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if failing[0] and statement.startswith("UPDATE outbox") and "sent_at" in statement:
            raise OperationalError(statement, None, Exception("disk I/O error"))

    async def pause(_seconds: float) -> None:
        failing[0] = False  # the error passes while the dispatcher waits

    telegram = TelegramPort(
        bot, CardRenderer(sessions), staff_chat_id=STAFF_CHAT, sessions=sessions, clock=clock
    )
    outbox = OutboxDispatcher(sessions, vault, clock, {Channel.TELEGRAM: telegram}, pause=pause)
    reference = await verified_request(service)
    try:
        await drain(outbox, sessions, clock)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", refuse_sent)
    assert not failing[0], "a record failed once"
    [posted] = [c for c in api.sent_to(STAFF_CHAT) if c.method == "sendMessage"]
    async with sessions() as session:
        [card] = (await session.scalars(select(StaffCard))).all()
    assert card.message_id == posted.result["message_id"]

    clock.advance(seconds=1)
    await service.take(reference, DANA)
    await outbox.run_once()

    assert [c.method for c in api.sent_to(STAFF_CHAT)] == ["sendMessage", "editMessageText"]
    assert {r.status for r in await outbox_rows(sessions)} == {"sent"}


async def test_flood_control_waits_as_long_as_telegram_says_then_sends_once(
    service: RequestService,
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE
    )
    api.fail_next("sendMessage", status=429, retry_after=7)
    start = clock.now()

    await outbox.run_once()
    [row] = await outbox_rows(sessions)
    assert row.status == "pending"
    assert row.next_attempt_at == start + timedelta(seconds=7)
    clock.advance(seconds=6)
    assert await outbox.run_once() == 0
    clock.advance(seconds=1)
    assert await outbox.run_once() == 1

    assert len(api.calls("sendMessage")) == 1
    assert len(api.attempts("sendMessage")) == 2
    [row] = await outbox_rows(sessions)
    assert row.status == "sent"


async def test_a_person_who_blocked_the_bot_is_marked_and_written_to_by_email(
    service: RequestService,
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,
    clock,
    mail,  # type: ignore[no-untyped-def]
) -> None:
    view = await service.open_request(
        kind="access", channel="telegram", language="kk", telegram_user_id=ALICE
    )
    person = Actor.person_telegram(ALICE)
    await service.send_email_code(view.reference, person, "aigerim@mail.kz")
    await outbox.run_once()
    code = next(m.params["code"] for m in mail.delivered if m.template == "verification_code")
    clock.advance(seconds=1)
    await service.verify_by_code(view.reference, code, person)
    api.fail_next("sendMessage", status=403, chat_id=ALICE)

    await outbox.run_once()

    async with sessions() as session:
        subject = await session.scalar(
            select(DataSubject).where(DataSubject.telegram_user_id == ALICE)
        )
        assert subject is not None and subject.telegram_unreachable
    [bounced] = [
        r for r in await outbox_rows(sessions, "request_verified") if r.channel == "telegram"
    ]
    assert bounced.status == "failed" and "blocked" in (bounced.last_error or "")
    [copy] = [r for r in await outbox_rows(sessions, "request_verified") if r.channel == "email"]
    assert copy.idempotency_key == f"{bounced.idempotency_key}/email"
    assert await outbox.run_once() == 1
    assert [m.address for m in mail.delivered if m.template == "request_verified"] == [
        "aigerim@mail.kz"
    ]


async def test_a_person_without_email_who_blocked_the_bot_is_reported_to_staff(
    service: RequestService,
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE
    )
    api.fail_next("sendMessage", status=403, chat_id=ALICE)

    await outbox.run_once()
    await outbox.run_once()

    [bounced] = await outbox_rows(sessions, "request_received")
    assert bounced.status == "failed"
    assert (bounced.last_error or "").startswith("unreachable: ")
    [report] = api.sent_to(STAFF_CHAT)
    assert "staff_delivery_failed" in report.params["text"]


@pytest.mark.parametrize(
    ("status", "description", "outcome", "retry_in"),
    [
        (400, "Bad Request: chat not found", "failed", None),
        (500, "Internal Server Error", "pending", timedelta(seconds=5)),
        (502, "Bad Gateway", "pending", timedelta(seconds=5)),
    ],
)
async def test_telegram_errors_become_outbox_outcomes(
    service: RequestService,
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,  # type: ignore[no-untyped-def]
    clock,
    status: int,
    description: str,
    outcome: str,
    retry_in: timedelta | None,
) -> None:
    await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE
    )
    api.fail_next("sendMessage", status=status, description=description, chat_id=ALICE)
    start = clock.now()

    await outbox.run_once()

    [row] = await outbox_rows(sessions, "request_received")
    assert row.status == outcome
    assert description in (row.last_error or "")
    if retry_in is not None:
        assert row.next_attempt_at == start + retry_in


async def test_three_messages_to_one_chat_in_one_second_are_spread_out(
    service: RequestService,
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    for kind in ("access", "rectify", "complaint"):
        await service.open_request(
            kind=kind, channel="telegram", language="en", telegram_user_id=ALICE
        )

    assert await outbox.run_once() == 3
    assert len(api.sent_to(ALICE)) == 1
    assert [r.status for r in await outbox_rows(sessions)] == ["sent", "pending", "pending"]
    assert {r.last_error for r in await outbox_rows(sessions) if r.status == "pending"} == {
        "rate limit"
    }

    for _ in range(5):
        if all(r.status == "sent" for r in await outbox_rows(sessions)):
            break
        clock.advance(seconds=1)
        await outbox.run_once()

    assert len(api.sent_to(ALICE)) == 3
    assert [r.status for r in await outbox_rows(sessions)] == ["sent"] * 3


async def test_the_staff_group_gets_at_most_twenty_messages_a_minute(
    outbox: OutboxDispatcher,
    api: BotAPI,
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    async with sessions.begin() as session:
        for n in range(21):
            await enqueue(
                session,
                vault,
                clock.now(),
                key=f"digest/{n}",
                channel=Channel.TELEGRAM,
                audience=Audience.STAFF_GROUP,
                template="staff_digest",
                language="en",
                params={"n": n},
            )
    start = clock.now()

    for _ in range(21):  # one a second: the per-chat limit
        await outbox.run_once()
        clock.advance(seconds=1)

    assert len(api.sent_to(STAFF_CHAT)) == 20
    [waiting] = [r for r in await outbox_rows(sessions) if r.status == "pending"]
    assert waiting.next_attempt_at == start + timedelta(seconds=60)
    clock.set(start + timedelta(seconds=60))
    await outbox.run_once()
    assert len(api.sent_to(STAFF_CHAT)) == 21


async def test_the_limiter_counts_per_chat_per_group_and_overall(clock: FrozenClock) -> None:
    limiter = SendRateLimiter(clock, RateLimits())

    assert limiter.reserve(ALICE) == 0
    assert limiter.reserve(ALICE) == 1.0
    assert [limiter.reserve(ALICE + n) for n in range(1, 30)] == [0.0] * 29
    assert limiter.reserve(ALICE + 30) == 1.0, "thirty a second in all"
    clock.advance(seconds=0.25)
    assert limiter.wait(ALICE) == 0.75
    clock.advance(seconds=0.75)
    assert limiter.reserve(ALICE) == 0

    for _ in range(20):
        assert limiter.reserve(STAFF_CHAT) == 0
        clock.advance(seconds=1)
    assert limiter.reserve(STAFF_CHAT) == 40.0
    assert limiter.reserve(ALICE) == 0, "other chats are not held up by a busy group"
