"""Notices that mean what they say: one alarm after downtime, a word to the person before
and after every deadline, and a digest that fits one Telegram message.

The clock is moved by hand and the reconcile step is called directly; the person's
Telegram messages go through the real aiogram Bot to the Bot API stand-in, their
letters through the real SMTP sender to aiosmtpd.
"""

from __future__ import annotations

import html
import re
from datetime import date, datetime, time, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.botapi import Call
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.mail_desk import sender_for
from tests.mailservers import SmtpServer, smtp_server  # noqa: F401
from tests.telegram_desk import Desk
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.milestones import ReminderPolicy
from workflows.deadlines.reminders import Reminders
from workflows.i18n import LANGUAGES, DeskInfo, format_date, render_notification
from workflows.kinds import RequestKind
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import Channel
from workflows.persistence.tables import DataSubject, OutboxItem, Request
from workflows.privacy.vault import Vault
from workflows.requests.intake import EmailOpening
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = 700100
BOB = 700200
EMAIL = "aigerim.seitkali@mail.kz"
DANA = Actor.staff(STAFF_ID, "Dana (privacy officer)")
ALMATY = WorkingCalendar().tz
TELEGRAM_LIMIT = 4096
# What the request service itself tells the person (not the scheduler's notices).
ACKNOWLEDGEMENTS = {"request_received", "request_verified", "request_taken"}
# Access asked on Tuesday 24 November 2026: 3 working days, due Friday 27 November.
RECEIVED = date(2026, 11, 24)
DUE = date(2026, 11, 27)


def almaty(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ALMATY)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def live_through(
    reminders: Reminders, clock: FrozenClock, first: date, last: date, hours: tuple[int, ...]
) -> None:
    """Run the reconcile step at these local hours of every day from ``first`` to ``last``."""
    for day in days(first, last):
        for hour in hours:
            clock.set(almaty(day, hour))
            await reminders.run_due()


