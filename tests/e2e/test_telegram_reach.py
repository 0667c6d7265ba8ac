"""Nobody silently unreachable, nothing stuck, no update lost: the Telegram side.

A real aiogram Bot against the Bot API stand-in: a person who blocked the bot
and came back, a message that cannot reach anyone, a card Telegram refuses
as too long, and a database that fails while a person answers staff.
"""

from __future__ import annotations

import html
import logging
import re

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.callbacks import StaffAction, SummaryChoice
from tests.botapi import TEXT_LIMIT, Call, Person, visible_length
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.telegram_desk import STAFF_CHAT, Desk, buttons, message_id, words
from tests.telegram_dialog import answer_questions, start_kind
from workflows.kinds import RequestKind
from workflows.persistence.tables import DataSubject, OutboxItem
from workflows.privacy.masking import mask_email
from workflows.privacy.vault import Vault
from workflows.requests.intake import SharedContact
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = Person(700100, first_name="Aigerim", language_code="ru")
PHONE = "+77011234567"
DANA = Actor.staff(STAFF_ID, "Dana")
BLOCKED = "bot was blocked by the user"


def said(call: Call) -> str:
    return str(call.params.get("text", ""))


async def filed(service: RequestService, language: str = "ru") -> str:
    """A complaint filed in the dialog and verified by the person's own contact card."""
    view = await service.open_request(
        kind="complaint",
        channel="telegram",
        language=language,
        fields={"text": "Why do you send me adverts?"},
        telegram_user_id=ALICE.id,
        body="Why do you send me adverts?",
        contact=SharedContact(user_id=ALICE.id, phone=PHONE),
    )
    return view.reference


async def staff_alert(desk: Desk, since: int, reference: str, reason: str) -> Call:
    """The group's message (not the card) about ``reference`` that gives ``reason``."""
    return await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: reference in said(c) and reason in said(c),
        methods=("sendMessage",),
    )


