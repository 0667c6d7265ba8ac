"""The deadline workflow: what the person and staff hear, on which local day, exactly once.

The clock is moved by hand and the reconcile step is called directly, so these
tests never wait for APScheduler's wall clock.
"""

from __future__ import annotations

import asyncio
import html
import json
import pickle
from collections import Counter
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID, STAFF_IDS
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.leader_lock import AdvisoryLock, SingleProcessLock
from workflows.deadlines.milestones import MilestoneError, ReminderPolicy, parse_staff_milestones
from workflows.deadlines.notices import RequestNotices
from workflows.deadlines.reminders import Plan, Reminders
from workflows.deadlines.scheduler import (
    DIGEST_JOB,
    EXPIRY_JOB,
    MISFIRE_GRACE_SECONDS,
    NOTICES_JOB,
    RECONCILE_JOB,
    DeadlineScheduler,
    digest_job,
    expiry_job,
    notices_job,
    reconcile_job,
    scheduler_component,
)
from workflows.i18n import render_notification
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import (
    Audience,
    Channel,
    DeliveryReceipt,
    OutgoingMessage,
    RecipientUnreachable,
)
from workflows.persistence.engines import make_engine, make_sessionmaker
from workflows.persistence.tables import (
    AuditEvent,
    DataSubject,
    OutboxItem,
    Request,
    ScheduledNotice,
)
from workflows.privacy.audit import verify_chain
from workflows.privacy.audit_checkpoint import read_checkpoints
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = 700100
BOB = 700200
STAFF = Actor.staff(STAFF_ID, "Dana (privacy officer)")
ALMATY = WorkingCalendar().tz


def almaty(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ALMATY)


@pytest.fixture
def reminders(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> Reminders:
    return Reminders(service, sessions, vault, clock, calendar, verification_days=14)


async def sent(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, calendar: WorkingCalendar
) -> list[tuple[str, str, str, str | None]]:
    """(local date, template, audience, address) of every outbox row, oldest first."""
    async with sessions() as session:
        rows = (await session.scalars(select(OutboxItem).order_by(OutboxItem.id))).all()
        return [
            (
                calendar.local_date(r.created_at).isoformat(),
                r.template,
                r.audience,
                vault.decrypt(r.address_enc),
            )
            for r in rows
        ]


async def notice_events(sessions: async_sessionmaker[AsyncSession]) -> list[AuditEvent]:
    async with sessions() as session:
        rows = await session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action.in_(["notice_sent", "notice_skipped"]))
            .order_by(AuditEvent.id)
        )
        return list(rows)


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


async def live_through(
    reminders: Reminders, clock: FrozenClock, first: date, last: date, hours: tuple[int, ...]
) -> None:
    """Run the reconcile step at these local hours of every day from ``first`` to ``last``."""
    day = first
    while day <= last:
        for hour in hours:
            clock.set(almaty(day, hour))
            await reminders.run_due()
        day += timedelta(days=1)


# -- a whole life across Nauryz and a weekend -------------------------------------------


