"""Staff set a request's kind on its card: an unclassified letter's likely kinds, or Change kind.

The real aiogram Bot runs against the Bot API stand-in; the e-mailed person's
letters go through the real SMTP sender to an aiosmtpd server. An unclassified
request arrives as the mail intake opens it (through the service, with its
likely kinds), is verified by its code, and its card offers those kinds.
"""

from __future__ import annotations

import html
from datetime import date, datetime, time
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.callbacks import KindMenu, KindPick, StaffAction
from tests.botapi import Call, Person
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.mail_desk import sender_for
from tests.mailservers import SmtpServer, smtp_server  # noqa: F401
from tests.staff_desk import DANA, card_of, press_button
from tests.telegram_desk import STAFF_CHAT, Desk, buttons, message_id, words
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.reminders import Reminders
from workflows.i18n import DeskInfo, format_date, kind_name, render_notification
from workflows.kinds import CLASSIFIED_KINDS, RequestKind
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import Channel
from workflows.persistence.tables import OutboxItem, Request
from workflows.privacy.vault import Vault
from workflows.requests.intake import EmailOpening
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE_ID = 700100
EMAIL = "aigerim.seitkali@mail.kz"
STRANGER = Person(999, first_name="Mallory")
ALMATY = WorkingCalendar().tz
K = RequestKind


def almaty(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=ALMATY)


def text(call: Call) -> str:
    return str(call.params.get("text", ""))


def kind_button(language: str, kind: RequestKind) -> str:
    """A likely kind's button on the card (plain text, as Telegram shows it)."""
    return words(language, "staff.kind.button", kind=kind_name(language, kind.value))


def notice(template: str, language: str, params: dict[str, Any], *, bot: bool) -> tuple[str, str]:
    """(subject, text) of a notice as the person receives it, in the bot or by e-mail."""
    rendered = render_notification(
        template,
        language,
        params,
        escape=html.escape if bot else (lambda s: s),
        context=DeskInfo().context(language) if bot else None,
    )
    return rendered.subject, rendered.text


async def code_for(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> str:
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxItem).where(OutboxItem.template == "request_received_code")
        )
        (row,) = rows.all()
        return str(vault.decrypt_json(row.params_enc)["code"])


async def letters_out(
    smtp: SmtpServer,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> list[EmailMessage]:
    """Deliver what waits for e-mail through the real sender; every letter received so far."""
    sender = sender_for(smtp, service, clock)
    dispatcher = OutboxDispatcher(sessions, vault, clock, {Channel.EMAIL: sender})
    while await dispatcher.run_once():
        pass
    await sender.close()
    return [received.message for received in smtp.letters]


def body(letter: EmailMessage) -> str:
    part = letter.get_body(preferencelist=("plain",))
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


async def latest_card(desk: Desk, card: Call, since: int, needle: str) -> Call:
    """The card as edited in place after ``since``, once it shows ``needle``."""
    return await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: message_id(c) == message_id(card) and needle in text(c),
        methods=("editMessageText",),
    )


# -- an e-mailed letter the desk could not classify ----------------------------------------


