"""The deadline workflow's work, read from the database each time it runs.

:class:`Reminders` looks at the requests as they are now, works out what each
one is owed (:mod:`workflows.deadlines.milestones`), and sends what is due and not yet
recorded: the person's and staff's notices, the staff digest, and the expiry
of requests never verified. Each notice is recorded under its idempotency key
(request and milestone) in the same transaction as its audit event and its
outbox message, so a second scheduler, a retried job or a restart sends
nothing twice; a notice sent after its day is marked late in its audit event.
The requests owed something at once are dealt with a batch to a transaction
(one lock of the audit chain a batch), falling back to one transaction per
request when a batch fails.

Each request's next notice instant is kept on its row (:mod:`workflows.deadlines.notice_plan`),
so a pass reads only the requests that are due or were changed since they
were planned; and when the settings, calendar or kinds they were planned from
are not the ones this process runs with, its first pass plans every open
request again. The APScheduler side (:mod:`workflows.deadlines.scheduler`) only decides
when to call it.

When staff change a request's kind (:mod:`workflows.requests.staff_actions`),
its deadline is a new one: the notices of the new clock are keyed by the
change (``DSR-…/k1/staff/before/1``), so one sent for the old deadline does not
stand in for the new one's, and owed only from the instant of the change, so
none is sent late for days when the old clock ran.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.milestones import PERSON_SERIES, Milestone, ReminderPolicy, milestones
from workflows.deadlines.notice_plan import BasisChanged, adopt_basis, plan_basis, set_next_notices
from workflows.errors import ConcurrentChange, IllegalTransition, RequestNotFound
from workflows.i18n import LANGUAGES, render_notification
from workflows.outbox.queue import Audience, Channel, enqueue, subject_route
from workflows.persistence.tables import DataSubject, Request, ScheduledNotice
from workflows.persistence.upsert import upsert
from workflows.privacy.audit import ChainHead, chain_head, record_event
from workflows.privacy.audit_checkpoint import (
    Checkpoint,
    CheckpointError,
    append_checkpoint,
    last_checkpoint,
)
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.requests.states import CLOSED, Status
from workflows.requests.verification import verification_cutoff
from workflows.snapshots import ActorKind

log = logging.getLogger(__name__)

SENT = "sent"
SKIPPED = "skipped"
DIGEST = "digest"
# How far ahead the plan looks for a request's next notice.
_HORIZON = timedelta(days=40)
# The reconcile reads the open queue this many requests at a time (bounded: 10 million).
_BATCH = 2000
_MAX_BATCHES = 5000
# Requests owed something now are dealt with this many to a transaction.
_NOTICE_BATCH = 200
# Notices are claimed this many to an INSERT (SQLite binds 7 values for each).
_CLAIM_CHUNK = 500
# Telegram refuses a message of more than 4,096 characters (UTF-16 code units).
TELEGRAM_MESSAGE_LIMIT = 4096
# A digest whose lists do not all fit shows at most this many lines of each (then fewer,
# should even that not fit) and, for the rest, the command that lists them.
_DIGEST_LINES = (10, 5, 3, 1, 0)
# The digest shows this much of the audit chain's head hash: enough to compare by eye
# with `aina-dsr audit verify`, and for a forger to have to match (64 bits).
AUDIT_HEAD_SHOWN = 16
# Where staff find what a shortened list leaves out: commands, the same in every language.
_DIGEST_MORE = {
    "new": "aina-dsr requests list",
    "due_week": "aina-dsr requests list",
    "overdue": "aina-dsr requests list --overdue",
    "waiting": "aina-dsr requests list --status awaiting_info",
    "unconfirmed": "aina-dsr requests list",
}


@dataclass(frozen=True)
class Plan:
    """When the scheduler should look again: for notices, the digest and expiry.

    ``notices_at`` is the earliest instant any open request is next owed a
    notice after now; ``requests`` says when each request this pass planned
    (new, changed or just notified) is next owed one.
    """

    notices_at: datetime | None
    digest_at: datetime
    expiry_at: datetime | None
    requests: Mapping[int, datetime] = field(default_factory=dict)


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
        audit_checkpoint_file: Path | None = None,
    ) -> None:
        self._service = service
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._calendar = calendar
        self.policy = policy or ReminderPolicy()
        self._verification_days = verification_days
        self._checkpoint_file = audit_checkpoint_file
        # The local day of the newest checkpoint known to be in the file, and of the last
        # failure to write one (logged once a day, not on every pass).
        self._checkpointed: date | None = None
        self._checkpoint_failed: date | None = None
        # What every instant this process writes is computed from; fixed for its life.
        self.basis = plan_basis(self.policy, calendar, service.kinds, _HORIZON)
        # Whether the database holds ``basis``: read on the first pass, then known here,
        # as nothing but a scheduler writes it (see :meth:`recheck_basis`).
        self._basis_stored = False

    # -- the whole reconcile step ------------------------------------------

    async def run_due(self) -> Plan:
        """Expire, notify and digest whatever is due now; return when to look again.

        Only the open requests that are due (their ``next_notice_at`` has come)
        or unplanned (NULL: new, changed, or from before the column) are read,
        in batches, with the notices recorded for them. Those owed nothing now
        get their next instant written, a batch at a time; those owed
        something go through :meth:`run_requests`, which decides again in the
        transaction that records the notices.
        """
        await self.expire_unverified()
        now = self._clock.now()
        if not self._basis_stored:
            await self._adopt_basis(now)
        today = self._calendar.local_date(now)
        until = self._calendar.local_date(now + _HORIZON)
        quiet = self.policy.is_quiet(today, self._calendar)
        # Held back by a quiet day: a notice goes out on the next working day.
        held = self._utc_instant(self._calendar.next_working_day(today))
        # Nothing owed within the horizon: look again once it has moved on.
        later = self._utc_instant(until)
        owed_by_days: dict[tuple[date, date], list[tuple[Milestone, datetime]]] = {}
        planned: dict[int, datetime] = {}
        async for batch in self._due_requests(now):
            waking: list[tuple[int, int, datetime]] = []
            owing: list[int] = []
            for request_id, version, reference, started_at, due_at, recorded, changed in batch:
                days = (self._calendar.local_date(started_at), self._calendar.local_date(due_at))
                owed = owed_by_days.get(days)
                if owed is None:
                    # What is owed, and when, depends on the two local dates alone: worked
                    # out once per pair in a pass.
                    owed = [
                        (m, self._utc_instant(m.day))
                        for m in milestones(started_at, due_at, self._calendar, self.policy, until)
                    ]
                    owed_by_days[days] = owed
                pending = [
                    (m, at)
                    for m, at in owed
                    if _key(reference, m, changed) not in recorded and _owed_since(at, changed)
                ]
                if any(at <= now and (m.any_day or not quiet) for m, at in pending):
                    owing.append(request_id)
                    continue
                at = min((at if at > now else held for _, at in pending), default=later)
                waking.append((request_id, version, at))
            if waking:
                async with self._sessions.begin() as session:
                    written = await set_next_notices(session, waking, self.basis)
                if written:
                    planned.update((request_id, at) for request_id, _, at in waking)
                else:
                    self._lost_basis()
            for start in range(0, len(owing), _NOTICE_BATCH):
                planned.update(await self.run_requests(owing[start : start + _NOTICE_BATCH]))
        await self.digest()
        await self.checkpoint()
        return Plan(
            await self.next_notices_at(),
            self.next_digest_at(),
            await self.next_expiry_at(),
            planned,
        )

    def recheck_basis(self) -> None:
        """Read the stored plan basis again on the next pass (another process may have
        led with other settings meanwhile)."""
        self._basis_stored = False

    async def _adopt_basis(self, now: datetime) -> None:
        for _ in range(3):
            try:
                async with self._sessions.begin() as session:
                    unplanned = await adopt_basis(session, self.basis, now)
            except BasisChanged:
                continue  # another scheduler adopted one meanwhile: read it again
            if unplanned is not None:
                log.info(
                    "reminder settings, calendar or kinds changed (plan basis %s): "
                    "%d open request(s) to plan again",
                    self.basis[:12],
                    unplanned,
                )
            self._basis_stored = True
            return
        # Left unknown: the next pass tries again; meanwhile nothing is planned from it.
        log.warning("plan basis not stored: other schedulers keep changing it")

    def _lost_basis(self) -> None:
        log.warning(
            "the stored plan basis is no longer %s (another scheduler with other settings?); "
            "instants not written, the next pass plans again",
            self.basis[:12],
        )
        self._basis_stored = False

    async def next_notices_at(self) -> datetime | None:
        """The earliest instant after now that an open request is next owed a notice."""
        async with self._sessions() as session:
            return await session.scalar(
                select(func.min(Request.next_notice_at)).where(
                    Request.next_notice_at > self._clock.now(), Request.closed_at.is_(None)
                )
            )

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
        return (await self.run_requests([request_id])).get(request_id)

    async def run_requests(self, request_ids: Sequence[int]) -> dict[int, datetime]:
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
            planned.update(await self.run_requests([request_id]))
        return planned

    async def _run_batch(self, request_ids: Sequence[int]) -> dict[int, datetime]:
        now = self._clock.now()
        today = self._calendar.local_date(now)
        until = self._calendar.local_date(now + _HORIZON)
        quiet = self.policy.is_quiet(today, self._calendar)
        later = self._utc_instant(until)
        async with self._sessions.begin() as session:
            requests = [
                request
                for request in await session.scalars(
                    select(Request).where(Request.id.in_(request_ids)).order_by(Request.id)
                )
                if _runs(request)
            ]
            if not requests:
                return {}
            ids = [request.id for request in requests]
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
                    ScheduledNotice.request_id.in_(ids)
                )
            ):
                if notice_request is not None:
                    recorded.setdefault(notice_request, set()).add(key)
            owed_by_days: dict[tuple[date, date], list[Milestone]] = {}
            work: list[tuple[Request, _Owed]] = []
            waking: list[tuple[int, int, datetime]] = []
            for request in requests:
                assert request.clock_started_at is not None  # _runs
                assert request.due_at is not None
                days = (
                    self._calendar.local_date(request.clock_started_at),
                    self._calendar.local_date(request.due_at),
                )
                owed = owed_by_days.get(days)
                if owed is None:
                    owed = milestones(
                        request.clock_started_at, request.due_at, self._calendar, self.policy, until
                    )
                    owed_by_days[days] = owed
                keys = recorded.get(request.id, set())
                changed = _Change.of(request)
                pending = [
                    m
                    for m in owed
                    if _key(request.reference, m, changed) not in keys
                    and _owed_since(self.policy.instant(m.day, self._calendar), changed)
                ]
                ready = [m for m in pending if self._ready(m, now, quiet)]
                work.extend((request, item) for item in self._decide(ready, request, now, today))
                waiting = [m for m in pending if m not in ready]
                at = self._next_wake(waiting, now, today) or later
                waking.append((request.id, request.version, at))
            claimed = await _claim_many(session, [(request, item) for request, item in work], now)
            # Every audit event of the batch goes in one flush, so the chain is locked once.
            with session.no_autoflush:
                for request, item in work:
                    if _key(request.reference, item.milestone, _Change.of(request)) in claimed:
                        subject = subjects[request.subject_id]
                        await self._record(session, request, subject, item, now)
            await session.flush()
            written = await set_next_notices(session, waking, self.basis)
        if not written:
            self._lost_basis()
            return {}
        return {request_id: at for request_id, _, at in waking}

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
            elif milestone.series == PERSON_SERIES and request.due_at < now:
                # "We will answer on time" must not reach anyone after the deadline.
                reason = "the deadline has passed"
            elif (
                milestone.series == PERSON_SERIES
                and request.verified_at is not None
                and self.policy.instant(milestone.day, self._calendar) <= request.verified_at
            ):
                # Meant for before the person was verified: that notice told them the
                # deadline already, so this one would only repeat it.
                reason = "the person was told at verification"
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
        """The audit event and outbox row of one notice, whose key the caller has claimed."""
        milestone = item.milestone
        key = _key(request.reference, milestone, _Change.of(request))
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
            template=template,
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
                await session.execute(
                    select(
                        Request.reference,
                        Request.kind,
                        Request.status,
                        Request.due_at,
                        Request.verified_at,
                    )
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
            lists = {
                "new": new,
                "due_week": due_week,
                "overdue": overdue,
                "waiting": waiting,
                "unconfirmed": unconfirmed,
            }
            counts = {f"{name}_count": len(lines) for name, lines in lists.items()}
            # The audit log's length and head, shown to staff outside the database.
            head = await chain_head(session)
            audit = {"audit_events": head.events, "audit_head": head.head[:AUDIT_HEAD_SHOWN]}
            await enqueue(
                session,
                self._vault,
                now,
                key=key,
                channel=Channel.TELEGRAM,
                audience=Audience.STAFF_GROUP,
                template="staff_digest",
                language="en",
                params=_digest_params({"day": today.isoformat(), **counts, **audit}, lists),
            )
        log.info("digest for %s posted", today.isoformat())
        # The same head goes into the checkpoint file, so the two can be compared.
        await self.checkpoint(head)
        return True

    async def checkpoint(self, head: ChainHead | None = None) -> bool:
        """Append the audit chain's length and head to the checkpoint file, once a local day,
        from the digest hour on (quiet days too); ``head`` as read by the digest, if given.

        The file (``DSR_AUDIT_CHECKPOINT_FILE``) is outside the database, so a log cut
        short or rewritten after a checkpoint no longer holds it (``aina-dsr audit verify``).
        """
        path = self._checkpoint_file
        if path is None:
            return False
        now = self._clock.now()
        today = self._calendar.local_date(now)
        if self._checkpointed == today or now < self.policy.instant(today, self._calendar):
            return False
        try:
            last = await asyncio.to_thread(last_checkpoint, path)
            if last is not None and self._calendar.local_date(last.at) >= today:
                self._checkpointed = today
                return False
            if head is None:
                async with self._sessions() as session:
                    head = await chain_head(session)
            checkpoint = Checkpoint(now.astimezone(UTC), head.events, head.head, head.head_id)
            await asyncio.to_thread(append_checkpoint, path, checkpoint)
        except (OSError, CheckpointError) as exc:
            if self._checkpoint_failed != today:
                self._checkpoint_failed = today
                log.error("audit checkpoint not written to %s: %s", path, exc)
            return False
        self._checkpointed = today
        log.info("audit checkpoint: %d event(s), head %s", head.events, head.head[:16])
        return True

    def _previous_digest(self, today: date) -> datetime:
        day = today - timedelta(days=1)
        for _ in range(400):
            if not self.policy.is_quiet(day, self._calendar):
                break
            day -= timedelta(days=1)
        return self.policy.instant(day, self._calendar)

    def _digest_line(self, request: Any) -> str:
        due = self._calendar.local_date(request.due_at).isoformat() if request.due_at else "—"
        return f"{request.reference} · {request.kind} · {due}"

    # -- internals -----------------------------------------------------------

    async def _due_requests(self, now: datetime) -> AsyncIterator[list[_DueRow]]:
        """The running requests due by ``now`` or unplanned, in id order, a batch at a time,
        each with its version and the notice keys recorded for it.

        Read ``_BATCH`` requests at a time (two queries a batch), so memory stays
        flat however many are due.
        """
        batch = _BATCH
        last_id = 0
        for _ in range(_MAX_BATCHES):
            async with self._sessions() as session:
                rows = (
                    await session.execute(
                        select(
                            Request.id,
                            Request.version,
                            Request.reference,
                            Request.clock_started_at,
                            Request.due_at,
                            Request.kind_changes,
                            Request.kind_changed_at,
                        )
                        .where(
                            Request.id > last_id,
                            or_(Request.next_notice_at.is_(None), Request.next_notice_at <= now),
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
                        ScheduledNotice.request_id.in_([row.id for row in rows])
                    )
                )
                for notice_request, key in notices:
                    if notice_request is not None:
                        recorded.setdefault(notice_request, set()).add(key)
            found = []
            for request_id, version, reference, started_at, due_at, changes, changed_at in rows:
                assert started_at is not None  # the query asks for both
                assert due_at is not None
                found.append(
                    _DueRow(
                        request_id,
                        version,
                        reference,
                        started_at,
                        due_at,
                        recorded.get(request_id, set()),
                        _Change.from_columns(changes, changed_at),
                    )
                )
            yield found
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


def _runs(request: Request) -> bool:
    """Whether a request's clock runs and someone can act on it: open and verified."""
    return (
        request.closed_at is None
        and Status(request.status) not in CLOSED
        and request.verified_at is not None
        and request.clock_started_at is not None
        and request.due_at is not None
    )


