"""The per-request notices: what a running request is owed now, sent to staff and the person.

For each request it works out the milestones owed (:mod:`workflows.deadlines.milestones`)
and not yet recorded, decides which go out (a quiet day holds most back; a
notice replaced by a later one, or for a person past the deadline or told at
verification, is skipped), claims them (:mod:`workflows.deadlines.claims`) and
writes each one's audit event and outbox message; a notice sent after its day
is marked late. The requests of a batch share one transaction (one lock of the
audit chain), falling back to one transaction per request when a batch fails,
and each gets its next notice instant written (:mod:`workflows.deadlines.notice_plan`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.claims import KindChange, Owed, claim_many, notice_key, owed_since
from workflows.deadlines.milestones import PERSON_SERIES, Milestone, ReminderPolicy, milestones
from workflows.deadlines.notice_plan import set_next_notices
from workflows.outbox.queue import Audience, Channel, enqueue, subject_route
from workflows.persistence.tables import DataSubject, Request, ScheduledNotice
from workflows.privacy.audit import record_event
from workflows.privacy.vault import Vault
from workflows.requests.states import CLOSED, Status
from workflows.snapshots import ActorKind

log = logging.getLogger(__name__)

# How far ahead the plan looks for a request's next notice.
HORIZON = timedelta(days=40)


def utc_instant(policy: ReminderPolicy, calendar: WorkingCalendar, day: date) -> datetime:
    """The notice instant of a local day, in UTC, as the clock's ``now`` is.

    Comparing datetimes of one tzinfo skips the zone lookups that made up most of
    a pass over a long queue.
    """
    return policy.instant(day, calendar).astimezone(UTC)


def runs(request: Request) -> bool:
    """Whether a request's clock runs and someone can act on it: open and verified."""
    return (
        request.closed_at is None
        and Status(request.status) not in CLOSED
        and request.verified_at is not None
        and request.clock_started_at is not None
        and request.due_at is not None
    )


