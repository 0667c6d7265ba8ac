"""The scheduler: APScheduler wakes :class:`~workflows.deadlines.reminders.Reminders` on time.

The database is the truth. On start-up, and then every ``reconcile_seconds``,
the reconcile step sends whatever is due (a restart after downtime sends each
missed notice once, marked late) and makes the APScheduler jobs match the
database: one date job at the earliest instant any open request is next owed
a notice (each request's instant is on its row, :mod:`workflows.deadlines.notice_plan`),
one for the next staff digest, one for the next expiry. No job is remembered
anywhere else (the job store is in memory), so a crash loses nothing the next
reconcile would not rebuild.

Jobs are module-level functions taking ids, with explicit ids,
``replace_existing=True``, ``coalesce=True`` and a ``misfire_grace_time`` of
an hour: APScheduler's default of one second silently drops a job whose
moment passed while the event loop was busy or the machine was suspended;
within an hour it still runs, and anything older is caught by the reconcile.

Once a day, from the digest hour, a reconcile appends the audit chain's head to
the checkpoint file, when one is set (:meth:`Reminders.checkpoint`).

Once a day, at ``RETENTION_AT`` local time (a quiet hour), the retention job
drops what closed requests no longer need (:mod:`workflows.privacy.retention`); a run
missed by more than the grace period waits for the next day, which purges the
same rows.

Only one process runs this: the holder of the leader lock
(:mod:`workflows.deadlines.leader_lock`, held by :func:`workflows.running.lead`);
the others try again every ``lock_retry_seconds`` and take over when the holder
dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import time
from pathlib import Path
from typing import Any

from apscheduler.jobstores.base import JobLookupError  # type: ignore[import-untyped]
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.leader_lock import AdvisoryLock, LeaderLock, SingleProcessLock
from workflows.deadlines.milestones import DEFAULT_STAFF_MILESTONES, ReminderPolicy
from workflows.deadlines.reminders import Plan, Reminders
from workflows.privacy.retention import DEFAULT_RETENTION_DAYS, purge_closed
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.running import lead

log = logging.getLogger(__name__)

# An hour: a stalled loop or a suspended machine still runs the job; older is the
# reconcile's to catch up, from the database.
MISFIRE_GRACE_SECONDS = 3600
JOB_OPTIONS: dict[str, Any] = {
    "misfire_grace_time": MISFIRE_GRACE_SECONDS,
    "coalesce": True,
    "max_instances": 1,
    "replace_existing": True,
}
RECONCILE_JOB = "reconcile"
DIGEST_JOB = "digest"
EXPIRY_JOB = "expiry"
RETENTION_JOB = "retention"
# Local time of the daily retention purge: a quiet hour, away from the 09:00 notices.
RETENTION_AT = time(3, 30)
NOTICES_JOB = "notices"

# The schedulers leading in this process, by id: jobs carry the id, not the object.
_LEADERS: dict[str, DeadlineScheduler] = {}


async def reconcile_job(scheduler_id: str) -> None:
    """Send what is due and make the jobs match the database."""
    leader = _LEADERS.get(scheduler_id)
    if leader is not None:
        await leader.reconcile()


async def notices_job(scheduler_id: str) -> None:
    """Send the notices owed now (a reconcile: it reads only what is due), and wake again."""
    leader = _LEADERS.get(scheduler_id)
    if leader is not None:
        await leader.reconcile()


async def digest_job(scheduler_id: str) -> None:
    """Post today's staff digest (once), and wake again for the next one."""
    leader = _LEADERS.get(scheduler_id)
    if leader is not None:
        await leader.reminders.digest()
        leader.schedule_digest()


async def expiry_job(scheduler_id: str) -> None:
    """Expire requests left unverified, and wake again for the next one."""
    leader = _LEADERS.get(scheduler_id)
    if leader is not None:
        await leader.reminders.expire_unverified()
        leader.schedule_expiry(await leader.reminders.next_expiry_at())


async def retention_job(scheduler_id: str) -> None:
    """Drop what closed requests no longer need (once a day)."""
    leader = _LEADERS.get(scheduler_id)
    if leader is not None and leader.retention is not None:
        try:
            await leader.retention()
        except Exception:
            # Tomorrow's run purges the same rows; the desk goes on meanwhile.
            log.exception("retention purge failed")