async def test_a_requests_life_across_nauryz_every_message_on_its_day_exactly_once(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    # Account deletion, 15 working days, asked on Wednesday 18 March 2026, before the
    # Nauryz break (21-25 March) and the weekend that follows it.
    clock.set(almaty(date(2026, 3, 18), 10))
    reference = await open_verified(service, "delete_account")
    await reminders.run_due()
    clock.set(almaty(date(2026, 3, 19), 8))
    await service.take(reference, STAFF)
    assert calendar.local_date((await service.get(reference)).due_at) == date(2026, 4, 13)  # type: ignore[arg-type]

    await live_through(reminders, clock, date(2026, 3, 19), date(2026, 4, 14), (8, 9, 12, 18))
    clock.set(almaty(date(2026, 4, 15), 10))
    await reminders.run_due()
    await service.approve(reference, STAFF)
    await service.approve(reference, Actor.staff(5002, "Arman"))  # deletion: four eyes
    await service.complete(reference, STAFF, "Done.")
    await live_through(reminders, clock, date(2026, 4, 15), date(2026, 4, 22), (12, 18))

    everything = await sent(sessions, vault, calendar)
    to_person = [(d, t) for d, t, audience, _ in everything if audience == "subject"]
    assert to_person == [
        ("2026-03-18", "request_received"),
        ("2026-03-18", "request_verified"),
        ("2026-03-19", "request_taken"),
        # A week after the start falls on Nauryz: the next working day.
        ("2026-03-26", "still_in_progress"),
        ("2026-04-01", "still_in_progress"),
        ("2026-04-08", "deadline_near"),
        # The deadline of the 13th passed unmet: an apology the next morning, once.
        ("2026-04-14", "deadline_missed"),
        ("2026-04-15", "request_completed"),
    ]
    to_assignee = [(d, t) for d, t, audience, addr in everything if audience == "staff_user"]
    assert to_assignee == [
        ("2026-04-02", "staff_reminder"),  # half the clock gone
        ("2026-04-08", "staff_reminder"),  # 3 working days before
        ("2026-04-10", "staff_reminder"),  # 1 working day before
        ("2026-04-13", "staff_reminder"),  # on the day
        ("2026-04-14", "staff_overdue"),
        ("2026-04-15", "staff_overdue"),
    ]
    assert {addr for _, _, audience, addr in everything if audience == "staff_user"} == {
        str(STAFF_ID)
    }
    digests = [d for d, t, _, _ in everything if t == "staff_digest"]
    assert digests == [
        "2026-03-18",
        "2026-03-19",
        "2026-03-20",
        "2026-03-26",
        "2026-03-27",
        "2026-03-30",
        "2026-03-31",
        "2026-04-01",
        "2026-04-02",
        "2026-04-03",
        "2026-04-06",
        "2026-04-07",
        "2026-04-08",
        "2026-04-09",
        "2026-04-10",
        "2026-04-13",
        "2026-04-14",
        "2026-04-15",
        "2026-04-16",
        "2026-04-17",
        "2026-04-20",
        "2026-04-21",
        "2026-04-22",
    ]
    # Nothing at all on the Nauryz days and the weekends.
    quiet = {d for d, _, _, _ in everything if not calendar.is_working_day(date.fromisoformat(d))}
    assert quiet == set()
    # None of them late, each once.
    events = await notice_events(sessions)
    assert [e.details["late"] for e in events] == [False] * len(events)
    assert all(e.action == "notice_sent" for e in events)
    keys = Counter(k for (k,) in await _keys(sessions))
    assert max(keys.values()) == 1


async def _keys(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str]]:
    async with sessions() as session:
        return [(k,) for k in await session.scalars(select(OutboxItem.idempotency_key))]