@dataclass(frozen=True)
class _Change:
    """Staff's last change of a request's kind: which one (1, 2, ...) and when."""

    number: int
    at: datetime

    @classmethod
    def from_columns(cls, number: int | None, at: datetime | None) -> _Change | None:
        return cls(number, at) if number and at is not None else None

    @classmethod
    def of(cls, request: Request) -> _Change | None:
        return cls.from_columns(request.kind_changes, request.kind_changed_at)


class _DueRow(NamedTuple):
    """A running request a pass reads: what its notices are computed and keyed from."""

    id: int
    version: int
    reference: str
    started_at: datetime
    due_at: datetime
    recorded: set[str]
    changed: _Change | None


def _key(reference: str, milestone: Milestone, changed: _Change | None = None) -> str:
    """A notice's idempotency key; one of a clock set by a change of kind is keyed by it."""
    if changed is None:
        return f"{reference}/{milestone.name}"
    return f"{reference}/k{changed.number}/{milestone.name}"


def _owed_since(at: datetime, changed: _Change | None) -> bool:
    """Whether a notice meant for instant ``at`` is owed: after the last change of kind,
    if any (before it, another clock ran, with notices of its own)."""
    return changed is None or at > changed.at


def _listing(name: str, lines: list[str], limit: int | None = None) -> str:
    if not lines:
        return "—"
    shown = [f"• {line}" for line in lines[:limit]]
    if limit is not None and len(lines) > limit:
        # The list's heading gives the count; this line says how many are left out and
        # where they are, in words that need no translation.
        shown.append(f"• … +{len(lines) - limit} · {_DIGEST_MORE[name]}")
    return "\n".join(shown)