class DeadlineScheduler:
    """The ``scheduler`` component of ``aina-dsr run``."""

    name = "scheduler"

    def __init__(
        self,
        reminders: Reminders,
        lock: LeaderLock,
        calendar: WorkingCalendar,
        *,
        reconcile_seconds: float = 300,
        lock_retry_seconds: float = 15,
        lock_check_seconds: float = 15,
        retention: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.reminders = reminders
        self.retention = retention
        self.id = f"scheduler-{uuid.uuid4().hex[:12]}"
        self._lock = lock
        self._calendar = calendar
        self._reconcile_seconds = reconcile_seconds
        self._lock_retry_seconds = lock_retry_seconds
        self._lock_check_seconds = lock_check_seconds
        self._scheduler: AsyncIOScheduler | None = None
        self.leading = False

    async def run(self, stop: asyncio.Event) -> None:
        """Lead when the lock is ours, else try again every ``lock_retry_seconds``."""
        await lead(
            self._lock,
            stop,
            self._lead,
            name=self.name,
            retry_seconds=self._lock_retry_seconds,
            check_seconds=self._lock_check_seconds,
        )

    async def _lead(self, step_down: asyncio.Event) -> None:
        scheduler = self.build_scheduler()
        _LEADERS[self.id] = self
        self.leading = True
        # Another process may have led meanwhile, and planned from other settings.
        self.reminders.recheck_basis()
        scheduler.start()
        try:
            await self.reconcile()
            await step_down.wait()
        finally:
            self.leading = False
            _LEADERS.pop(self.id, None)
            scheduler.shutdown(wait=False)
            self._scheduler = None

    def build_scheduler(self) -> AsyncIOScheduler:
        """The APScheduler with its one standing job, the periodic reconcile."""
        scheduler = AsyncIOScheduler(
            timezone=self._calendar.tz,
            job_defaults={k: v for k, v in JOB_OPTIONS.items() if k != "replace_existing"},
        )
        scheduler.add_job(
            reconcile_job,
            "interval",
            seconds=self._reconcile_seconds,
            id=RECONCILE_JOB,
            args=[self.id],
            **JOB_OPTIONS,
        )
        if self.retention is not None:
            scheduler.add_job(
                retention_job,
                "cron",
                hour=RETENTION_AT.hour,
                minute=RETENTION_AT.minute,
                id=RETENTION_JOB,
                args=[self.id],
                **JOB_OPTIONS,
            )
        self._scheduler = scheduler
        return scheduler

    async def reconcile(self) -> Plan:
        """Send what is due now and make the jobs match the database."""
        plan = await self.reminders.run_due()
        self.apply(plan)
        return plan

    def apply(self, plan: Plan) -> None:
        """Set the date jobs where ``plan`` says; one for notices, however long the queue."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        self.schedule_notices(plan.notices_at)
        self.schedule_digest(plan.digest_at)
        self.schedule_expiry(plan.expiry_at)

    def schedule_notices(self, at: Any) -> None:
        self._date_job(NOTICES_JOB, notices_job, at, [self.id])

    def schedule_digest(self, at: Any = None) -> None:
        at = at if at is not None else self.reminders.next_digest_at()
        self._date_job(DIGEST_JOB, digest_job, at, [self.id])

    def schedule_expiry(self, at: Any) -> None:
        self._date_job(EXPIRY_JOB, expiry_job, at, [self.id])

    def _date_job(self, job_id: str, func: Any, at: Any, args: Sequence[Any]) -> None:
        scheduler = self._scheduler
        if scheduler is None:
            return
        if at is None:
            with contextlib.suppress(JobLookupError):
                scheduler.remove_job(job_id)
            return
        job = scheduler.get_job(job_id)
        if job is not None and getattr(job, "next_run_time", None) == at:
            return  # already set for that instant
        scheduler.add_job(func, "date", run_date=at, id=job_id, args=list(args), **JOB_OPTIONS)


def scheduler_component(
    *,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    vault: Vault,
    clock: Clock,
    calendar: WorkingCalendar,
    verification_days: int = 14,
    reminder_milestones: Sequence[str] = DEFAULT_STAFF_MILESTONES,
    deadline_near_days: int = 3,
    progress_every_days: int = 7,
    digest_time: time = time(9, 0),
    quiet_days: bool = True,
    reconcile_seconds: int = 300,
    retention_days: int | None = DEFAULT_RETENTION_DAYS,
    audit_checkpoint_file: Path | None = None,
    lock_seconds: float = 15,
) -> DeadlineScheduler:
    """The scheduler for ``aina-dsr run``, from plain values (the settings').

    ``retention_days`` ``None`` leaves out the daily retention purge;
    ``audit_checkpoint_file`` gets the audit chain's daily checkpoint;
    ``lock_seconds`` is how often a process that does not lead tries for the
    lock, and the leader checks it still holds it.

    On PostgreSQL it leads only while it holds the advisory lock; on SQLite it
    always leads (one process per file).
    """
    policy = ReminderPolicy(
        staff=tuple(reminder_milestones),
        deadline_near_days=deadline_near_days,
        progress_every_days=progress_every_days,
        notify_at=digest_time,
        quiet_days=quiet_days,
    )
    reminders = Reminders(
        service,
        sessions,
        vault,
        clock,
        calendar,
        policy=policy,
        verification_days=verification_days,
        audit_checkpoint_file=audit_checkpoint_file,
    )
    lock: LeaderLock = (
        AdvisoryLock(engine) if engine.dialect.name == "postgresql" else SingleProcessLock()
    )
    retention: Callable[[], Awaitable[object]] | None = None
    if retention_days is not None:
        days = retention_days

        async def retention() -> object:
            return await purge_closed(sessions, vault, clock, retention_days=days)

    return DeadlineScheduler(
        reminders,
        lock,
        calendar,
        reconcile_seconds=reconcile_seconds,
        retention=retention,
        lock_retry_seconds=lock_seconds,
        lock_check_seconds=lock_seconds,
    )
