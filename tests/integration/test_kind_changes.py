"""Unclassified requests and staff's changes of kind, at the request service and the scheduler.

The Telegram side (the card's buttons, the person's notice through the bot and
by e-mail) is in tests/e2e/test_kinds_telegram.py.
"""

from __future__ import annotations

from datetime import date, datetime, time

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.reminders import Reminders
from workflows.errors import IllegalTransition, KindUndecided, NotAllowed
from workflows.kinds import CLASSIFIED_KINDS, DEFAULT_KINDS, RequestKind
from workflows.persistence.tables import OutboxItem, Request, ScheduledNotice
from workflows.privacy.vault import Vault
from workflows.requests.intake import EmailOpening
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = 700100
EMAIL = "aigerim.nurlanovna@mail.kz"
DANA = Actor.staff(STAFF_ID, "Dana")
ARMAN = Actor.staff(5002, "Arman")
ALMATY = WorkingCalendar().tz
K = RequestKind


def almaty(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ALMATY)


def local_due(service: RequestService, due_at: datetime | None) -> date | None:
    return service.calendar.local_date(due_at) if due_at is not None else None


async def open_verified(service: RequestService, kind: str, user: int = ALICE) -> str:
    view = await service.open_request(
        kind=kind, channel="telegram", language="ru", telegram_user_id=user
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=user, contact_user_id=user, phone="+77011234567"
    )
    return view.reference


async def outbox_rows(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, template: str
) -> list[tuple[str, str, dict[str, object]]]:
    """(channel, address, params) of the outbox rows of ``template``, oldest first."""
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxItem).where(OutboxItem.template == template).order_by(OutboxItem.id)
        )
        return [
            (r.channel, vault.decrypt(r.address_enc) or "", vault.decrypt_json(r.params_enc))
            for r in rows
        ]


# -- opening an unclassified request ---------------------------------------------------


