"""The deadline workflow's pass, read from the database each time it runs.

:class:`Reminders` looks at the requests as they are now and sends what is due
and not yet recorded: it expires the requests never verified, hands the ones
owed a notice to :mod:`workflows.deadlines.notices` (a batch to a transaction),
posts the staff digest and writes the audit checkpoint
(:mod:`workflows.deadlines.digest`). Each notice is claimed once under its key
(:mod:`workflows.deadlines.claims`), so a second scheduler, a retried job or a
restart sends nothing twice.

Each request's next notice instant is kept on its row (:mod:`workflows.deadlines.notice_plan`),
so a pass reads only the requests that are due or were changed since they
were planned; and when the settings, calendar or kinds they were planned from
are not the ones this process runs with, its first pass plans every open
request again. The APScheduler side (:mod:`workflows.deadlines.scheduler`) only decides
when to call it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.claims import KindChange, notice_key, owed_since
from workflows.deadlines.digest import StaffDigest
from workflows.deadlines.milestones import Milestone, ReminderPolicy, milestones
from workflows.deadlines.notice_plan import BasisChanged, adopt_basis, plan_basis, set_next_notices
from workflows.deadlines.notices import HORIZON, RequestNotices, utc_instant
from workflows.errors import ConcurrentChange, IllegalTransition, RequestNotFound
from workflows.persistence.tables import Request, ScheduledNotice
from workflows.privacy.audit import ChainHead
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.requests.states import CLOSED, Status
from workflows.requests.verification import verification_cutoff

log = logging.getLogger(__name__)

# The reconcile reads the open queue this many requests at a time (bounded: 10 million).
READ_BATCH = 2000
_MAX_BATCHES = 5000
# Requests owed something now are dealt with this many to a transaction.
_NOTICE_BATCH = 200


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


class Reminders:
    """Sends what the requests in the database are owed now; see the module docstring.

    ``read_batch`` is how many requests a pass reads at a time.
    """

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
        read_batch: int = READ_BATCH,
    ) -> None:
        self._service = service
        self._sessions = sessions
        self._clock = clock
        self._calendar = calendar
        self.policy = policy or ReminderPolicy()
        self._verification_days = verification_days
        self.read_batch = read_batch
        # What every instant this process writes is computed from; fixed for its life.
        self.basis = plan_basis(self.policy, calendar, service.kinds, HORIZON)
        # Whether the database holds ``basis``: read on the first pass, then known here,
        # as nothing but a scheduler writes it (see :meth:`recheck_basis`).
        self._basis_stored = False
        self._notices = RequestNotices(
            sessions,
            vault,
            clock,
            calendar,
            self.policy,
            basis=self.basis,
            lost_basis=self._lost_basis,
        )
        self._digest = StaffDigest(
            sessions, vault, clock, calendar, self.policy, checkpoint_file=audit_checkpoint_file
        )

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
        until = self._calendar.local_date(now + HORIZON)
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
                    if notice_key(reference, m, changed) not in recorded and owed_since(at, changed)
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

    # -- one request, the digest ----------------------------------------------

    async def run_request(self, request_id: int) -> datetime | None:
        """Send what one request is owed now; return when it is owed something next."""
        return (await self.run_requests([request_id])).get(request_id)

    async def run_requests(self, request_ids: Sequence[int]) -> dict[int, datetime]:
        """Send what these requests are owed now (:meth:`RequestNotices.run`); return when
        each is owed something next."""
        return await self._notices.run(request_ids)

    def next_digest_at(self) -> datetime:
        """The next digest instant after now (working days only, when days are quiet)."""
        return self._digest.next_at()

    async def digest(self) -> bool:
        """Post today's digest to the staff group once, from its hour on (:class:`StaffDigest`)."""
        return await self._digest.post()

    async def checkpoint(self, head: ChainHead | None = None) -> bool:
        """Append the audit chain's head to the checkpoint file once a local day
        (:meth:`StaffDigest.checkpoint`)."""
        return await self._digest.checkpoint(head)

    # -- internals -----------------------------------------------------------

    def _utc_instant(self, day: date) -> datetime:
        return utc_instant(self.policy, self._calendar, day)

    async def _due_requests(self, now: datetime) -> AsyncIterator[list[_DueRow]]:
        """The running requests due by ``now`` or unplanned, in id order, a batch at a time,
        each with its version and the notice keys recorded for it.

        Read ``read_batch`` requests at a time (two queries a batch), so memory stays
        flat however many are due.
        """
        batch = self.read_batch
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
                        KindChange.from_columns(changes, changed_at),
                    )
                )
            yield found
            last_id = rows[-1].id


class _DueRow(NamedTuple):
    """A running request a pass reads: what its notices are computed and keyed from."""

    id: int
    version: int
    reference: str
    started_at: datetime
    due_at: datetime
    recorded: set[str]
    changed: KindChange | None
