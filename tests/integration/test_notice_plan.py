"""Each request's next notice instant on its row: set by the scheduler, reset by any change."""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID, STAFF_IDS
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.milestones import ReminderPolicy
from workflows.deadlines.notice_plan import adopt_basis, set_next_notices
from workflows.deadlines.reminders import Reminders
from workflows.persistence.engines import downgrade_engine, upgrade_engine
from workflows.persistence.tables import OutboxItem, Request
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = 700100
DANA = Actor.staff(STAFF_ID, "Dana (privacy officer)")
ARMAN = Actor.staff(5002, "Arman")
ALMATY = WorkingCalendar().tz


def almaty(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ALMATY)


async def open_verified(service: RequestService, kind: str, user: int = ALICE) -> str:
    view = await service.open_request(
        kind=kind, channel="telegram", language="ru", telegram_user_id=user
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=user, contact_user_id=user, phone="+77011234567"
    )
    return view.reference


async def row(sessions: async_sessionmaker[AsyncSession], reference: str) -> Request:
    async with sessions() as session:
        found = await session.scalar(select(Request).where(Request.reference == reference))
    assert found is not None
    return found


async def staff_notices(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, calendar: WorkingCalendar
) -> list[tuple[str, str, str | None]]:
    """(local date, template, assignee or None for the group) of each staff reminder/alarm."""
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxItem)
            .where(OutboxItem.template.in_(["staff_reminder", "staff_overdue"]))
            .order_by(OutboxItem.id)
        )
        return [
            (
                calendar.local_date(r.created_at).isoformat(),
                r.template,
                vault.decrypt(r.address_enc),
            )
            for r in rows
        ]