async def test_an_unclassified_letter_runs_on_its_likeliest_kinds_shortest_clock(
    service: RequestService, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    (view,) = await service.open_by_email(
        [
            EmailOpening(
                kind=K.UNCLASSIFIED,
                candidates=(K.COMPLAINT, K.ACCESS),
                language="ru",
                fields={"text": "Что вы знаете обо мне?"},
                email=EMAIL,
                body="Что вы знаете обо мне?",
                external_id="<q@mail.kz>",
            )
        ]
    )

    # Received Tuesday 24 November 2026: access's three working days end on the 27th.
    assert (view.kind, view.candidates) == ("unclassified", ("access", "complaint"))
    assert view.clock_started_at == view.received_at
    assert local_due(service, view.due_at) == date(2026, 11, 27)
    assert view.missing_fields == ()
    ((channel, address, params),) = await outbox_rows(sessions, vault, "request_received_code")
    assert (channel, address, params["kind"]) == ("email", EMAIL, "unclassified")
    assert params["due_date"] == "2026-11-27"
    shown = await service.get(view.reference, with_events=True)
    assert shown.events[0].details["candidates"] == ["access", "complaint"]


async def test_open_request_takes_the_same_candidates_and_none_means_every_kind(
    service: RequestService,
) -> None:
    some = await service.open_request(
        kind=K.UNCLASSIFIED,
        channel="email",
        language="en",
        email=EMAIL,
        candidates=(K.COMPLAINT, K.UNSUBSCRIBE),
    )
    every = await service.open_request(
        kind=K.UNCLASSIFIED, channel="email", language="en", email="b@mail.kz"
    )

    # From 24 November, 15 working days end on 15 December, before 30 calendar days.
    assert local_due(service, some.due_at) == local_due(
        service, DEFAULT_KINDS[K.UNSUBSCRIBE].due_at(some.received_at, service.calendar)
    )
    assert local_due(service, some.due_at) == date(2026, 12, 15)
    assert every.candidates == tuple(k.value for k in CLASSIFIED_KINDS)
    # One working day (block, and rectify counted from receipt).
    assert local_due(service, every.due_at) == date(2026, 11, 25)


async def test_the_telegram_dialog_never_opens_an_unclassified_request(
    service: RequestService,
) -> None:
    with pytest.raises(ValueError, match="known kind"):
        await service.open_request(
            kind="unclassified", channel="telegram", language="ru", telegram_user_id=ALICE
        )
    with pytest.raises(ValueError, match="only an unclassified request"):
        await service.open_request(
            kind="access", channel="email", language="ru", email=EMAIL, candidates=("complaint",)
        )
    assert await service.list_requests() == []


async def open_unclassified_verified(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    candidates: tuple[RequestKind, ...] = (K.ACCESS, K.COMPLAINT),
) -> str:
    """An e-mailed unclassified request, verified by the code its acknowledgement carried."""
    view = await service.open_request(
        kind=K.UNCLASSIFIED,
        channel="email",
        language="ru",
        email=EMAIL,
        candidates=candidates,
        send_code_to_email=True,
    )
    codes = [p["code"] for _, _, p in await outbox_rows(sessions, vault, "request_received_code")]
    check = await service.verify_by_code(view.reference, str(codes[-1]), Actor.person_email(EMAIL))
    assert check.request.status == "verified"
    return view.reference


async def test_an_unclassified_request_cannot_be_approved_or_completed(
    service: RequestService, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    reference = await open_unclassified_verified(service, sessions, vault)

    with pytest.raises(KindUndecided, match="pick its kind first"):
        await service.approve(reference, DANA)
    with pytest.raises(KindUndecided):
        await service.complete(reference, DANA)
    assert (await service.get(reference)).status == "verified"


# -- staff change a request's kind ----------------------------------------------------


async def test_a_new_kind_counts_its_clock_from_receipt_and_the_person_is_told(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    reference = await open_verified(service, "complaint")
    before = await service.get(reference)
    assert local_due(service, before.due_at) == date(2026, 12, 24)  # 30 calendar days
    clock.set(almaty(date(2026, 11, 25), 15))

    view = await service.change_kind(reference, DANA, K.ACCESS)

    # Three working days from receipt on the 24th, not from the change on the 25th.
    assert view.kind == "access"
    assert (view.clock_started_at, local_due(service, view.due_at)) == (
        before.received_at,
        date(2026, 11, 27),
    )
    events = (await service.get(reference, with_events=True)).events
    changed = events[-1]
    assert (changed.action, changed.actor, changed.actor_id, changed.actor_name) == (
        "kind_changed",
        "staff",
        str(STAFF_ID),
        "Dana",
    )
    assert changed.details["from"] == "complaint" and changed.details["to"] == "access"
    assert changed.details["due_at"].startswith("2026-11-27")
    ((channel, address, params),) = await outbox_rows(sessions, vault, "kind_changed")
    assert (channel, address) == ("telegram", str(ALICE))
    assert (params["kind"], params["due_date"]) == ("access", "2026-11-27")
    cards = await outbox_rows(sessions, vault, "staff_card")
    assert cards[-1][2]["action"] == "kind_changed"


async def test_only_listed_staff_change_the_kind_of_an_open_request_to_another_real_kind(
    service: RequestService,
) -> None:
    reference = await open_verified(service, "complaint")

    with pytest.raises(NotAllowed):
        await service.change_kind(reference, Actor.person_telegram(ALICE), K.ACCESS)
    with pytest.raises(NotAllowed, match="staff list"):
        await service.change_kind(reference, Actor.staff(999, "Mallory"), K.ACCESS)
    with pytest.raises(NotAllowed, match="already"):
        await service.change_kind(reference, DANA, K.COMPLAINT)
    with pytest.raises(NotAllowed, match="unclassified"):
        await service.change_kind(reference, DANA, K.UNCLASSIFIED)
    await service.reject(reference, DANA, "not about personal data")
    with pytest.raises(IllegalTransition):
        await service.change_kind(reference, DANA, K.ACCESS)

    view = await service.get(reference, with_events=True)
    assert view.kind == "complaint"
    assert "kind_changed" not in [event.action for event in view.events]


async def test_a_confirmation_kind_keeps_a_running_clock_and_without_one_waits(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # A correction whose documents have not arrived: no clock, and none after the change.
    waiting = await open_verified(service, "rectify")
    changed = await service.change_kind(waiting, DANA, K.DESTROY_UNLAWFUL)
    assert (changed.clock_started_at, changed.due_at) == (None, None)
    ((_, _, params),) = await outbox_rows(sessions, vault, "kind_changed")
    assert params["due_date"] is None  # the notice says the deadline starts with the documents

    # Documents arrived on Thursday the 26th: the destruction's clock runs from then.
    confirmed = await open_verified(service, "rectify", user=ALICE + 1)
    clock.set(almaty(date(2026, 11, 26), 10))
    scan = Evidence("scan.pdf", "application/pdf", b"%PDF-1.4 scan")
    await service.attach(confirmed, Actor.person_telegram(ALICE + 1), evidence=[scan])
    changed = await service.change_kind(confirmed, DANA, K.DESTROY_UNLAWFUL)
    assert changed.clock_started_at == clock.now()
    assert local_due(service, changed.due_at) == date(2026, 11, 27)

    # An access request found to be a correction keeps its clock from receipt (the 24th),
    # so its one working day is over already: counted from receipt, nothing is late unseen.
    clock.set(almaty(date(2026, 11, 24), 12))
    access = await open_verified(service, "access", user=ALICE + 2)
    clock.set(almaty(date(2026, 11, 26), 10))
    changed = await service.change_kind(access, DANA, K.RECTIFY)
    assert local_due(service, changed.due_at) == date(2026, 11, 25)
    assert changed.is_overdue(clock.now())


async def test_an_approval_given_before_a_change_of_kind_does_not_count_after_it(
    service: RequestService,
) -> None:
    # Four eyes: Dana approves an account deletion; then the kind becomes a destruction of
    # unlawful data. Arman's approval alone must not do the destruction: Dana approved
    # something else.
    reference = await open_verified(service, "delete_account")
    first = await service.approve(reference, DANA)
    assert first.approvals == ("Dana",)

    await service.change_kind(reference, DANA, K.DESTROY_UNLAWFUL)
    assert (await service.get(reference)).approvals == ()
    view = await service.approve(reference, ARMAN, details={"fields": ["iin"]})

    assert view.status == "verified"
    assert view.approvals == ("Arman",)
    assert await service.approval_details(reference) == [
        {"given": 1, "needed": 2, "fields": ["iin"]}
    ]
    done = await service.approve(reference, DANA, details={"fields": ["iin"]})
    assert done.status == "approved"


async def test_a_kind_cannot_change_once_approved(service: RequestService) -> None:
    reference = await open_verified(service, "complaint")
    await service.approve(reference, DANA)

    with pytest.raises(IllegalTransition):
        await service.change_kind(reference, DANA, K.ACCESS)


# -- the scheduler follows the new deadline ---------------------------------------------


@pytest.fixture
def reminders(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> Reminders:
    return Reminders(service, sessions, vault, clock, calendar, verification_days=14)


async def notices(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, str, bool]]:
    """(key, meant for, late) of every request notice recorded, oldest first."""
    async with sessions() as session:
        rows = await session.scalars(
            select(ScheduledNotice)
            .where(ScheduledNotice.request_id.is_not(None))
            .order_by(ScheduledNotice.id)
        )
        return [(r.key, r.meant_for.isoformat(), r.late) for r in rows]


async def next_notice_at(
    sessions: async_sessionmaker[AsyncSession], reference: str
) -> datetime | None:
    async with sessions() as session:
        return await session.scalar(
            select(Request.next_notice_at).where(Request.reference == reference)
        )


async def test_reminders_follow_the_new_deadline_and_the_old_ones_stand_in_for_nothing(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # Access, received Tuesday the 24th, due Friday the 27th: staff are reminded on
    # Thursday, a working day before.
    reference = await open_verified(service, "access")
    clock.set(almaty(date(2026, 11, 26), 9))
    await reminders.run_due()
    assert (f"{reference}/staff/before/1", "2026-11-26", False) in await notices(sessions)
    assert await next_notice_at(sessions, reference) is not None

    # An hour later staff find it is a withdrawal of consent: 15 working days from receipt.
    clock.set(almaty(date(2026, 11, 26), 10))
    view = await service.change_kind(reference, DANA, K.WITHDRAW_CONSENT)
    assert local_due(service, view.due_at) == date(2026, 12, 15)
    assert await next_notice_at(sessions, reference) is None  # planned again by the next pass

    plan = await reminders.run_due()
    # Nothing is owed for the days the old clock ran: no late notice, nothing sent now.
    assert [n for n in await notices(sessions) if "/k1/" in n[0]] == []
    # The clock is longer than a week: the person hears "still in progress" a week after
    # receipt, on Tuesday 1 December, the first notice of the new clock.
    assert plan.requests[view.id] == almaty(date(2026, 12, 1), 9)

    day = date(2026, 11, 27)
    while day <= date(2026, 12, 16):
        clock.set(almaty(day, 9, 30))
        await reminders.run_due()
        day = date.fromordinal(day.toordinal() + 1)

    recorded = [n for n in await notices(sessions) if n[0].startswith(f"{reference}/k1/")]
    assert recorded == [
        (f"{reference}/k1/person/progress/1", "2026-12-01", False),
        (f"{reference}/k1/staff/half", "2026-12-04", False),
        (f"{reference}/k1/person/progress/2", "2026-12-08", False),
        (f"{reference}/k1/person/deadline_near", "2026-12-10", False),
        (f"{reference}/k1/staff/before/3", "2026-12-10", False),
        (f"{reference}/k1/staff/before/1", "2026-12-14", False),
        (f"{reference}/k1/staff/on_day", "2026-12-15", False),
        (f"{reference}/k1/staff/overdue/2026-12-16", "2026-12-16", False),
    ]
    # The reminder the day before names the new deadline.
    reminders_sent = await outbox_rows(sessions, vault, "staff_reminder")
    assert reminders_sent[-1][2]["due_date"] == "2026-12-15"
    near = await outbox_rows(sessions, vault, "deadline_near")
    # The first was for the access clock, that Thursday morning, before the change.
    assert [(c, a, p["due_date"]) for c, a, p in near] == [
        ("telegram", str(ALICE), "2026-11-27"),
        ("telegram", str(ALICE), "2026-12-15"),
    ]