async def test_an_unclassified_letter_shows_its_likely_kinds_and_staff_pick_one(
    desk: Desk,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    # Received Tuesday 24 November 2026, in Kazakh; the classifier hesitates between
    # access (3 working days) and a complaint (30 calendar days).
    (opened,) = await service.open_by_email(
        [
            EmailOpening(
                kind=K.UNCLASSIFIED,
                candidates=(K.ACCESS, K.COMPLAINT),
                language="kk",
                fields={"text": "Менің деректерім туралы не білесіздер?"},
                email=EMAIL,
                body="Менің деректерім туралы не білесіздер?",
                external_id="<question@mail.kz>",
            )
        ]
    )
    reference = opened.reference
    assert opened.kind == "unclassified"
    # The acknowledgement names no kind the desk is unsure of, and gives the shortest date.
    (ack,) = await letters_out(smtp_server, service, sessions, vault, clock)
    assert "Дербес деректер туралы сұрау салу" in body(ack)
    assert words("kk", "mail.ack.due", due=format_date("kk", date(2026, 11, 27))) in body(ack)

    await service.verify_by_code(
        reference, await code_for(sessions, vault), Actor.person_email(EMAIL)
    )
    card = await card_of(desk, reference)
    likely = ", ".join(kind_name("ru", k.value) for k in (K.ACCESS, K.COMPLAINT))
    assert html.escape(words("ru", "staff.card.unclassified", kinds=likely)) in text(card)
    offered = buttons(card)
    assert (
        offered[kind_button("ru", K.ACCESS)] == KindPick(reference=reference, kind="access").pack()
    )
    assert (
        offered[kind_button("ru", K.COMPLAINT)]
        == KindPick(reference=reference, kind="complaint").pack()
    )
    assert words("ru", "staff.kind.other") in offered
    assert words("ru", "staff.approve") not in offered

    # An Approve (an old or forged button) is refused with the reason.
    refused = await press_button(
        desk, DANA, card, StaffAction(action="approve", reference=reference).pack()
    )
    assert refused.params.get("text") == words("ru", "staff.kind.first")
    assert refused.params.get("show_alert") is True

    clock.set(almaty(date(2026, 11, 25), 10))  # Dana reads it the next morning
    since = desk.mark()
    answer = await press_button(desk, DANA, card, offered[kind_button("ru", K.COMPLAINT)])

    # 30 calendar days from receipt on the 24th.
    new_due = format_date("ru", date(2026, 12, 24))
    assert answer.params.get("text") == words(
        "ru",
        "staff.kind.changed",
        reference=reference,
        kind=kind_name("ru", "complaint"),
        due=new_due,
    )
    view = await service.get(reference, with_events=True)
    assert (view.kind, service.calendar.local_date(view.due_at or clock.now())) == (
        "complaint",
        date(2026, 12, 24),
    )
    changed = view.events[-1]
    assert (changed.action, changed.actor_id, changed.actor_name) == (
        "kind_changed",
        str(STAFF_ID),
        "Dana",
    )
    assert (changed.details["from"], changed.details["to"]) == ("unclassified", "complaint")
    # The card now shows the kind and the ordinary buttons.
    edited = await latest_card(desk, card, since, kind_name("ru", "complaint"))
    assert new_due in text(edited)
    assert "❔" not in text(edited)
    assert words("ru", "staff.approve") in buttons(edited)
    assert words("ru", "staff.change_kind") in buttons(edited)

    # The person is told the kind and the new date, in Kazakh, by e-mail.
    letters = await letters_out(smtp_server, service, sessions, vault, clock)
    params = {"reference": reference, "kind": "complaint", "due_date": "2026-12-24"}
    subject, expected = notice("kind_changed", "kk", params, bot=False)
    (told,) = [letter for letter in letters if subject in str(letter["Subject"])]
    assert expected in body(told)
    assert format_date("kk", date(2026, 12, 24)) in expected
    assert told["To"] == EMAIL


# -- Change kind on an ordinary card -------------------------------------------------------


async def test_change_kind_from_the_card_moves_the_deadline_and_the_reminders(
    desk: Desk,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    reminders = Reminders(service, sessions, vault, clock, calendar)
    opened = await service.open_request(
        kind="complaint", channel="telegram", language="ru", telegram_user_id=ALICE_ID
    )
    reference = opened.reference
    await service.verify_by_contact(
        reference, sender_user_id=ALICE_ID, contact_user_id=ALICE_ID, phone="+77011234567"
    )
    card = await card_of(desk, reference)
    # Planned as a complaint: the first notice is "still in progress" a week on.
    plan = await reminders.run_due()
    assert plan.requests[opened.id] == almaty(date(2026, 12, 1), 9)

    since = desk.mark()
    await press_button(desk, DANA, card, buttons(card)[words("ru", "staff.change_kind")])
    prompt = await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: (
            text(c)
            == words(
                "ru", "staff.kind.prompt", reference=reference, kind=kind_name("ru", "complaint")
            )
        ),
    )
    listed = buttons(prompt)
    assert set(listed) == {
        kind_name("ru", k.value) for k in CLASSIFIED_KINDS if k != K.COMPLAINT
    } | {words("ru", "staff.kind.cancel")}
    since = desk.mark()
    await press_button(desk, DANA, prompt, listed[kind_name("ru", "access")])

    # Access: three working days from receipt on Tuesday the 24th.
    new_due = format_date("ru", date(2026, 11, 27))
    done = words(
        "ru", "staff.kind.changed", reference=reference, kind=kind_name("ru", "access"), due=new_due
    )
    await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: message_id(c) == message_id(prompt) and text(c) == done,
        methods=("editMessageText",),
    )
    edited = await latest_card(desk, card, since, kind_name("ru", "access"))
    assert new_due in text(edited)
    params = {"reference": reference, "kind": "access", "due_date": "2026-11-27"}
    _, told = notice("kind_changed", "ru", params, bot=True)
    await desk.expect(ALICE_ID, since, lambda c: text(c) == told)
    assert new_due in told

    # The scheduler plans the request again, by the new deadline.
    async with sessions() as session:
        assert (
            await session.scalar(select(Request.next_notice_at).where(Request.id == opened.id))
            is None
        )
    plan = await reminders.run_due()
    assert plan.requests[opened.id] == almaty(date(2026, 11, 26), 9)
    clock.set(almaty(date(2026, 11, 26), 9))
    since = desk.mark()
    await reminders.run_due()
    reminder = await desk.expect(STAFF_CHAT, since, lambda c: reference in text(c))
    assert new_due in text(reminder)
    assert kind_name("ru", "access") in text(reminder)


async def test_someone_outside_the_staff_cannot_change_the_kind(
    desk: Desk, service: RequestService
) -> None:
    opened = await service.open_request(
        kind="complaint", channel="telegram", language="ru", telegram_user_id=ALICE_ID
    )
    reference = opened.reference
    await service.verify_by_contact(
        reference, sender_user_id=ALICE_ID, contact_user_id=ALICE_ID, phone="+77011234567"
    )
    card = await card_of(desk, reference)

    since = desk.mark()
    menu = await press_button(desk, STRANGER, card, KindMenu(reference=reference).pack())
    pick = await press_button(
        desk, STRANGER, card, KindPick(reference=reference, kind="access").pack()
    )

    for answer in (menu, pick):
        assert answer.params.get("text") == words("ru", "staff.not_allowed")
        assert answer.params.get("show_alert") is True
    assert [c for c in desk.api.calls()[since:] if c.method == "sendMessage"] == []
    view = await service.get(reference, with_events=True)
    assert view.kind == "complaint"
    assert "kind_changed" not in [event.action for event in view.events]

    # Staff may open the list and leave the kind as it is.
    await press_button(desk, DANA, card, KindMenu(reference=reference).pack())
    prompt = await desk.expect(STAFF_CHAT, since, lambda c: bool(buttons(c)) and c != card)
    since = desk.mark()
    await press_button(desk, DANA, prompt, buttons(prompt)[words("ru", "staff.kind.cancel")])
    await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: text(c) == words("ru", "staff.kind.kept", reference=reference),
        methods=("editMessageText",),
    )
    assert (await service.get(reference)).kind == "complaint"
