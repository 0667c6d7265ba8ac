"""The deadline workflow's work, read from the database each time it runs.

:class:`Reminders` looks at the requests as they are now, works out what each
one is owed (:mod:`workflows.deadlines`), and sends what is due and not yet
recorded: the person's and staff's notices, the staff digest, and the expiry
of requests never verified. Each notice is recorded under its idempotency key
(request and milestone) in the same transaction as its audit event and its
outbox message, so a second scheduler, a retried job or a restart sends
nothing twice; a notice sent after its day is marked late in its audit event.
The APScheduler side (:mod:`workflows.scheduler`) only decides when to call it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.calendar import WorkingCalendar
from workflows.clock import Clock
from workflows.deadlines import Milestone, ReminderPolicy, milestones
from workflows.errors import ConcurrentChange, IllegalTransition, RequestNotFound
from workflows.outbox import Audience, Channel, enqueue, subject_route
from workflows.service import RequestService, verification_cutoff
from workflows.states import CLOSED, Status
from workflows.tables import AuditEvent, DataSubject, Request, ScheduledNotice
from workflows.vault import Vault
from workflows.views import ActorKind

log = logging.getLogger(__name__)

SENT = "sent"
SKIPPED = "skipped"
DIGEST = "digest"
# How far ahead the plan looks for a request's next notice.
_HORIZON = timedelta(days=40)
# The reconcile reads the open queue this many requests at a time (bounded: 10 million).
_BATCH = 2000
_MAX_BATCHES = 5000


@dataclass(frozen=True)
class Plan:
    """When the scheduler should look again: per request, for the digest, for expiry."""

    requests: Mapping[int, datetime]
    digest_at: datetime
    expiry_at: datetime | None


@dataclass(frozen=True)
class _Owed:
    milestone: Milestone
    late: bool
    skip_reason: str | None = None


class Reminders:
    """Sends what the requests in the database are owed now; see the module docstring."""

    def __init__(
        self,
        service: RequestService,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        calendar: WorkingCalendar,
        *,
        policy: ReminderPolicy | None = None,
        verification_days: int = 14,
    ) -> None:
        self._service = service
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._calendar = calendar
        self.policy = policy or ReminderPolicy()
        self._verification_days = verification_days

    # -- the whole reconcile step ------------------------------------------

    async def run_due(self) -> Plan:
        """Expire, notify and digest whatever is due now; return when to look again.

        The open requests are read in batches, with the notices recorded for
        them; only a request owed something now gets a transaction of its own
        (:meth:`run_request`, which decides again under its lock), so a pass
        over a large queue with little due costs a few queries, not one
        transaction per request.
        """
        await self.expire_unverified()
        now = self._clock.now()
        today = self._calendar.local_date(now)
        until = self._calendar.local_date(now + _HORIZON)
        quiet = self.policy.is_quiet(today, self._calendar)
        # Held back by a quiet day: a notice goes out on the next working day.
        held = self._utc_instant(self._calendar.next_working_day(today))
        owed_by_days: dict[tuple[date, date], list[tuple[Milestone, datetime]]] = {}
        wake: dict[int, datetime] = {}
        owing: list[int] = []
        async for request_id, reference, started_at, due_at, recorded in self._open_requests():
            days = (self._calendar.local_date(started_at), self._calendar.local_date(due_at))
            owed = owed_by_days.get(days)
            if owed is None:
                # What is owed, and when, depends on the two local dates alone: worked out
                # once per pair in a pass.
                owed = [
                    (m, self._utc_instant(m.day))
                    for m in milestones(started_at, due_at, self._calendar, self.policy, until)
                ]
                owed_by_days[days] = owed
            pending = [(m, at) for m, at in owed if _key(reference, m) not in recorded]
            if any(at <= now and (m.any_day or not quiet) for m, at in pending):
                owing.append(request_id)
                continue
            if pending:
                wake[request_id] = min(at if at > now else held for _, at in pending)
        for request_id in owing:
            at = await self.run_request(request_id)
            if at is not None:
                wake[request_id] = at
        await self.digest()
        return Plan(wake, self.next_digest_at(), await self.next_expiry_at())

    # -- expiry --------------------------------------------------------------

    async def expire_unverified(self) -> list[str]:
        """Close requests unverified for ``verification_days``; the service tells the person."""
        cutoff = verification_cutoff(self._clock.now(), self._verification_days)
        expired: list[str] = []
        for reference in await self._service.unverified_before(cutoff):
            try:
                await self._service.expire(reference)
            except (IllegalTransition, ConcurrentChange, RequestNotFound):
                continue  # verified, cancelled or expired meanwhile
            expired.append(reference)
        if expired:
            log.info("expired %d unverified request(s)", len(expired))
        return expired

    async def next_expiry_at(self) -> datetime | None:
        async with self._sessions() as session:
            oldest = await session.scalar(
                select(func.min(Request.received_at)).where(
                    Request.status == Status.AWAITING_VERIFICATION.value
                )
            )
        if oldest is None:
            return None
        return oldest + timedelta(days=self._verification_days, seconds=1)

    # -- one request ---------------------------------------------------------

    async def run_request(self, request_id: int) -> datetime | None:
        """Send what one request is owed now; return when it is owed something next."""
        now = self._clock.now()
        today = self._calendar.local_date(now)
        async with self._sessions.begin() as session:
            request = await session.get(Request, request_id)
            if request is None or not _runs(request):
                return None
            assert request.clock_started_at is not None
            assert request.due_at is not None
            owed = milestones(
                request.clock_started_at,
                request.due_at,
                self._calendar,
                self.policy,
                self._calendar.local_date(now + _HORIZON),
            )
            recorded = set(
                await session.scalars(
                    select(ScheduledNotice.key).where(ScheduledNotice.request_id == request.id)
                )
            )
            pending = [m for m in owed if _key(request.reference, m) not in recorded]
            quiet = self.policy.is_quiet(today, self._calendar)
            ready = [m for m in pending if self._ready(m, now, quiet)]
            subject = await session.get_one(DataSubject, request.subject_id)
            for item in self._decide(ready, request, now, today):
                await self._record(session, request, subject, item, now)
            waiting = [m for m in pending if m not in ready]
            return self._next_wake(waiting, now, today)

    def _utc_instant(self, day: date) -> datetime:
        # In UTC, as the clock's ``now`` is: comparing datetimes of one tzinfo skips the
        # zone lookups that made up most of a pass over a long queue.
        return self.policy.instant(day, self._calendar).astimezone(UTC)

    def _ready(self, milestone: Milestone, now: datetime, quiet: bool) -> bool:
        """Whether a notice not yet recorded goes out now (a quiet day holds most back)."""
        if self.policy.instant(milestone.day, self._calendar) > now:
            return False
        return milestone.any_day or not quiet

    def _decide(
        self, ready: list[Milestone], request: Request, now: datetime, today: date
    ) -> list[_Owed]:
        assert request.due_at is not None
        latest: dict[str, Milestone] = {}
        for milestone in ready:
            held = latest.get(milestone.series)
            if held is None or milestone.day >= held.day:
                latest[milestone.series] = milestone
        decided: list[_Owed] = []
        for milestone in ready:
            late = milestone.day < today
            reason: str | None = None
            if latest[milestone.series] is not milestone:
                reason = "replaced by a later notice"
            elif not milestone.to_staff and request.due_at < now:
                # "We will answer on time" must not reach anyone after the deadline.
                reason = "the deadline has passed"
            decided.append(_Owed(milestone, late, reason))
        return decided

    def _next_wake(self, waiting: list[Milestone], now: datetime, today: date) -> datetime | None:
        instants = []
        for milestone in waiting:
            at = self.policy.instant(milestone.day, self._calendar)
            if at <= now:
                # Held back by a quiet day: it goes out on the next working day.
                at = self.policy.instant(self._calendar.next_working_day(today), self._calendar)
            instants.append(at)
        return min(instants, default=None)

    async def _record(
        self,
        session: AsyncSession,
        request: Request,
        subject: DataSubject,
        item: _Owed,
        now: datetime,
    ) -> None:
        milestone = item.milestone
        key = _key(request.reference, milestone)
        outcome = SKIPPED if item.skip_reason is not None else SENT
        if not await _claim(session, key, request.id, milestone, outcome, item.late, now):
            return  # another scheduler, or an earlier run, has dealt with it
        details: dict[str, Any] = {
            "milestone": milestone.name,
            "template": milestone.template,
            "meant_for": milestone.day.isoformat(),
            "late": item.late,
        }
        if item.skip_reason is not None:
            details["reason"] = item.skip_reason
            self._audit(session, request, "notice_skipped", "system", now, details)
            return
        params = self._params(request)
        if milestone.to_staff:
            params["action"] = "overdue" if milestone.template == "staff_overdue" else "remind"
            if milestone.template == "staff_reminder":
                assert request.due_at is not None
                params["days_left"] = self._calendar.working_days_between(
                    self._calendar.local_date(now), self._calendar.local_date(request.due_at)
                )
            audience = Audience.STAFF_USER if request.assignee_id else Audience.STAFF_GROUP
            address = str(request.assignee_id) if request.assignee_id else None
            channel, language = Channel.TELEGRAM, "en"
        else:
            route = subject_route(self._vault, request.channel, subject)
            if route is None:
                details["reason"] = "the person cannot be reached"
                self._audit(session, request, "notice_skipped", "system", now, details)
                return
            audience, (channel, address), language = Audience.SUBJECT, route, request.language
        details["audience"] = audience.value
        self._audit(session, request, "notice_sent", channel.value, now, details)
        await enqueue(
            session,
            self._vault,
            now,
            key=key,
            channel=channel,
            audience=audience,
            template=milestone.template,
            language=language,
            params=params,
            address=address,
            request_id=request.id,
        )
        log.info("%s: %s%s", request.reference, milestone.name, " (late)" if item.late else "")

    # -- the staff digest ----------------------------------------------------

    def next_digest_at(self) -> datetime:
        """The next digest instant after now (working days only, when days are quiet)."""
        now = self._clock.now()
        day = self._calendar.local_date(now)
        for _ in range(400):
            at = self.policy.instant(day, self._calendar)
            if at > now and not self.policy.is_quiet(day, self._calendar):
                return at
            day += timedelta(days=1)
        raise ValueError("no working day within a year")  # pragma: no cover

    async def digest(self) -> bool:
        """Post today's digest to the staff group once, from its hour on; never on a quiet day.

        A digest missed on an earlier day is not sent: it would describe a
        queue that has moved on, and today's says what is true now.
        """
        now = self._clock.now()
        today = self._calendar.local_date(now)
        if self.policy.is_quiet(today, self._calendar):
            return False
        if now < self.policy.instant(today, self._calendar):
            return False
        key = f"{DIGEST}/{today.isoformat()}"
        async with self._sessions.begin() as session:
            if not await _claim(session, key, None, None, SENT, False, now, day=today):
                return False
            rows = (
                await session.scalars(
                    select(Request)
                    .where(
                        Request.closed_at.is_(None),
                        Request.verified_at.is_not(None),
                        Request.status.not_in([s.value for s in CLOSED]),
                    )
                    .order_by(Request.due_at.is_(None), Request.due_at, Request.id)
                )
            ).all()
            since = self._previous_digest(today)
            week_end = today + timedelta(days=6 - today.weekday())
            new, due_week, overdue, waiting, unconfirmed = [], [], [], [], []
            for row in rows:
                line = self._digest_line(row)
                if row.verified_at is not None and row.verified_at >= since:
                    new.append(line)
                if row.due_at is not None and row.due_at < now:
                    overdue.append(line)
                elif row.due_at is not None and self._calendar.local_date(row.due_at) <= week_end:
                    due_week.append(line)
                if row.status == Status.AWAITING_INFO.value:
                    waiting.append(line)
                elif row.due_at is None:
                    # A correction or destruction whose documents staff have not yet
                    # confirmed: no clock runs, so only the digest keeps it in sight.
                    unconfirmed.append(line)
            await enqueue(
                session,
                self._vault,
                now,
                key=key,
                channel=Channel.TELEGRAM,
                audience=Audience.STAFF_GROUP,
                template="staff_digest",
                language="en",
                params={
                    "day": today.isoformat(),
                    "new_count": len(new),
                    "new": _listing(new),
                    "due_week_count": len(due_week),
                    "due_week": _listing(due_week),
                    "overdue_count": len(overdue),
                    "overdue": _listing(overdue),
                    "waiting_count": len(waiting),
                    "waiting": _listing(waiting),
                    "unconfirmed_count": len(unconfirmed),
                    "unconfirmed": _listing(unconfirmed),
                },
            )
        log.info("digest for %s posted", today.isoformat())
        return True

    def _previous_digest(self, today: date) -> datetime:
        day = today - timedelta(days=1)
        for _ in range(400):
            if not self.policy.is_quiet(day, self._calendar):
                break
            day -= timedelta(days=1)
        return self.policy.instant(day, self._calendar)

    def _digest_line(self, request: Request) -> str:
        due = self._calendar.local_date(request.due_at).isoformat() if request.due_at else "—"
        return f"{request.reference} · {request.kind} · {due}"

    # -- internals -----------------------------------------------------------

    async def _open_requests(
        self,
    ) -> AsyncIterator[tuple[int, str, datetime, datetime, set[str]]]:
        """Every request whose clock runs, in id order, with the notice keys recorded for it.

        Read ``_BATCH`` requests at a time (two queries a batch), so memory stays
        flat however long the queue is.
        """
        batch = _BATCH
        last_id = 0
        for _ in range(_MAX_BATCHES):
            async with self._sessions() as session:
                rows = (
                    await session.execute(
                        select(
                            Request.id, Request.reference, Request.clock_started_at, Request.due_at
                        )
                        .where(
                            Request.id > last_id,
                            Request.closed_at.is_(None),
                            Request.verified_at.is_not(None),
                            Request.clock_started_at.is_not(None),
                            Request.due_at.is_not(None),
                            Request.status.not_in([s.value for s in CLOSED]),
                        )
                        .order_by(Request.id)
                        .limit(batch)
                    )
                ).all()
                if not rows:
                    return
                recorded: dict[int, set[str]] = {}
                notices = await session.execute(
                    select(ScheduledNotice.request_id, ScheduledNotice.key).where(
                        ScheduledNotice.request_id >= rows[0].id,
                        ScheduledNotice.request_id <= rows[-1].id,
                    )
                )
                for notice_request, key in notices:
                    if notice_request is not None:
                        recorded.setdefault(notice_request, set()).add(key)
            for request_id, reference, started_at, due_at in rows:
                assert started_at is not None  # the query asks for both
                assert due_at is not None
                yield request_id, reference, started_at, due_at, recorded.get(request_id, set())
            last_id = rows[-1].id

    def _params(self, request: Request) -> dict[str, Any]:
        due = request.due_at
        return {
            "reference": request.reference,
            "kind": request.kind,
            "status": request.status,
            "due_date": self._calendar.local_date(due).isoformat() if due else None,
        }

    def _audit(
        self,
        session: AsyncSession,
        request: Request,
        action: str,
        channel: str,
        now: datetime,
        details: dict[str, Any],
    ) -> None:
        session.add(
            AuditEvent(
                request_id=request.id,
                reference=request.reference,
                at=now,
                actor=ActorKind.SYSTEM.value,
                channel=channel,
                action=action,
                details=dict(details),
            )
        )


def _runs(request: Request) -> bool:
    """Whether a request's clock runs and someone can act on it: open and verified."""
    return (
        request.closed_at is None
        and Status(request.status) not in CLOSED
        and request.verified_at is not None
        and request.clock_started_at is not None
        and request.due_at is not None
    )


def _key(reference: str, milestone: Milestone) -> str:
    return f"{reference}/{milestone.name}"


def _listing(lines: list[str]) -> str:
    return "\n".join(f"• {line}" for line in lines) if lines else "—"


async def _claim(
    session: AsyncSession,
    key: str,
    request_id: int | None,
    milestone: Milestone | None,
    outcome: str,
    late: bool,
    now: datetime,
    *,
    day: date | None = None,
) -> bool:
    """Record a notice under its key; ``False`` when the key is recorded already.

    On PostgreSQL a second scheduler inserting the same key waits for the
    first one's transaction and then inserts nothing.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(ScheduledNotice)
        .values(
            key=key,
            request_id=request_id,
            milestone=milestone.name if milestone is not None else DIGEST,
            meant_for=milestone.day if milestone is not None else day,
            outcome=outcome,
            late=late,
            recorded_at=now,
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(ScheduledNotice.id)
    )
    return (await session.scalar(statement)) is not None