async def email_code(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> str:
    async with sessions() as session:
        item = await session.scalar(
            select(OutboxItem).where(OutboxItem.template == "request_received_code")
        )
    assert item is not None
    return str((vault.decrypt_json(item.params_enc) or {})["code"])


async def rows(sessions: async_sessionmaker[AsyncSession], template: str) -> list[OutboxItem]:
    async with sessions() as session:
        found = await session.scalars(
            select(OutboxItem).where(OutboxItem.template == template).order_by(OutboxItem.id)
        )
        return list(found)


# -- reachability is a fact of the moment ---------------------------------------------


async def test_a_person_who_blocked_the_bot_and_came_back_hears_the_outcome(
    desk: Desk, service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    reference = await filed(service)
    await desk.expect(ALICE.id, 0, lambda c: reference in said(c))
    desk.api.block(ALICE.id)
    since = desk.mark()
    await service.take(reference, DANA)
    await staff_alert(desk, since, reference, "request_taken")

    desk.api.unblock(ALICE.id)
    since = desk.mark()
    await desk.send(ALICE, "/status")
    await desk.expect(ALICE.id, since, lambda c: reference in said(c))
    since = desk.mark()
    await service.reject(reference, DANA, "Мы не присылаем рекламу без согласия")

    outcome = await desk.expect(ALICE.id, since, lambda c: "без согласия" in said(c))
    assert reference in said(outcome)
    async with sessions() as session:
        subject = await session.scalar(
            select(DataSubject).where(DataSubject.telegram_user_id == ALICE.id)
        )
        assert subject is not None and not subject.telegram_unreachable


async def test_a_message_that_cannot_reach_the_person_is_audited_and_staff_are_told(
    desk: Desk, service: RequestService
) -> None:
    reference = await filed(service)
    await desk.expect(ALICE.id, 0, lambda c: reference in said(c))
    desk.api.block(ALICE.id)

    since = desk.mark()
    await service.take(reference, DANA)
    await staff_alert(desk, since, reference, BLOCKED)
    # Still blocked: the next message is tried again, and fails again out loud.
    since = desk.mark()
    await service.reject(reference, DANA, "Мы не присылаем рекламу без согласия")
    await staff_alert(desk, since, reference, BLOCKED)

    view = await service.get(reference, with_events=True)
    failed = [e.details for e in view.events if e.action == "delivery_failed"]
    assert [d["template"] for d in failed] == ["request_taken", "request_rejected"]
    assert all(BLOCKED in d["reason"] for d in failed)
    assert not [c for c in desk.api.sent_to(ALICE.id) if "без согласия" in said(c)]


async def test_a_person_with_no_channel_left_is_not_forgotten(
    desk: Desk,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    email = "aigerim@mail.kz"
    view = await service.open_request(
        kind="complaint",
        channel="email",
        language="ru",
        email=email,
        body="Why do you send me adverts?",
        send_code_to_email=True,
    )
    await service.verify_by_code(
        view.reference, await email_code(sessions, vault), Actor.person_email(email)
    )
    async with sessions.begin() as session:  # the address is gone (erased, say)
        await session.execute(update(DataSubject).values(email_enc=None, email_index=None))

    since = desk.mark()
    await service.take(view.reference, DANA)

    await staff_alert(desk, since, view.reference, "no way to reach the person")
    taken = await service.get(view.reference, with_events=True)
    [lost] = [e.details for e in taken.events if e.action == "delivery_failed"]
    assert lost["template"] == "request_taken"


# -- nothing longer than Telegram takes, and a refusal is final --------------------------


async def test_an_over_long_card_is_shortened_and_still_reaches_staff(
    desk: Desk,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    # An e-mailed request with long fields and ten attachments.
    fields = {
        "full_name": "Ахметқызы Айгерим Нұрланқызы " * 12,
        "phone": "+77011234567",
        "email": "aigerim@mail.kz",
        "data_concerned": "мои покупки, адреса доставки и история просмотров; " * 30,
        "postal_address": "г. Алматы, ул. Абая, д. 150, кв. 42; " * 20,
        "correction": "фамилия указана неверно, правильно: Ахметқызы. " * 40,
        "text": "Прошу прекратить обработку и удалить всё, что вы обо мне знаете. " * 60,
    }
    evidence = [
        Evidence(
            f"scan-of-my-identity-document-page-{n:02d}-{'x' * 40}.pdf", "application/pdf", b"%"
        )
        for n in range(10)
    ]
    email = "aigerim@mail.kz"
    view = await service.open_request(
        kind="unclassified",
        candidates=(),  # the letter named no kind: every kind is likely
        channel="email",
        language="ru",
        fields=fields,
        email=email,
        body=fields["text"],
        evidence=evidence,
        send_code_to_email=True,
    )
    await service.verify_by_code(
        view.reference, await email_code(sessions, vault), Actor.person_email(email)
    )

    card = await desk.expect(
        STAFF_CHAT, 0, lambda c: view.reference in said(c), methods=("sendMessage",)
    )

    # Unshortened, this card is over 4,096 characters, which Telegram refuses.
    assert visible_length(said(card), "HTML") <= TEXT_LIMIT
    assert "…" in said(card)
    assert f"aina-dsr requests show {view.reference}" in said(card)
    assert "Ахметқызы Айгерим" in said(card)
    # Delivered at the first try: Telegram never had to refuse it.
    assert [c.error for c in desk.api.attempts("sendMessage") if c.chat_id == STAFF_CHAT] == [None]


async def test_a_refused_card_is_not_retried_and_staff_are_told_why(
    desk: Desk,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
) -> None:
    reason = "Bad Request: can't parse entities: unsupported start tag"
    desk.api.fail_next("sendMessage", status=400, description=reason, chat_id=STAFF_CHAT)
    reference = await filed(service)

    await staff_alert(desk, 0, reference, "can&#x27;t parse entities")
    await staff_alert(desk, 0, reference, f"aina-dsr requests show {reference}")
    [card] = await rows(sessions, "staff_card")
    assert (card.status, card.attempts) == ("failed", 1)
    view = await service.get(reference, with_events=True)
    [failed] = [e.details for e in view.events if e.action == "delivery_failed"]
    assert (failed["template"], failed["reason"]) == ("staff_card", reason)

    # An hour on, nothing has tried it again.
    clock.advance(hours=1)
    assert desk.channel is not None
    await desk.channel.outbox.run_once()
    refused = [c for c in desk.api.attempts("sendMessage") if reason == c.error]
    assert len(refused) == 1
    assert [r.status for r in await rows(sessions, "staff_card")] == ["failed"]


async def test_a_refused_message_to_the_person_is_not_retried_and_staff_are_told(
    desk: Desk, service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    reason = "Bad Request: message must be non-empty"
    desk.api.fail_next("sendMessage", status=400, description=reason, chat_id=ALICE.id)
    reference = await filed(service)

    await staff_alert(desk, 0, reference, "message must be non-empty")
    [notice] = [r for r in await rows(sessions, "request_verified") if r.channel == "telegram"]
    assert (notice.status, notice.attempts) == ("failed", 1)
    assert [c.error for c in desk.api.attempts("sendMessage") if c.chat_id == ALICE.id] == [reason]


async def test_a_message_longer_than_telegram_takes_reaches_the_person_in_pieces(
    desk: Desk, service: RequestService
) -> None:
    reference = await filed(service, "en")
    await desk.expect(ALICE.id, 0, lambda c: reference in said(c))
    question = " ".join(f"Which order <{n}> was it & when?" for n in range(200))

    since = desk.mark()
    await service.ask_info(reference, DANA, question)
    await desk.expect(ALICE.id, since, lambda c: "Which order &lt;199&gt;" in said(c))

    pieces = [
        said(c)
        for c in desk.api.calls()[since:]
        if c.method == "sendMessage" and c.chat_id == ALICE.id
    ]
    assert len(pieces) == 2
    assert all(visible_length(piece, "HTML") <= TEXT_LIMIT for piece in pieces)
    read = " ".join(html.unescape(re.sub(r"<[^>]*>", "", piece)) for piece in pieces)
    assert " ".join(question.split()) in " ".join(read.split()), "nothing is lost at the cut"


# -- no update lost -----------------------------------------------------------------------


async def rename(engine: AsyncEngine, old: str, new: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))


async def test_a_database_failure_mid_dialog_asks_to_send_again_and_keeps_nothing_half_done(
    desk: Desk,
    service: RequestService,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kazakh = Person(ALICE.id, first_name="Aigerim", language_code="kk")
    reference = await filed(service, "kk")
    await service.take(reference, DANA)
    await service.ask_info(reference, DANA, "Which order number?")
    await desk.expect(ALICE.id, 0, lambda c: "Which order number?" in said(c))

    await rename(engine, "message", "message_away")  # the database fails the answer
    since = desk.mark()
    with caplog.at_level(logging.ERROR):
        update_id = await desk.api.offer(desk.api.private_message(kazakh, "Order 12345"))
        await desk.expect(ALICE.id, since, lambda c: said(c) == words("kk", "error.send_again"))
    await rename(engine, "message_away", "message")

    assert (await service.get(reference)).status == "awaiting_info"
    assert not [body for _, _, body in await service.messages(reference) if body == "Order 12345"]
    logged = [r.getMessage() for r in caplog.records if str(update_id) in r.getMessage()]
    assert logged and not any("12345" in line for line in logged)

    await desk.send(kazakh, "Order 12345", expect=words("kk", "reply.added", reference=reference))
    assert (await service.get(reference)).status == "in_review"
    answers = [body for _, _, body in await service.messages(reference) if body == "Order 12345"]
    assert answers == ["Order 12345"]


async def test_a_staff_button_that_fails_is_answered_in_the_staffs_language(
    desk: Desk, service: RequestService, engine: AsyncEngine
) -> None:
    reference = await filed(service)
    card = await desk.expect(
        STAFF_CHAT, 0, lambda c: reference in said(c), methods=("sendMessage",)
    )
    await rename(engine, "audit_event", "audit_event_away")
    since = desk.mark()
    await desk.api.offer(
        desk.api.callback_query(
            Person(STAFF_ID, first_name="Dana"),
            STAFF_CHAT,
            int(card.result["message_id"]),
            StaffAction(action="take", reference=reference).pack(),
        )
    )
    answer = await desk.api.wait_until(
        lambda calls: next((c for c in calls[since:] if c.method == "answerCallbackQuery"), None)
    )
    await rename(engine, "audit_event_away", "audit_event")

    assert answer is not None
    assert answer.params.get("text") == words("ru", "error.press_again")
    assert answer.params.get("show_alert") is True
    assert (await service.get(reference)).status == "verified"


async def test_a_request_filed_before_a_failure_is_not_filed_again_when_the_person_presses_again(
    desk: Desk, service: RequestService, engine: AsyncEngine
) -> None:
    who = Person(ALICE.id, first_name="Aigerim", language_code="en")
    await start_kind(desk, who, RequestKind.ACCESS, "en")
    await answer_questions(desk, who, RequestKind.ACCESS, "en")
    since = desk.mark()
    await desk.send(who, "aigerim@mail.kz")
    confirm = SummaryChoice(action="confirm").pack()
    summary = await desk.expect(who.id, since, lambda c: confirm in buttons(c).values())

    # The request is filed, then the code cannot be kept: the press fails half-way.
    await rename(engine, "verification", "verification_away")
    since = desk.mark()
    await desk.press(who, who.id, message_id(summary), confirm)
    await desk.expect(who.id, since, lambda c: said(c) == words("en", "error.press_again"))
    await rename(engine, "verification_away", "verification")

    since = desk.mark()
    await desk.press(who, who.id, message_id(summary), confirm)
    sent = words("en", "code.sent", email=html.escape(mask_email("aigerim@mail.kz")))
    await desk.expect(who.id, since, lambda c: said(c) == sent)
    [view] = await service.list_requests(telegram_user_id=ALICE.id)
    assert view.kind == "access"