async def test_a_pass_plans_a_request_and_any_change_makes_the_next_pass_plan_it_again(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    reminders = Reminders(service, sessions, vault, clock, calendar)
    clock.set(almaty(date(2026, 11, 24), 10))
    reference = await open_verified(service, "access")
    assert (await row(sessions, reference)).next_notice_at is None  # new: not planned yet

    await reminders.run_due()
    # Half of 3 working days: Thursday 26 November, 09:00 Almaty.
    assert (await row(sessions, reference)).next_notice_at == almaty(date(2026, 11, 26), 9)
    plan = await reminders.run_due()
    assert plan.requests == {}, "a planned request is not read again before its instant"
    assert plan.notices_at == almaty(date(2026, 11, 26), 9)

    await service.take(reference, DANA)
    assert (await row(sessions, reference)).next_notice_at is None
    plan = await reminders.run_due()
    assert set(plan.requests) == {(await row(sessions, reference)).id}


async def test_the_scheduler_does_not_plan_a_request_that_changed_after_it_was_read(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
) -> None:
    async with sessions.begin() as session:
        await adopt_basis(session, "basis", clock.now())
    reference = await open_verified(service, "access")
    read = await row(sessions, reference)
    await service.take(reference, DANA)  # between the pass's read and its write
    taken = await row(sessions, reference)

    async with sessions.begin() as session:
        await set_next_notices(session, [(read.id, read.version, clock.now())], "basis")
    changed = await row(sessions, reference)
    assert changed.next_notice_at is None

    async with sessions.begin() as session:
        await set_next_notices(session, [(taken.id, taken.version, clock.now())], "basis")
    planned = await row(sessions, reference)
    assert planned.next_notice_at == clock.now()
    assert planned.version == taken.version, "the scheduler's write bumps no version"


async def test_a_moved_deadline_and_a_new_assignee_are_followed_after_planning(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    reminders = Reminders(service, sessions, vault, clock, calendar)
    # Account deletion asked Tuesday 24 November 2026: due Tuesday 15 December, its first
    # notice (the person's weekly one) on Tuesday 1 December.
    clock.set(almaty(date(2026, 11, 24), 10))
    reference = await open_verified(service, "delete_account")
    await reminders.run_due()
    assert (await row(sessions, reference)).next_notice_at == almaty(date(2026, 12, 1), 9)

    # Planned; then the deadline is corrected to Tuesday 1 December (any change through the
    # ORM, here an operator's correction) and Dana takes the request.
    clock.set(almaty(date(2026, 11, 25), 12))
    async with sessions.begin() as session:
        request = await session.scalar(select(Request).where(Request.reference == reference))
        assert request is not None
        request.due_at = almaty(date(2026, 12, 1), 23, 59)
    await service.take(reference, DANA)
    day = date(2026, 11, 25)
    while day <= date(2026, 12, 2):
        for hour in (9, 15):
            clock.set(almaty(day, hour))
            await reminders.run_due()
        if day == date(2026, 11, 27):
            await service.take(reference, ARMAN)  # a take-over on Friday afternoon
        day += timedelta(days=1)

    assert await staff_notices(sessions, vault, calendar) == [
        ("2026-11-26", "staff_reminder", str(STAFF_ID)),  # 3 working days before the 1st
        ("2026-11-27", "staff_reminder", str(STAFF_ID)),  # half the clock gone
        ("2026-11-30", "staff_reminder", "5002"),  # 1 working day before: to the new assignee
        ("2026-12-01", "staff_reminder", "5002"),  # on the day
        ("2026-12-02", "staff_overdue", "5002"),
    ]


async def test_after_the_upgrade_from_0005_open_requests_still_get_what_they_are_owed(
    engine: AsyncEngine,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    references = [await open_verified(service, "access", user=ALICE + n) for n in range(3)]
    # A desk on 0005 (no next_notice_at) ran until Wednesday; then the upgrade.
    await downgrade_engine(engine, "0005")
    await upgrade_engine(engine)
    async with sessions() as session:
        assert set(await session.scalars(select(Request.next_notice_at))) == {None}

    clock.set(almaty(date(2026, 11, 26), 11))  # half the clock gone at 09:00 today
    reminders = Reminders(service, sessions, vault, clock, calendar)
    await reminders.run_due()
    await reminders.run_due()

    notices = await staff_notices(sessions, vault, calendar)
    assert notices == [("2026-11-26", "staff_reminder", None)] * len(references)
    for reference in references:
        assert (await row(sessions, reference)).next_notice_at == almaty(date(2026, 11, 27), 9)


async def test_a_closed_request_is_not_planned_and_its_instant_is_cleared(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    reminders = Reminders(service, sessions, vault, clock, calendar)
    reference = await open_verified(service, "access")
    await reminders.run_due()
    assert (await row(sessions, reference)).next_notice_at is not None
    await service.cancel(reference, Actor.person_telegram(ALICE))
    assert (await row(sessions, reference)).next_notice_at is None
    plan = await reminders.run_due()
    assert plan.requests == {}
    assert plan.notices_at is None
    # A Core write that bypasses the ORM is not planned either, as long as it stays closed.
    async with sessions.begin() as session:
        await session.execute(update(Request).values(next_notice_at=None))
    assert (await reminders.run_due()).requests == {}


# -- what the instants were computed from: settings, calendar, kinds --------------------


async def test_a_restart_with_an_earlier_milestone_sends_it_on_its_day_once(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Access asked Tuesday 24 November 2026, due Friday 27th. Staff are reminded on the
    # day only: the request is planned for the person's "deadline near" on Thursday 09:00.
    before = Reminders(
        service, sessions, vault, clock, calendar, policy=ReminderPolicy(staff=("0",))
    )
    clock.set(almaty(date(2026, 11, 24), 10))
    reference = await open_verified(service, "access")
    await before.run_due()
    assert (await row(sessions, reference)).next_notice_at == almaty(date(2026, 11, 26), 9)

    # Restarted that evening with a reminder two working days before: Wednesday 25th.
    clock.set(almaty(date(2026, 11, 24), 18))
    policy = ReminderPolicy(staff=("2", "0"))
    after = Reminders(service, sessions, vault, clock, calendar, policy=policy)
    with caplog.at_level(logging.INFO, logger="workflows.deadlines.reminders"):
        plan = await after.run_due()
    request = await row(sessions, reference)
    assert plan.requests == {request.id: almaty(date(2026, 11, 25), 9)}
    assert "1 open request(s) to plan again" in caplog.text
    day = date(2026, 11, 25)
    while day <= date(2026, 11, 28):
        for hour in (9, 15):
            clock.set(almaty(day, hour))
            await after.run_due()
        day += timedelta(days=1)

    assert await staff_notices(sessions, vault, calendar) == [
        ("2026-11-25", "staff_reminder", None),  # the new one, on its day
        ("2026-11-27", "staff_reminder", None),
    ]


async def test_a_restart_with_an_earlier_hour_sends_at_that_hour(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    await open_verified(service, "access")
    await Reminders(service, sessions, vault, clock, calendar).run_due()  # Thursday 09:00

    clock.set(almaty(date(2026, 11, 25), 10))
    policy = ReminderPolicy(notify_at=time(8, 0))
    after = Reminders(service, sessions, vault, clock, calendar, policy=policy)
    await after.run_due()
    clock.set(almaty(date(2026, 11, 26), 8))
    await after.run_due()
    await after.run_due()

    assert await staff_notices(sessions, vault, calendar) == [
        ("2026-11-26", "staff_reminder", None)
    ]


async def test_a_saturday_declared_a_working_day_gets_its_overdue_alarm(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
    tmp_path: Path,
) -> None:
    # Blocking asked Wednesday 2 December 2026, due Thursday 3rd: overdue alarms on
    # Friday 4th, then (Saturday and Sunday being days off) Monday 7th.
    clock.set(almaty(date(2026, 12, 2), 10))
    await open_verified(service, "block")
    before = Reminders(service, sessions, vault, clock, calendar)
    for day in (date(2026, 12, 3), date(2026, 12, 4)):
        for hour in (9, 15):
            clock.set(almaty(day, hour))
            await before.run_due()

    # Friday evening the operator declares Saturday 5th a working day, and restarts.
    (tmp_path / "calendar.toml").write_text("working_days = [2026-12-05]\n", encoding="utf-8")
    saturday = WorkingCalendar.from_file(tmp_path / "calendar.toml")
    restarted = RequestService(sessions, vault, clock, saturday, staff_user_ids=STAFF_IDS)
    after = Reminders(restarted, sessions, vault, clock, saturday)
    day = date(2026, 12, 4)
    while day <= date(2026, 12, 7):
        for hour in (9, 18):
            clock.set(almaty(day, hour))
            await after.run_due()
        day += timedelta(days=1)

    alarms = [
        d for d, t, _ in await staff_notices(sessions, vault, saturday) if t != "staff_reminder"
    ]
    assert alarms == ["2026-12-04", "2026-12-05", "2026-12-07"]


async def test_an_unchanged_restart_plans_nothing_again(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    reference = await open_verified(service, "delete_account")
    first = Reminders(service, sessions, vault, clock, calendar)
    assert len((await first.run_due()).requests) == 1
    planned = (await row(sessions, reference)).next_notice_at
    sent = await staff_notices(sessions, vault, calendar)

    # The same settings and calendar, built afresh (as a restart reads them).
    again = RequestService(sessions, vault, clock, WorkingCalendar(), staff_user_ids=STAFF_IDS)
    with caplog.at_level(logging.INFO, logger="workflows.deadlines.reminders"):
        plan = await Reminders(again, sessions, vault, clock, WorkingCalendar()).run_due()

    assert plan.requests == {}, "the pass after the restart reads no request"
    assert (await row(sessions, reference)).next_notice_at == planned
    assert await staff_notices(sessions, vault, calendar) == sent
    assert "plan again" not in caplog.text


async def test_instants_computed_from_a_basis_no_longer_stored_are_not_written(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
) -> None:
    reference = await open_verified(service, "access")
    read = await row(sessions, reference)
    async with sessions.begin() as session:
        assert await adopt_basis(session, "old", clock.now()) == 0
        assert await set_next_notices(session, [(read.id, read.version, clock.now())], "old")
    async with sessions.begin() as session:
        assert await adopt_basis(session, "old", clock.now()) is None  # already stored
        assert await adopt_basis(session, "new", clock.now()) == 1
    assert (await row(sessions, reference)).next_notice_at is None

    # A scheduler still running with the old settings writes nothing.
    async with sessions.begin() as session:
        written = await set_next_notices(session, [(read.id, read.version, clock.now())], "old")
    assert not written
    assert (await row(sessions, reference)).next_notice_at is None