async def outbox(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, calendar: WorkingCalendar
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(local date, template, audience, params) of every outbox row, oldest first."""
    async with sessions() as session:
        rows = (await session.scalars(select(OutboxItem).order_by(OutboxItem.id))).all()
        return [
            (
                calendar.local_date(r.created_at).isoformat(),
                r.template,
                r.audience,
                vault.decrypt_json(r.params_enc),
            )
            for r in rows
        ]


def to_person(rows: list[tuple[str, str, str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [(day, template) for day, template, audience, _ in rows if audience == "subject"]


def to_staff(rows: list[tuple[str, str, str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [
        (day, template)
        for day, template, audience, _ in rows
        if audience.startswith("staff") and template in {"staff_reminder", "staff_overdue"}
    ]


async def open_verified(
    service: RequestService, kind: str, user: int = ALICE, language: str = "ru"
) -> str:
    view = await service.open_request(
        kind=kind, channel="telegram", language=language, telegram_user_id=user
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=user, contact_user_id=user, phone="+77011234567"
    )
    return view.reference


def in_telegram(template: str, language: str, params: dict[str, Any]) -> str:
    """The text the bot sends the person for an outbox row."""
    return render_notification(
        template, language, params, escape=html.escape, context=DeskInfo().context(language)
    ).text


def text(call: Call) -> str:
    return str(call.params.get("text", ""))


# -- staff: after downtime across a deadline, one alarm -----------------------------------


async def test_downtime_across_a_deadline_sends_staff_one_overdue_alarm_and_no_negative_days(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    clock.set(almaty(RECEIVED, 10))
    reference = await open_verified(service, "access", language="en")
    await service.take(reference, DANA)
    reminders = Reminders(service, sessions, vault, clock, calendar)
    await live_through(reminders, clock, RECEIVED, date(2026, 11, 25), (10,))
    before = len(await outbox(sessions, vault, calendar))

    # Down from Wednesday after ten to Monday 30 November: the reminder a day before,
    # the one on the day and Saturday's first alarm all passed meanwhile.
    clock.set(almaty(date(2026, 11, 30), 10))
    restarted = Reminders(service, sessions, vault, clock, calendar)
    await restarted.run_due()
    await restarted.run_due()
    clock.set(almaty(date(2026, 11, 30), 10, 1))
    await restarted.run_due()

    after = (await outbox(sessions, vault, calendar))[before:]
    assert to_staff(after) == [("2026-11-30", "staff_overdue")]
    # The person's "we will answer on time" has lost its point; the apology has not.
    assert to_person(after) == [("2026-11-30", "deadline_missed")]
    # No reminder ever counted days the wrong way.
    everything = await outbox(sessions, vault, calendar)
    left = [p["days_left"] for _, t, _, p in everything if t == "staff_reminder"]
    assert all(n >= 0 for n in left)
    for language in LANGUAGES:
        for _, template, _, params in after:
            if template in {"staff_reminder", "staff_overdue"}:
                words = render_notification(template, language, params).text
                assert not re.search(r"(days left|осталось дней|қалған күн саны): -", words)

    # The alarm repeats every working day; the apology does not.
    await live_through(restarted, clock, date(2026, 12, 1), date(2026, 12, 2), (10,))
    later = (await outbox(sessions, vault, calendar))[before:]
    assert to_staff(later) == [
        ("2026-11-30", "staff_overdue"),
        ("2026-12-01", "staff_overdue"),
        ("2026-12-02", "staff_overdue"),
    ]
    assert to_person(later) == [("2026-11-30", "deadline_missed")]


async def test_a_missed_reminder_whose_deadline_passed_goes_as_the_overdue_alarm(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    # No overdue alarm in the settings: the reminder that missed its day says what is
    # true when it goes out, never "days left: -1".
    policy = ReminderPolicy(staff=("1", "0"))
    reminders = Reminders(service, sessions, vault, clock, calendar, policy=policy)
    clock.set(almaty(RECEIVED, 10))
    await open_verified(service, "access")
    await reminders.run_due()

    clock.set(almaty(date(2026, 11, 30), 10))
    await reminders.run_due()

    rows = await outbox(sessions, vault, calendar)
    assert to_staff(rows) == [("2026-11-30", "staff_overdue")]
    (alarm,) = [p for _, t, _, p in rows if t == "staff_overdue"]
    text_ru = render_notification("staff_overdue", "ru", alarm).text
    assert format_date("ru", DUE) in text_ru


async def test_missed_reminders_before_the_deadline_fold_into_the_latest_one(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    # Account deletion asked Tuesday 24 November, due Tuesday 15 December. Down from
    # Thursday 26 November to Monday 14 December: half the clock (4 December) and
    # 3 working days before (10 December) passed; 1 working day before is today.
    clock.set(almaty(RECEIVED, 10))
    reference = await open_verified(service, "delete_account")
    await service.take(reference, DANA)
    reminders = Reminders(service, sessions, vault, clock, calendar)
    await reminders.run_due()

    clock.set(almaty(date(2026, 12, 14), 10))
    await reminders.run_due()

    rows = await outbox(sessions, vault, calendar)
    assert to_staff(rows) == [("2026-12-14", "staff_reminder")]
    assert [p["days_left"] for _, t, _, p in rows if t == "staff_reminder"] == [1]


# -- the person: a word before the deadline and one when it passes unmet ------------------


async def test_an_access_request_followed_to_its_deadline_in_telegram_in_kazakh(
    desk: Desk,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    reminders = Reminders(service, sessions, vault, clock, calendar)
    clock.set(almaty(RECEIVED, 10))
    reference = await open_verified(service, "access", language="kk")
    await service.take(reference, DANA)

    await live_through(reminders, clock, RECEIVED, date(2026, 12, 2), (8, 9, 12, 18))

    rows = await outbox(sessions, vault, calendar)
    notices = [
        (day, template) for day, template in to_person(rows) if template not in ACKNOWLEDGEMENTS
    ]
    assert notices == [
        ("2026-11-26", "deadline_near"),  # Thursday, the working day before the deadline
        ("2026-11-30", "deadline_missed"),  # Monday, the first working day after it
    ]
    params = {"reference": reference, "kind": "access", "status": "in_review"}
    near = in_telegram("deadline_near", "kk", {**params, "due_date": DUE.isoformat()})
    missed = in_telegram("deadline_missed", "kk", {**params, "due_date": DUE.isoformat()})
    assert reference in near and format_date("kk", DUE) in near
    assert "Кешірім сұраймыз" in missed
    assert format_date("kk", DUE) in missed
    assert "уәкілетті орган" in missed  # the authorised body, named in full
    assert "сот" in missed
    assert "шағым" in missed

    await desk.expect(ALICE, 0, lambda c: text(c) == missed)
    received = [text(c) for c in desk.api.calls() if c.method == "sendMessage"]
    assert received.count(near) == 1
    assert received.count(missed) == 1
    # Dana, who took it, is alarmed in a direct message; the person's words are not hers.
    alarms = [c for c in desk.api.calls() if str(c.chat_id) == str(STAFF_ID)]
    assert alarms and all(missed != text(c) for c in alarms)


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


async def test_an_access_request_followed_to_its_deadline_by_e_mail_in_russian(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    clock.set(almaty(RECEIVED, 10))
    (opened,) = await service.open_by_email(
        [
            EmailOpening(
                kind=RequestKind.ACCESS,
                language="ru",
                fields={},
                email=EMAIL,
                body="Какие мои персональные данные вы обрабатываете?",
                external_id="<access@mail.kz>",
            )
        ]
    )
    reference = opened.reference
    await letters_out(smtp_server, service, sessions, vault, clock)
    async with sessions() as session:
        row = await session.scalar(
            select(OutboxItem).where(OutboxItem.template == "request_received_code")
        )
        assert row is not None
        code = str(vault.decrypt_json(row.params_enc)["code"])
    await service.verify_by_code(reference, code, Actor.person_email(EMAIL))
    reminders = Reminders(service, sessions, vault, clock, calendar)

    letters: list[EmailMessage] = []
    for day in days(RECEIVED, date(2026, 12, 2)):
        for hour in (9, 15):
            clock.set(almaty(day, hour))
            await reminders.run_due()
        letters = await letters_out(smtp_server, service, sessions, vault, clock)

    params = {"reference": reference, "kind": "access", "status": "verified"}
    near = render_notification("deadline_near", "ru", {**params, "due_date": DUE.isoformat()})
    missed = render_notification("deadline_missed", "ru", {**params, "due_date": DUE.isoformat()})
    assert [str(letter["Subject"]) for letter in letters].count(near.subject) == 1
    (apology,) = [letter for letter in letters if str(letter["Subject"]) == missed.subject]
    assert apology["To"] == EMAIL
    assert missed.text in body(apology)
    assert "Приносим извинения" in missed.text
    assert "Вы вправе подать жалобу" in missed.text
    assert "уполномоченный орган" in missed.text
    assert "в суд" in missed.text
    assert format_date("ru", DUE) in missed.text


async def test_a_one_working_day_clock_tells_the_person_on_the_morning_of_its_deadline(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    # Blocking asked Tuesday 24 November at ten: due Wednesday 25 November.
    reminders = Reminders(service, sessions, vault, clock, calendar)
    clock.set(almaty(RECEIVED, 10))
    reference = await open_verified(service, "block", language="en")

    await live_through(reminders, clock, RECEIVED, date(2026, 11, 30), (9, 12))

    rows = await outbox(sessions, vault, calendar)
    notices = [(d, t) for d, t in to_person(rows) if t not in ACKNOWLEDGEMENTS]
    assert notices == [("2026-11-25", "deadline_near"), ("2026-11-26", "deadline_missed")]
    (missed,) = [p for _, t, _, p in rows if t == "deadline_missed"]
    assert missed["reference"] == reference
    words = render_notification("deadline_missed", "en", missed).text
    assert "We apologise" in words
    assert "the authorised body for personal data protection" in words
    assert "court" in words


async def test_a_request_closed_in_time_gets_neither_notice(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    reminders = Reminders(service, sessions, vault, clock, calendar)
    clock.set(almaty(RECEIVED, 10))
    answered = await open_verified(service, "access", user=ALICE)
    refused = await open_verified(service, "access", user=BOB)
    left_open = await open_verified(service, "access", user=ALICE + 1)
    await reminders.run_due()
    clock.set(almaty(date(2026, 11, 25), 11))
    await service.approve(answered, DANA)
    await service.complete(answered, DANA, "Here is what we hold.")
    await service.reject(refused, DANA, "We hold no data about this number.")

    await live_through(reminders, clock, date(2026, 11, 25), date(2026, 12, 2), (9, 12))

    rows = await outbox(sessions, vault, calendar)
    told: dict[str, list[str]] = {}
    for _, template, audience, params in rows:
        if audience == "subject" and template not in ACKNOWLEDGEMENTS:
            told.setdefault(params["reference"], []).append(template)
    assert told == {
        answered: ["request_completed"],
        refused: ["request_rejected"],
        left_open: ["deadline_near", "deadline_missed"],
    }


async def test_a_person_verified_late_is_not_told_again_what_verification_told_them(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    # Account deletion asked Tuesday 24 November (due 15 December); the person shares
    # their contact only on Wednesday 2 December, after the weekly notice of the 1st.
    reminders = Reminders(service, sessions, vault, clock, calendar)
    clock.set(almaty(RECEIVED, 10))
    view = await service.open_request(
        kind="delete_account", channel="telegram", language="ru", telegram_user_id=ALICE
    )
    await live_through(reminders, clock, RECEIVED, date(2026, 12, 1), (12,))
    clock.set(almaty(date(2026, 12, 2), 10))
    await service.verify_by_contact(
        view.reference, sender_user_id=ALICE, contact_user_id=ALICE, phone="+77011234567"
    )

    await live_through(reminders, clock, date(2026, 12, 2), date(2026, 12, 9), (12,))

    rows = await outbox(sessions, vault, calendar)
    assert [(d, t) for d, t in to_person(rows) if t not in {"request_received"}] == [
        # "Verified; deadline: 15 December", then the weekly notice a week later.
        ("2026-12-02", "request_verified"),
        ("2026-12-08", "still_in_progress"),
    ]


# -- the daily staff digest fits one Telegram message ---------------------------------------


def utf16_length(text: str) -> int:
    """Telegram counts a message's length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


async def test_a_digest_of_a_long_queue_fits_one_telegram_message_in_every_language(
    long_queue: None,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    service: RequestService,
    calendar: WorkingCalendar,
) -> None:
    reminders = Reminders(service, sessions, vault, clock, calendar)
    assert await reminders.digest()

    async with sessions() as session:
        row = await session.scalar(select(OutboxItem).where(OutboxItem.template == "staff_digest"))
    assert row is not None
    params = vault.decrypt_json(row.params_enc)
    assert params["overdue_count"] == 300
    for language in LANGUAGES:
        shown = render_notification("staff_digest", language, params, escape=html.escape).text
        assert utf16_length(shown) <= TELEGRAM_LIMIT, language
        # What is left out is one command away, in words every language shares.
        assert "aina-dsr requests list --overdue" in shown
        if language != "en":
            assert "more" not in shown
    # The most overdue comes first.
    assert params["overdue"].splitlines()[0].startswith("• DSR-2026-000001 ")


async def test_a_digest_that_fits_lists_everything_and_points_nowhere(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    service: RequestService,
    calendar: WorkingCalendar,
) -> None:
    clock.set(almaty(RECEIVED, 10))
    references = [await open_verified(service, "access", user=ALICE + n) for n in range(3)]
    clock.set(almaty(date(2026, 11, 25), 9, 30))
    reminders = Reminders(service, sessions, vault, clock, calendar)
    assert await reminders.digest()
    async with sessions() as session:
        row = await session.scalar(select(OutboxItem).where(OutboxItem.template == "staff_digest"))
    assert row is not None
    params = vault.decrypt_json(row.params_enc)
    shown = render_notification("staff_digest", "ru", params).text
    assert all(reference in shown for reference in references)
    assert "aina-dsr" not in shown


@pytest.fixture
async def long_queue(sessions: async_sessionmaker[AsyncSession], clock: FrozenClock) -> None:
    """600 open requests of the longest kind names: 300 overdue, the rest due soon, many
    waiting for the person, many new, many with no clock yet."""
    clock.set(almaty(RECEIVED, 10))
    now = clock.now()
    async with sessions.begin() as session:
        for n in range(600):
            subject = DataSubject(telegram_user_id=ALICE + n, language="kk", created_at=now)
            session.add(subject)
            await session.flush()
            overdue = n < 300
            unconfirmed = n % 5 == 4 and not overdue
            session.add(
                Request(
                    reference=f"DSR-2026-{n + 1:06d}",
                    kind="destroy_unlawful" if unconfirmed else "withdraw_consent",
                    status="awaiting_info" if n % 3 == 0 else "in_review",
                    channel="telegram",
                    language="kk",
                    subject_id=subject.id,
                    received_at=now - timedelta(days=30),
                    clock_started_at=None if unconfirmed else now - timedelta(days=30),
                    due_at=(
                        None
                        if unconfirmed
                        else now + timedelta(days=-20 + n // 15 if overdue else 1, minutes=n)
                    ),
                    verified_at=now - timedelta(hours=20) if n % 2 else now - timedelta(days=30),
                    verified_by="telegram_contact",
                    updated_at=now,
                )
            )