async def test_reminders_go_out_at_nine_local_time_not_at_midnight(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    await open_verified(service, "access")
    # Half of 3 working days: Thursday 26 November, 09:00 Almaty.
    clock.set(almaty(date(2026, 11, 26), 8, 59))
    plan = await reminders.run_due()
    group = [t for _, t, a, _ in await sent(sessions, vault, calendar) if a == "staff_group"]
    assert group == ["staff_card"]
    [wake] = plan.requests.values()
    assert wake == almaty(date(2026, 11, 26), 9)
    assert plan.notices_at == wake
    assert plan.digest_at == wake
    clock.set(wake)
    await reminders.run_due()
    group = [t for _, t, a, _ in await sent(sessions, vault, calendar) if a == "staff_group"]
    assert group == ["staff_card", "staff_reminder", "staff_digest"]


async def test_without_an_assignee_staff_reminders_go_to_the_group_in_staff_words(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    reference = await open_verified(service, "access")
    clock.set(almaty(date(2026, 11, 26), 10))
    await reminders.run_due()

    async with sessions() as session:
        row = await session.scalar(
            select(OutboxItem).where(OutboxItem.template == "staff_reminder")
        )
    assert row is not None
    assert row.audience == "staff_group"
    assert vault.decrypt_json(row.params_enc) == {
        "reference": reference,
        "kind": "access",
        "status": "verified",
        "due_date": "2026-11-27",
        "action": "remind",
        "days_left": 1,
    }


# -- downtime -----------------------------------------------------------------------


async def test_after_ten_days_down_each_missed_reminder_is_sent_once_marked_late(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    # Account deletion asked Tuesday 24 November 2026, due Tuesday 15 December.
    clock.set(almaty(date(2026, 11, 24), 10))
    reference = await open_verified(service, "delete_account")
    await service.take(reference, STAFF)
    await live_through(reminders, clock, date(2026, 11, 24), date(2026, 12, 3), (10,))
    before = len(await sent(sessions, vault, calendar))

    # Down from Friday 4 December, before nine, to Monday 14 December: a restart.
    clock.set(almaty(date(2026, 12, 14), 10))
    restarted = Reminders(service, sessions, vault, clock, calendar, verification_days=14)
    await restarted.run_due()
    await restarted.run_due()  # the next reconcile finds nothing more to do
    clock.advance(hours=3)
    await restarted.run_due()

    after = (await sent(sessions, vault, calendar))[before:]
    assert [(t, a) for d, t, a, _ in after if t != "staff_digest"] == [
        ("deadline_near", "subject"),  # 10 December; the weekly notice of the 8th is superseded
        # 1 working day before: today, on time; the reminders of 4 and 10 December (half
        # the clock, 3 working days before) are folded into it.
        ("staff_reminder", "staff_user"),
    ]
    events = [e for e in await notice_events(sessions) if e.at >= clock.now() - timedelta(hours=3)]
    marks = {e.details["milestone"]: (e.action, e.details["late"]) for e in events}
    assert marks == {
        "staff/half": ("notice_skipped", True),
        "person/progress/2": ("notice_skipped", True),
        "person/deadline_near": ("notice_sent", True),
        "staff/before/3": ("notice_skipped", True),
        "staff/before/1": ("notice_sent", False),
    }
    # The missed digests of the days down are not sent; today's is.
    assert [d for d, t, _, _ in after if t == "staff_digest"] == ["2026-12-14"]


async def test_a_long_overdue_request_gets_one_late_alarm_not_one_per_missed_day(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    await open_verified(service, "block")  # 1 working day: due Wednesday 25 November
    clock.set(almaty(date(2026, 12, 4), 10))

    await reminders.run_due()

    staff = [t for _, t, a, _ in await sent(sessions, vault, calendar) if a == "staff_group"]
    assert staff.count("staff_overdue") == 1
    assert staff.count("staff_reminder") == 0  # on the day, late: folded into the alarm
    skipped = [e for e in await notice_events(sessions) if e.action == "notice_skipped"]
    assert {e.details["reason"] for e in skipped} == {
        "replaced by a later notice",
        "the deadline has passed",  # the person's "deadline near" of that morning
    }


# -- quiet days ---------------------------------------------------------------------


async def test_the_digest_skips_weekends_and_holidays(
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    days = [date(2026, 3, 20) + timedelta(days=n) for n in range(7)]
    posted = []
    for day in days:
        clock.set(almaty(day, 9, 30))
        posted.append(await reminders.digest())
        assert not await reminders.digest(), "once a day"

    assert dict(zip(days, posted, strict=True)) == {
        date(2026, 3, 20): True,  # Friday
        date(2026, 3, 21): False,  # Nauryz, Saturday
        date(2026, 3, 22): False,
        date(2026, 3, 23): False,
        date(2026, 3, 24): False,
        date(2026, 3, 25): False,
        date(2026, 3, 26): True,
    }
    clock.set(almaty(date(2026, 3, 20), 9, 30))
    assert reminders.next_digest_at() == almaty(date(2026, 3, 26), 9)


async def test_the_daily_pass_anchors_the_audit_log_in_the_digest_and_a_checkpoint_file(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
    tmp_path: Path,
) -> None:
    checkpoints = tmp_path / "audit-checkpoints.jsonl"
    reminders = Reminders(
        service, sessions, vault, clock, calendar, audit_checkpoint_file=checkpoints
    )
    clock.set(almaty(date(2026, 11, 24), 8))  # a Tuesday, before the digest hour
    await open_verified(service, "access")
    await reminders.run_due()
    assert not checkpoints.exists()

    clock.set(almaty(date(2026, 11, 24), 9, 5))
    await reminders.run_due()

    async with sessions() as session:
        events = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
        row = await session.scalar(select(OutboxItem).where(OutboxItem.template == "staff_digest"))
    assert row is not None
    params = vault.decrypt_json(row.params_enc)
    head = events[-1].hash
    assert head is not None
    assert (params["audit_events"], params["audit_head"]) == (len(events), head[:16])
    for language in ("kk", "ru", "en"):
        shown = render_notification("staff_digest", language, params).text
        assert f"{len(events)}" in shown.splitlines()[-1]
        assert head[:16] in shown.splitlines()[-1]
    [line] = checkpoints.read_text().splitlines()
    assert (json.loads(line)["events"], json.loads(line)["head"]) == (len(events), head)

    # Once a day; and on a day without a digest (a Saturday) the checkpoint still comes.
    clock.set(almaty(date(2026, 11, 24), 15))
    await reminders.run_due()
    assert len(checkpoints.read_text().splitlines()) == 1
    clock.set(almaty(date(2026, 11, 28), 9, 30))
    await reminders.run_due()
    assert len(checkpoints.read_text().splitlines()) == 2
    report = await verify_chain(sessions, checkpoints=read_checkpoints(checkpoints))
    assert report.intact, report


async def test_the_digest_keeps_corrections_waiting_for_their_documents_in_sight(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # A correction's clock starts only when its documents arrive: until then
    # no reminder can be due, so the digest lists it every working day.
    clock.set(almaty(date(2026, 11, 23), 10))
    rectify = await open_verified(service, "rectify")
    access = await open_verified(service, "access", user=BOB)
    clock.set(almaty(date(2026, 11, 24), 9, 30))
    assert await reminders.digest()

    async with sessions() as session:
        row = await session.scalar(select(OutboxItem).where(OutboxItem.template == "staff_digest"))
    assert row is not None
    params = vault.decrypt_json(row.params_enc)
    assert params["unconfirmed_count"] == 1
    assert rectify in params["unconfirmed"]
    assert access not in params["unconfirmed"]
    assert access in params["due_week"]


async def test_on_a_quiet_day_only_the_overdue_alarm_goes_out(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    # Access asked Friday 13 March: due Wednesday 18 March. A second request of
    # the same day has a reminder owed on a working day that we reach only on Saturday.
    clock.set(almaty(date(2026, 3, 17), 10))
    await open_verified(service, "block")  # due Wednesday 18 March
    clock.set(almaty(date(2026, 3, 20), 8))
    await open_verified(service, "access", user=BOB)  # half gone Wednesday 25 -> 26 March

    clock.set(almaty(date(2026, 3, 21), 10))  # Saturday, Nauryz: the first day we look
    plan = await reminders.run_due()
    templates = [t for d, t, a, _ in await sent(sessions, vault, calendar) if d == "2026-03-21"]
    assert templates == ["staff_overdue"]
    assert min(plan.requests.values()) == almaty(date(2026, 3, 26), 9)
    assert plan.notices_at == almaty(date(2026, 3, 26), 9)


# -- expiry ---------------------------------------------------------------------------


async def test_an_unverified_request_expires_after_the_verification_days_with_a_notice(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    view = await service.open_request(
        kind="access", channel="telegram", language="kk", telegram_user_id=ALICE
    )
    clock.advance(days=14)
    plan = await reminders.run_due()
    assert (await service.get(view.reference)).status == "awaiting_verification"
    assert plan.expiry_at == view.received_at + timedelta(days=14, seconds=1)
    assert plan.requests == {}, "an unverified request gets no reminders"

    clock.advance(seconds=1)
    await reminders.run_due()
    await reminders.run_due()

    assert (await service.get(view.reference)).status == "expired"
    person = [t for _, t, a, _ in await sent(sessions, vault, calendar) if a == "subject"]
    assert person == ["request_received", "request_expired"]
    assert (await reminders.run_due()).expiry_at is None


# -- the milestone settings ---------------------------------------------------------


def test_milestones_are_read_from_the_setting() -> None:
    assert parse_staff_milestones("half, 3,1 ,0,overdue") == ("half", "3", "1", "0", "overdue")
    assert parse_staff_milestones("5,5,OVERDUE") == ("5", "overdue")
    with pytest.raises(MilestoneError, match="'soon'"):
        parse_staff_milestones("half,soon")
    with pytest.raises(MilestoneError):
        ReminderPolicy(deadline_near_days=0)


async def test_without_the_overdue_milestone_no_alarm_is_sent(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    policy = ReminderPolicy(staff=("0",))
    quiet = Reminders(service, sessions, vault, clock, calendar, policy=policy)
    clock.set(almaty(date(2026, 11, 24), 10))
    await open_verified(service, "block")
    for day in (25, 26, 27):
        clock.set(almaty(date(2026, 11, day), 10))
        await quiet.run_due()
    staff = [t for _, t, a, _ in await sent(sessions, vault, calendar) if a == "staff_group"]
    assert staff.count("staff_reminder") == 1
    assert "staff_overdue" not in staff


# -- APScheduler ----------------------------------------------------------------------


def test_the_jobs_are_module_functions_with_explicit_ids_and_misfire_settings(
    reminders: Reminders, calendar: WorkingCalendar, clock: FrozenClock
) -> None:
    component = DeadlineScheduler(reminders, SingleProcessLock(), calendar, reconcile_seconds=120)
    scheduler = component.build_scheduler()
    at = clock.now() + timedelta(hours=1)
    component.apply(Plan(at, at + timedelta(hours=1), at + timedelta(hours=2), {7: at}))

    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {RECONCILE_JOB, NOTICES_JOB, DIGEST_JOB, EXPIRY_JOB}
    assert jobs[RECONCILE_JOB].func is reconcile_job
    assert jobs[NOTICES_JOB].func is notices_job
    assert jobs[DIGEST_JOB].func is digest_job
    assert jobs[EXPIRY_JOB].func is expiry_job
    assert jobs[RECONCILE_JOB].trigger.interval == timedelta(seconds=120)
    assert MISFIRE_GRACE_SECONDS == 3600
    for job in jobs.values():
        assert job.misfire_grace_time == MISFIRE_GRACE_SECONDS
        assert job.coalesce is True
        assert job.max_instances == 1
        pickle.dumps(job.args)  # ids only
    assert jobs[NOTICES_JOB].args == (component.id,)

    # The last open request closed: no notice and no expiry is pending.
    component.apply(Plan(None, at + timedelta(hours=1), None))
    assert {job.id for job in scheduler.get_jobs()} == {RECONCILE_JOB, DIGEST_JOB}


async def test_the_component_reconciles_at_start_up_and_stops_on_request(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    component = scheduler_component(
        service=service,
        sessions=sessions,
        engine=engine,
        vault=vault,
        clock=clock,
        calendar=calendar,
        verification_days=14,
    )
    assert component.name == "scheduler"
    view = await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE
    )
    clock.advance(days=15)
    stop = asyncio.Event()
    task = asyncio.create_task(component.run(stop))
    for _ in range(200):
        if (await service.get(view.reference)).status == "expired":
            break
        await asyncio.sleep(0.01)
    assert (await service.get(view.reference)).status == "expired"
    assert component.leading
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert not component.leading


# -- two schedulers on PostgreSQL -------------------------------------------------------


def postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the advisory lock is PostgreSQL's; SQLite is one process by design")


async def test_two_schedulers_on_postgresql_send_nothing_twice(
    database_url: str,
    engine: AsyncEngine,
    service: RequestService,
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    postgres_only(database_url)
    other_engine = make_engine(database_url)
    try:
        clock.set(almaty(date(2026, 11, 24), 10))
        for user in range(10):
            await open_verified(service, "block", user=ALICE + user)
        clock.set(almaty(date(2026, 12, 1), 10))
        first = Reminders(service, make_sessionmaker(engine, vault), vault, clock, calendar)
        other_service = RequestService(
            make_sessionmaker(other_engine, vault), vault, clock, calendar, staff_user_ids=STAFF_IDS
        )
        second = Reminders(
            other_service, make_sessionmaker(other_engine, vault), vault, clock, calendar
        )

        # Even if both ran at once (the lock failing), the keys keep each notice single.
        await asyncio.gather(first.run_due(), second.run_due(), first.run_due())

        async with make_sessionmaker(engine, vault)() as session:
            keys = list(await session.scalars(select(OutboxItem.idempotency_key)))
            notices = list(await session.scalars(select(ScheduledNotice.key)))
        assert len(keys) == len(set(keys))
        assert len(notices) == len(set(notices))
        assert sum("staff/overdue" in k for k in keys) == 10
        assert sum(k.startswith("digest/") for k in keys) == 1
    finally:
        await other_engine.dispose()


async def test_only_one_postgresql_process_leads_and_another_takes_over_when_it_dies(
    database_url: str, engine: AsyncEngine
) -> None:
    postgres_only(database_url)
    other_engine = make_engine(database_url)
    try:
        first, second = AdvisoryLock(engine), AdvisoryLock(other_engine)
        assert await first.acquire()
        assert not await second.acquire()
        assert await first.alive()

        # The holder's process dies: its connection goes, and the lock with it. The
        # server's lock table names the backend that holds the lock's key.
        assert first.key is not None
        key = first.key & 0xFFFFFFFFFFFFFFFF
        async with other_engine.connect() as admin:
            (pid,) = (
                await admin.scalars(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND classid::text::bigint = :high AND objid::text::bigint = :low "
                        "AND objsubid = 1"
                    ),
                    {"high": key >> 32, "low": key & 0xFFFFFFFF},
                )
            ).all()
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await admin.commit()
        assert not await first.alive()
        assert await second.acquire()
        assert not await first.acquire()
        await second.release()
        assert await first.acquire()
        await first.release()
    finally:
        await other_engine.dispose()


async def test_two_scheduler_components_on_postgresql_one_leads_the_other_takes_over(
    database_url: str,
    engine: AsyncEngine,
    service: RequestService,
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    postgres_only(database_url)
    other_engine = make_engine(database_url)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    try:
        sessions = make_sessionmaker(engine, vault)
        other_sessions = make_sessionmaker(other_engine, vault)
        first = DeadlineScheduler(
            Reminders(service, sessions, vault, clock, calendar),
            AdvisoryLock(engine),
            calendar,
            lock_retry_seconds=0.05,
            lock_check_seconds=0.05,
        )
        second_lock = RefusalsCounted(other_engine)
        second = DeadlineScheduler(
            Reminders(service, other_sessions, vault, clock, calendar),
            second_lock,
            calendar,
            lock_retry_seconds=0.05,
            lock_check_seconds=0.05,
        )
        one = asyncio.create_task(first.run(stop_first))
        await _until(lambda: first.leading)
        two = asyncio.create_task(second.run(stop_second))
        # The second has asked for the lock and been refused, twice: it waits, it does not lead.
        await _until(lambda: second_lock.refusals >= 2)
        assert first.leading
        assert not second.leading

        stop_first.set()  # the first one goes away; the second takes over
        await asyncio.wait_for(one, timeout=5)
        await _until(lambda: second.leading)
        stop_second.set()
        await asyncio.wait_for(two, timeout=5)
    finally:
        stop_first.set()
        stop_second.set()
        await other_engine.dispose()


class RefusalsCounted(AdvisoryLock):
    """The advisory lock, counting the times it was asked for and refused."""

    refusals = 0

    async def acquire(self) -> bool:
        held = await super().acquire()
        if not held:
            self.refusals += 1
        return held


async def _until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached within 4 s")


# -- an assignee who never started the bot -----------------------------------------------


class _Telegram:
    """A Telegram port where one staff member has not started the bot."""

    channel = Channel.TELEGRAM

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str | None, str]] = []

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
        if message.audience is Audience.STAFF_USER:
            raise RecipientUnreachable("Forbidden: bot can't initiate conversation with a user")
        self.delivered.append((message.audience.value, message.address, message.template))
        return DeliveryReceipt(external_id="1")


async def test_a_reminder_the_assignee_cannot_receive_goes_to_the_staff_group(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    reference = await open_verified(service, "block")
    await service.take(reference, STAFF)
    clock.set(almaty(date(2026, 11, 25), 10))
    await reminders.run_due()
    port = _Telegram()
    dispatcher = OutboxDispatcher(sessions, vault, clock, {Channel.TELEGRAM: port})

    for _ in range(3):
        await dispatcher.run_once()

    assert ("staff_group", None, "staff_reminder") in port.delivered


# -- a long queue is read in batches (bench/scheduler.py: one transaction per request was
# -- 2-3 ms each, so 100,000 open requests took minutes a pass) -----------------------------


async def test_a_queue_longer_than_a_batch_is_planned_and_notified_whole_and_once(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    reminders.read_batch = 2
    clock.set(almaty(date(2026, 11, 24), 10))
    references = [await open_verified(service, "access", user=ALICE + n) for n in range(5)]
    closed = references.pop()
    await service.cancel(closed, Actor.person_telegram(ALICE + 4))
    before = await sent(sessions, vault, calendar)

    clock.set(almaty(date(2026, 11, 26), 8, 59))
    plan = await reminders.run_due()
    # Every open request is planned, across batches, for Thursday's 09:00 reminder.
    assert len(plan.requests) == 4
    assert set(plan.requests.values()) == {almaty(date(2026, 11, 26), 9)}
    assert await sent(sessions, vault, calendar) == before  # nothing due yet

    clock.set(almaty(date(2026, 11, 26), 9))
    plan = await reminders.run_due()
    await reminders.run_due()
    reminders_sent = [t for _, t, _, _ in await sent(sessions, vault, calendar)]
    assert reminders_sent.count("staff_reminder") == 4
    assert len(plan.requests) == 4
    assert all(at > almaty(date(2026, 11, 26), 9) for at in plan.requests.values())


async def test_one_notices_job_however_many_requests_and_left_alone_when_unchanged(
    reminders: Reminders, calendar: WorkingCalendar, clock: FrozenClock
) -> None:
    # bench/scheduler.py: one date job per open request cost APScheduler 0.1 ms each,
    # 100,000 of them on the first pass after start-up.
    component = DeadlineScheduler(reminders, SingleProcessLock(), calendar)
    scheduler = component.build_scheduler()
    scheduler.start(paused=True)
    try:
        at = clock.now() + timedelta(hours=1)
        planned = {n: at + timedelta(days=n % 3) for n in range(1000)}
        component.apply(Plan(at, at, None, planned))
        kept = scheduler.get_job(NOTICES_JOB)
        assert len(scheduler.get_jobs()) == 3  # reconcile, notices, digest
        component.apply(Plan(at, at, None, planned))
        assert scheduler.get_job(NOTICES_JOB) is kept
        component.apply(Plan(at + timedelta(days=1), at, None))
        assert scheduler.get_job(NOTICES_JOB).next_run_time == at + timedelta(days=1)
    finally:
        scheduler.shutdown(wait=False)


# -- the morning pass: a batch of requests to a transaction (bench/scheduler.py: one
# -- transaction and one audit-chain lock per request was about 8 ms a notice) ---------------


async def test_a_fault_in_one_request_costs_the_others_none_of_their_notices(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    references = [await open_verified(service, "access", user=ALICE + n) for n in range(5)]
    broken = references[2]
    params = RequestNotices.params

    def failing(self: RequestNotices, request: Any) -> dict[str, Any]:
        if request.reference == broken:
            raise RuntimeError("a request the notices cannot be written for")
        return params(self, request)

    monkeypatch.setattr(RequestNotices, "params", failing)
    clock.set(almaty(date(2026, 11, 26), 10))
    await reminders.run_due()

    async def reminded() -> list[str]:
        async with sessions() as session:
            keys = await session.scalars(
                select(ScheduledNotice.key).where(ScheduledNotice.milestone.like("staff/%"))
            )
            return sorted(key.split("/")[0] for key in keys)

    assert await reminded() == sorted(r for r in references if r != broken)
    staff = [t for _, t, a, _ in await sent(sessions, vault, calendar) if a == "staff_group"]
    assert staff.count("staff_reminder") == 4

    # Mended: the next pass sends the one that failed, once, and the others nothing more.
    monkeypatch.setattr(RequestNotices, "params", params)
    clock.advance(minutes=5)
    await reminders.run_due()
    await reminders.run_due()
    assert await reminded() == sorted(references)
    staff = [t for _, t, a, _ in await sent(sessions, vault, calendar) if a == "staff_group"]
    assert staff.count("staff_reminder") == 5
    assert (await verify_chain(sessions)).intact


async def test_a_morning_of_many_notices_keeps_the_audit_chain_whole(
    service: RequestService,
    reminders: Reminders,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    for n in range(12):
        await open_verified(service, "block" if n % 2 else "access", user=ALICE + n)
    clock.set(almaty(date(2026, 12, 1), 9, 30))  # each owes a late reminder and an alarm

    await reminders.run_due()

    events = await notice_events(sessions)
    assert len(events) >= 24
    report = await verify_chain(sessions)
    assert report.intact, report.reason


# -- the digest of a long queue still fits one Telegram message --------------------------


async def test_a_digest_of_hundreds_of_requests_gives_counts_and_the_most_urgent_lines(
    sessions: async_sessionmaker[AsyncSession],
    reminders: Reminders,
    vault: Vault,
    clock: FrozenClock,
) -> None:
    clock.set(almaty(date(2026, 11, 24), 10))
    now = clock.now()
    async with sessions.begin() as session:
        for n in range(400):
            subject = DataSubject(telegram_user_id=ALICE + n, language="ru", created_at=now)
            session.add(subject)
            await session.flush()
            # Due from 10 days ago to 10 days ahead: overdue, due this week and later.
            session.add(
                Request(
                    reference=f"DSR-2026-{n + 1:06d}",
                    kind="delete_account",
                    status="in_review",
                    channel="telegram",
                    language="ru",
                    subject_id=subject.id,
                    received_at=now - timedelta(days=20),
                    clock_started_at=now - timedelta(days=20),
                    due_at=now + timedelta(days=n % 20 - 10, minutes=n),
                    verified_at=now - timedelta(days=20),
                    verified_by="telegram_contact",
                    updated_at=now,
                )
            )

    assert await reminders.digest()

    async with sessions() as session:
        row = await session.scalar(select(OutboxItem).where(OutboxItem.template == "staff_digest"))
    assert row is not None
    params = vault.decrypt_json(row.params_enc)
    text_ = render_notification("staff_digest", "en", params, escape=html.escape).text
    assert len(text_) <= 4096
    assert params["overdue_count"] == 200
    assert "Overdue (200):" in text_
    assert params["overdue"].splitlines()[-1] == "• … +190 · aina-dsr requests list --overdue"
    # The most overdue comes first.
    assert params["overdue"].splitlines()[0].startswith("• DSR-2026-000001 ")