def _digest_params(params: dict[str, Any], lists: Mapping[str, list[str]]) -> dict[str, Any]:
    """The digest's params with each list in full while the digest fits one Telegram
    message in every staff language, else with its most urgent lines (the earliest
    deadlines, ``_DIGEST_LINES``) and a pointer to the rest.

    Measured on the text as rendered, so a longer heading in a translation cannot
    push it over Telegram's limit.
    """
    for limit in (None, *_DIGEST_LINES):
        full = {**params, **{name: _listing(name, lines, limit) for name, lines in lists.items()}}
        if all(_fits_telegram(full, language) for language in LANGUAGES):
            return full
    return full  # not reached: with no lines, a digest is a few hundred characters


def _fits_telegram(params: Mapping[str, Any], language: str) -> bool:
    text = render_notification("staff_digest", language, params, escape=html.escape).text
    return len(text.encode("utf-16-le")) // 2 <= TELEGRAM_MESSAGE_LIMIT


async def _claim_many(
    session: AsyncSession, work: Sequence[tuple[Request, _Owed]], now: datetime
) -> set[str]:
    """Record these notices under their keys; return the keys recorded now (not before).

    On PostgreSQL a second scheduler inserting the same keys waits for the
    first one's transaction and then inserts none of them.
    """
    rows = [
        {
            "key": _key(request.reference, item.milestone, _Change.of(request)),
            "request_id": request.id,
            "milestone": item.milestone.name,
            "meant_for": item.milestone.day,
            "outcome": SKIPPED if item.skip_reason is not None else SENT,
            "late": item.late,
            "recorded_at": now,
        }
        for request, item in work
    ]
    claimed: set[str] = set()
    for start in range(0, len(rows), _CLAIM_CHUNK):
        statement = (
            upsert(session, ScheduledNotice)
            .values(rows[start : start + _CLAIM_CHUNK])
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(ScheduledNotice.key)
        )
        claimed.update(await session.scalars(statement))
    return claimed


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
    statement = (
        upsert(session, ScheduledNotice)
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
