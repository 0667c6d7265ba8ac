"""What an operator watches: figures read from the database, and this process's tallies.

The figures (requests by kind and status, overdue requests, the outbox backlog,
where the mail cursor stands) are a handful of aggregate queries, read when
Prometheus scrapes. The tallies (Telegram errors, deliveries, the last IMAP
poll, the rounds of the outbox and mailbox loops) are events that leave no row
behind, so each process counts its own; the channels report them through the
small functions at the bottom.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.persistence.tables import MailCursor, OutboxItem, Request
from workflows.requests.states import CLOSED

# The outbox's statuses (workflows.outbox.dispatcher imports this module to count its deliveries).
_WAITING = ("pending", "sending")
_FAILED = "failed"
_CLOSED = sorted(status.value for status in CLOSED)


@dataclass(frozen=True)
class DeskFigures:
    """The desk's state as the database has it, at ``at``."""

    at: datetime
    # (kind, status) -> number of requests
    requests: dict[tuple[str, str], int]
    overdue: int
    # channel -> rows waiting to be delivered (pending or being sent)
    outbox_backlog: dict[str, int]
    # channel -> seconds since the oldest waiting row was written
    outbox_oldest_age: dict[str, float]
    # channel -> rows that failed for good
    outbox_failed: dict[str, int]
    # folder -> seconds since the poller last moved its cursor
    mail_cursor_age: dict[str, float]


async def read_figures(sessions: async_sessionmaker[AsyncSession], now: datetime) -> DeskFigures:
    """Read the figures with one aggregate query per table (no row is loaded)."""
    async with sessions() as session:
        by_kind = await session.execute(
            select(Request.kind, Request.status, func.count()).group_by(
                Request.kind, Request.status
            )
        )
        overdue = await session.scalar(
            select(func.count())
            .select_from(Request)
            .where(
                Request.closed_at.is_(None),
                Request.status.not_in(_CLOSED),
                Request.due_at < now,
            )
        )
        outbox = await session.execute(
            select(
                OutboxItem.channel, OutboxItem.status, func.count(), func.min(OutboxItem.created_at)
            )
            .where(OutboxItem.status.in_([*_WAITING, _FAILED]))
            .group_by(OutboxItem.channel, OutboxItem.status)
        )
        cursors = await session.execute(select(MailCursor.folder, MailCursor.updated_at))
        backlog: Counter[str] = Counter()
        failed: dict[str, int] = {}
        oldest: dict[str, datetime] = {}
        for channel, status, count, first in outbox.all():
            if status == _FAILED:
                failed[channel] = int(count)
                continue
            backlog[channel] += int(count)
            since = _aware(first)
            if since is not None and (channel not in oldest or since < oldest[channel]):
                oldest[channel] = since
        return DeskFigures(
            at=now,
            requests={(kind, status): int(count) for kind, status, count in by_kind.all()},
            overdue=int(overdue or 0),
            outbox_backlog=dict(backlog),
            outbox_oldest_age={
                channel: max(0.0, (now - first).total_seconds())
                for channel, first in oldest.items()
            },
            outbox_failed=failed,
            mail_cursor_age={
                folder: max(0.0, (now - updated).total_seconds())
                for folder, updated in ((f, _aware(u)) for f, u in cursors.all())
                if updated is not None
            },
        )


def _aware(value: datetime | None) -> datetime | None:
    # An aggregate (MIN) skips the column type, so SQLite gives a naive UTC datetime back.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass
class Tally:
    """Events of this process that leave no row behind; read by the metrics endpoint."""

    telegram_errors: Counter[str] = field(default_factory=Counter)
    # (channel, outcome): outcome is sent, retried, failed or unreachable
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)
    # folder -> when the poller last read it to the end
    imap_polled_at: dict[str, datetime] = field(default_factory=dict)
    # loop -> rounds begun and rounds ended (however they ended), e.g. "outbox email",
    # "imap INBOX": when every round a process had begun is over, nothing it was
    # doing then can still land (what the scale-out test waits on instead of a pause).
    rounds_started: Counter[str] = field(default_factory=Counter)
    rounds_finished: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.telegram_errors.clear()
        self.deliveries.clear()
        self.imap_polled_at.clear()
        self.rounds_started.clear()
        self.rounds_finished.clear()


# One per process, like the process's log handlers: the channels are built in many
# places and counting must not change how they are built.
TALLY = Tally()


def count_telegram_error(kind: str) -> None:
    """Telegram answered a send with an error of ``kind`` (flood_control, forbidden, ...)."""
    TALLY.telegram_errors[kind] += 1


def count_delivery(channel: str, outcome: str) -> None:
    """The outbox handed a message to ``channel`` and it ended as ``outcome``."""
    TALLY.deliveries[(channel, outcome)] += 1


def mark_imap_polled(folder: str, at: datetime) -> None:
    """The poller read ``folder`` to its end at ``at``."""
    TALLY.imap_polled_at[folder] = at


@contextmanager
def counted_round(loop: str) -> Iterator[None]:
    """One round of ``loop`` (an outbox dispatch, a mailbox poll): begun, then ended."""
    TALLY.rounds_started[loop] += 1
    try:
        yield
    finally:
        TALLY.rounds_finished[loop] += 1
