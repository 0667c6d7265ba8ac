"""A correction's clock runs from the documents' arrival (Law Art. 25), not from a staff button.

The documents come with the request (files in the Telegram dialog, a letter's
attachments) or later, in answer to staff asking for more; each time staff ask
and new documents arrive, the clock runs from that arrival. Dates are checked
across a weekend and Independence Day (16 December 2026).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.reminders import Reminders
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.intake import EmailOpening
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = 700100
EMAIL = "aigerim.nurlanovna@mail.kz"
DANA = Actor.staff(STAFF_ID, "Dana")
ALMATY = WorkingCalendar().tz
SCAN = Evidence("certificate.pdf", "application/pdf", b"%PDF-1.4 marriage certificate")
MORE = Evidence("passport.jpg", "image/jpeg", b"\xff\xd8 passport page")


def almaty(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ALMATY)


def due_day(service: RequestService, due_at: datetime | None) -> date | None:
    return service.calendar.local_date(due_at) if due_at is not None else None


async def notices(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, template: str
) -> list[dict[str, object]]:
    """The params of the outbox rows of ``template``, oldest first."""
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxItem).where(OutboxItem.template == template).order_by(OutboxItem.id)
        )
        return [vault.decrypt_json(row.params_enc) for row in rows]


async def telegram_rectify(service: RequestService, *evidence: Evidence) -> str:
    view = await service.open_request(
        kind="rectify",
        channel="telegram",
        language="ru",
        telegram_user_id=ALICE,
        fields={"correction": "my surname is misspelt"},
        evidence=evidence,
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=ALICE, contact_user_id=ALICE, phone="+77011234567"
    )
    return view.reference


async def test_documents_in_the_telegram_dialog_start_the_clock_with_the_request(
    service: RequestService,
    clock: FrozenClock,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    # Filed on Friday 11 December with a scan: one working day is Monday the 14th.
    clock.set(almaty(date(2026, 12, 11), 15))
    friday = await telegram_rectify(service, SCAN)
    view = await service.get(friday)
    assert view.clock_started_at == clock.now()
    assert due_day(service, view.due_at) == date(2026, 12, 14)
    # The person is told the date when their identity is confirmed; nobody pressed anything.
    (verified,) = await notices(sessions, vault, "request_verified")
    assert verified["due_date"] == "2026-12-14"

    # Filed on Tuesday 15 December: Independence Day (the 16th) is skipped.
    clock.set(almaty(date(2026, 12, 15), 12))
    tuesday = await service.open_request(
        kind="rectify",
        channel="telegram",
        language="kk",
        telegram_user_id=ALICE + 1,
        fields={"correction": "birth date"},
        evidence=[SCAN],
    )
    assert due_day(service, tuesday.due_at) == date(2026, 12, 17)


async def test_without_documents_the_clock_waits_and_starts_when_they_arrive_after_staff_ask(
    service: RequestService,
    clock: FrozenClock,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    clock.set(almaty(date(2026, 12, 9), 10))  # Wednesday
    reference = await telegram_rectify(service)
    assert (await service.get(reference)).due_at is None
    await service.ask_info(reference, DANA, "Please send a copy of the marriage certificate.")

    # The scan arrives on Friday evening: due Monday.
    clock.set(almaty(date(2026, 12, 11), 19))
    person = Actor.person_telegram(ALICE)
    view = await service.attach(reference, person, evidence=[SCAN])
    assert view.status == "in_review"
    assert view.clock_started_at == clock.now()
    assert due_day(service, view.due_at) == date(2026, 12, 14)
    (started,) = await notices(sessions, vault, "clock_started")
    assert started["due_date"] == "2026-12-14"
    cards = await notices(sessions, vault, "staff_card")
    assert cards[-1]["due_date"] == "2026-12-14"

    # The scan is not enough: staff ask for more, and the new document comes on Tuesday
    # the 15th. The clock runs from that arrival, over Independence Day.
    clock.set(almaty(date(2026, 12, 14), 11))
    await service.ask_info(reference, DANA, "The copy is unreadable: please send it again.")
    clock.set(almaty(date(2026, 12, 15), 16))
    view = await service.attach(reference, person, evidence=[MORE])
    assert view.clock_started_at == clock.now()
    assert due_day(service, view.due_at) == date(2026, 12, 17)
    assert [n["due_date"] for n in await notices(sessions, vault, "clock_started")] == [
        "2026-12-14",
        "2026-12-17",
    ]

    # A file nobody asked for does not move a running clock.
    clock.set(almaty(date(2026, 12, 17), 9))
    view = await service.attach(reference, person, evidence=[SCAN])
    assert due_day(service, view.due_at) == date(2026, 12, 17)
    events = [e for e in (await service.get(reference, with_events=True)).events]
    started_events = [e for e in events if e.action == "clock_started"]
    assert [e.details["documents"] for e in started_events] == [1, 1]
    assert started_events[-1].details["due_at_before"] is not None


async def test_a_letters_attachments_and_a_later_reply_with_documents_start_the_clock(
    service: RequestService,
    clock: FrozenClock,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    def letter(evidence: tuple[Evidence, ...], email: str = EMAIL) -> EmailOpening:
        return EmailOpening(
            kind="rectify",
            language="ru",
            fields={"correction": "surname"},
            email=email,
            body="Please correct my surname.",
            external_id=None,
            evidence=evidence,
        )

    # Attachments of the letter that opens the request: the clock starts with it.
    clock.set(almaty(date(2026, 12, 11), 18))  # Friday
    (with_scan,) = await service.open_by_email([letter((SCAN,))])
    assert due_day(service, with_scan.due_at) == date(2026, 12, 14)

    # A letter without documents waits; staff ask, the reply brings them on Tuesday.
    (bare,) = await service.open_by_email([letter((), "other@mail.kz")])
    assert bare.due_at is None
    other = Actor.person_email("other@mail.kz")
    code = (await notices(sessions, vault, "request_received_code"))[-1]["code"]
    assert (await service.verify_by_code(bare.reference, str(code), other)).request.verified_at
    clock.set(almaty(date(2026, 12, 14), 10))
    await service.ask_info(bare.reference, DANA, "Please attach the certificate.")
    clock.set(almaty(date(2026, 12, 15), 10))
    replied = await service.attach(
        bare.reference,
        other,
        body="Attached.",
        evidence=[MORE],
        words="Attached.",
    )
    assert replied.clock_started_at == clock.now()
    assert due_day(service, replied.due_at) == date(2026, 12, 17)


async def test_the_persons_notices_and_staff_reminders_follow_the_documents_clock(
    service: RequestService,
    clock: FrozenClock,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    calendar: WorkingCalendar,
) -> None:
    reminders = Reminders(service, sessions, vault, clock, calendar, verification_days=14)
    person = Actor.person_telegram(ALICE)
    clock.set(almaty(date(2026, 12, 10), 10))  # Thursday
    reference = await telegram_rectify(service)
    await service.take(reference, DANA)
    await service.ask_info(reference, DANA, "Please send the certificate.")
    await live_through(reminders, clock, date(2026, 12, 10), date(2026, 12, 13))
    # The documents arrive on Monday the 14th: due Tuesday the 15th.
    clock.set(almaty(date(2026, 12, 14), 15))
    await service.attach(reference, person, evidence=[SCAN])
    await live_through(reminders, clock, date(2026, 12, 14), date(2026, 12, 14), (16, 18))
    # Not enough: staff ask again on Tuesday morning, the new file comes at 14:00, so
    # the clock runs to Thursday the 17th, over Independence Day.
    clock.set(almaty(date(2026, 12, 15), 9, 30))
    await reminders.run_due()
    await service.ask_info(reference, DANA, "Please send a readable copy.")
    clock.set(almaty(date(2026, 12, 15), 14))
    await service.attach(reference, person, evidence=[MORE])
    await live_through(reminders, clock, date(2026, 12, 15), date(2026, 12, 18))

    rows = await sent(sessions, vault, calendar)
    to_person = [(day, template) for day, template, audience in rows if audience == "subject"]
    assert to_person == [
        ("2026-12-10", "request_received"),
        ("2026-12-10", "request_verified"),
        ("2026-12-10", "request_taken"),
        ("2026-12-10", "info_requested"),
        ("2026-12-14", "clock_started"),
        ("2026-12-15", "deadline_near"),
        ("2026-12-15", "info_requested"),
        ("2026-12-15", "clock_started"),
        ("2026-12-17", "deadline_near"),
        ("2026-12-18", "deadline_missed"),
    ]
    to_staff = [(day, template) for day, template, audience in rows if audience == "staff_user"]
    assert ("2026-12-17", "staff_reminder") in to_staff
    assert ("2026-12-18", "staff_overdue") in to_staff
    assert not [row for row in to_staff if row[0] == "2026-12-16"]  # a holiday, nothing due


async def sent(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, calendar: WorkingCalendar
) -> list[tuple[str, str, str]]:
    """(local date, template, audience) of every outbox row, oldest first."""
    async with sessions() as session:
        rows = (await session.scalars(select(OutboxItem).order_by(OutboxItem.id))).all()
        return [
            (calendar.local_date(r.created_at).isoformat(), r.template, r.audience) for r in rows
        ]


async def live_through(
    reminders: Reminders,
    clock: FrozenClock,
    first: date,
    last: date,
    hours: tuple[int, ...] = (8, 9, 12, 18),
) -> None:
    """Run the scheduler's pass at these local hours of every day from ``first`` to ``last``."""
    day = first
    while day <= last:
        for hour in hours:
            clock.set(almaty(day, hour))
            await reminders.run_due()
        day += timedelta(days=1)