class RequestNotices:
    """Sends what given requests are owed now; see the module docstring.

    ``lost_basis`` is called when the instants it computed could not be written
    because the stored plan basis is no longer ``basis``.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        calendar: WorkingCalendar,
        policy: ReminderPolicy,
        *,
        basis: str,
        lost_basis: Callable[[], None],
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._calendar = calendar
        self._policy = policy
        self._basis = basis
        self._lost_basis = lost_basis

    async def run(self, request_ids: Sequence[int]) -> dict[int, datetime]:
        """Send what these requests are owed now; return when each is owed something next.

        The whole batch is one transaction, so one lock of the audit chain. When
        it fails, each request is tried in a transaction of its own, so one
        request's fault costs no other its notices; a request that fails alone
        keeps its instant and the next pass tries it again.
        """
        try:
            return await self._run_batch(request_ids)
        except Exception:
            if len(request_ids) == 1:
                log.exception(
                    "request %d: notices not sent; the next pass tries again", request_ids[0]
                )
                return {}
            log.exception("a batch of %d request(s) failed; trying each alone", len(request_ids))
        planned: dict[int, datetime] = {}
        for request_id in request_ids:
            planned.update(await self.run([request_id]))
        return planned

    async def _run_batch(self, request_ids: Sequence[int]) -> dict[int, datetime]:
        now = self._clock.now()
        today = self._calendar.local_date(now)
        until = self._calendar.local_date(now + HORIZON)
        quiet = self._policy.is_quiet(today, self._calendar)
        later = utc_instant(self._policy, self._calendar, until)
        async with self._sessions.begin() as session:
            requests = [
                request
                for request in await session.scalars(
                    select(Request).where(Request.id.in_(request_ids)).order_by(Request.id)
                )
                if runs(request)
            ]
            if not requests:
                return {}
            subjects, recorded = await self._read(session, requests)
            owed_by_days: dict[tuple[date, date], list[Milestone]] = {}
            policy, calendar = self._policy, self._calendar
            work: list[tuple[Request, Owed]] = []
            waking: list[tuple[int, int, datetime]] = []
            for request in requests:
                assert request.clock_started_at is not None  # runs()
                assert request.due_at is not None
                days = (
                    self._calendar.local_date(request.clock_started_at),
                    self._calendar.local_date(request.due_at),
                )
                owed = owed_by_days.get(days)
                if owed is None:
                    owed = milestones(
                        request.clock_started_at, request.due_at, calendar, policy, until
                    )
                    owed_by_days[days] = owed
                keys = recorded.get(request.id, set())
                changed = KindChange.of(request)
                pending = [
                    m
                    for m in owed
                    if notice_key(request.reference, m, changed) not in keys
                    and owed_since(self._policy.instant(m.day, self._calendar), changed)
                ]
                ready = [m for m in pending if self._ready(m, now, quiet)]
                work.extend((request, item) for item in self._decide(ready, request, now, today))
                waiting = [m for m in pending if m not in ready]
                at = self._next_wake(waiting, now, today) or later
                waking.append((request.id, request.version, at))
            claimed = await claim_many(session, work, now)
            # Every audit event of the batch goes in one flush, so the chain is locked once.
            with session.no_autoflush:
                for request, item in work:
                    key = notice_key(request.reference, item.milestone, KindChange.of(request))
                    if key in claimed:
                        subject = subjects[request.subject_id]
                        await self._record(session, request, subject, item, now)
            await session.flush()
            written = await set_next_notices(session, waking, self._basis)
        if not written:
            self._lost_basis()
            return {}
        return {request_id: at for request_id, _, at in waking}

    @staticmethod
    async def _read(
        session: AsyncSession, requests: Sequence[Request]
    ) -> tuple[dict[int, DataSubject], dict[int, set[str]]]:
        """The requests' people, by id, and the notice keys recorded for each request."""
        subjects = {
            subject.id: subject
            for subject in await session.scalars(
                select(DataSubject).where(
                    DataSubject.id.in_({request.subject_id for request in requests})
                )
            )
        }
        recorded: dict[int, set[str]] = {}
        for notice_request, key in await session.execute(
            select(ScheduledNotice.request_id, ScheduledNotice.key).where(
                ScheduledNotice.request_id.in_([request.id for request in requests])
            )
        ):
            if notice_request is not None:
                recorded.setdefault(notice_request, set()).add(key)
        return subjects, recorded

    def _ready(self, milestone: Milestone, now: datetime, quiet: bool) -> bool:
        """Whether a notice not yet recorded goes out now (a quiet day holds most back)."""
        if self._policy.instant(milestone.day, self._calendar) > now:
            return False
        return milestone.any_day or not quiet

    def _decide(
        self, ready: list[Milestone], request: Request, now: datetime, today: date
    ) -> list[Owed]:
        assert request.due_at is not None
        latest: dict[str, Milestone] = {}
        for milestone in ready:
            held = latest.get(milestone.series)
            if held is None or milestone.day >= held.day:
                latest[milestone.series] = milestone
        decided: list[Owed] = []
        for milestone in ready:
            late = milestone.day < today
            reason: str | None = None
            if latest[milestone.series] is not milestone:
                reason = "replaced by a later notice"
            elif milestone.series == PERSON_SERIES and request.due_at < now:
                # "We will answer on time" must not reach anyone after the deadline.
                reason = "the deadline has passed"
            elif (
                milestone.series == PERSON_SERIES
                and request.verified_at is not None
                and self._policy.instant(milestone.day, self._calendar) <= request.verified_at
            ):
                # Meant for before the person was verified: that notice told them the
                # deadline already, so this one would only repeat it.
                reason = "the person was told at verification"
            decided.append(Owed(milestone, late, reason))
        return decided

    def _next_wake(self, waiting: list[Milestone], now: datetime, today: date) -> datetime | None:
        instants = []
        for milestone in waiting:
            at = self._policy.instant(milestone.day, self._calendar)
            if at <= now:
                # Held back by a quiet day: it goes out on the next working day.
                at = self._policy.instant(self._calendar.next_working_day(today), self._calendar)
            instants.append(at)
        return min(instants, default=None)

    async def _record(
        self,
        session: AsyncSession,
        request: Request,
        subject: DataSubject,
        item: Owed,
        now: datetime,
    ) -> None:
        """The audit event and outbox row of one notice, whose key the caller has claimed."""
        milestone = item.milestone
        key = notice_key(request.reference, milestone, KindChange.of(request))
        details: dict[str, Any] = {
            "milestone": milestone.name,
            "template": milestone.template,
            "meant_for": milestone.day.isoformat(),
            "late": item.late,
        }
        if item.skip_reason is not None:
            details["reason"] = item.skip_reason
            _audit(session, request, "notice_skipped", "system", now, details)
            return
        params = self.params(request)
        template = milestone.template
        if milestone.to_staff:
            assert request.due_at is not None
            today, due = self._calendar.local_date(now), self._calendar.local_date(request.due_at)
            if template == "staff_reminder" and today > due:
                # A reminder that missed its day and goes out after the deadline (no
                # overdue alarm in the settings to fold it into) says what is true now.
                template = "staff_overdue"
            params["action"] = "overdue" if template == "staff_overdue" else "remind"
            if template == "staff_reminder":
                params["days_left"] = self._calendar.working_days_between(today, due)
            audience = Audience.STAFF_USER if request.assignee_id else Audience.STAFF_GROUP
            address = str(request.assignee_id) if request.assignee_id else None
            channel, language = Channel.TELEGRAM, "en"
            details["template"] = template
        else:
            route = subject_route(self._vault, request.channel, subject)
            if route is None:
                details["reason"] = "the person cannot be reached"
                _audit(session, request, "notice_skipped", "system", now, details)
                return
            audience, (channel, address), language = Audience.SUBJECT, route, request.language
        details["audience"] = audience.value
        _audit(session, request, "notice_sent", channel.value, now, details)
        await enqueue(
            session,
            self._vault,
            now,
            key=key,
            channel=channel,
            audience=audience,
            template=template,
            language=language,
            params=params,
            address=address,
            request_id=request.id,
        )
        log.info("%s: %s%s", request.reference, milestone.name, " (late)" if item.late else "")

    def params(self, request: Request) -> dict[str, Any]:
        """What a request's notice says about it: reference, kind, status and due date."""
        due = request.due_at
        return {
            "reference": request.reference,
            "kind": request.kind,
            "status": request.status,
            "due_date": self._calendar.local_date(due).isoformat() if due else None,
        }


def _audit(
    session: AsyncSession,
    request: Request,
    action: str,
    channel: str,
    now: datetime,
    details: dict[str, Any],
) -> None:
    record_event(
        session,
        request_id=request.id,
        reference=request.reference,
        at=now,
        actor=ActorKind.SYSTEM.value,
        channel=channel,
        action=action,
        details=details,
    )
