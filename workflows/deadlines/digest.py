"""The staff digest: once a working day, the open queue in one Telegram message, and the
audit chain's head beside it in the checkpoint file.

From the digest hour on, the first pass of the day posts the digest to the
staff group (claimed under ``digest/<day>``, so once however many schedulers
run): what is new since the last digest, due this week, overdue, waiting for
the person and waiting for staff's documents, with the audit log's length and
head. A list too long for one message shows its most urgent lines and the
command that lists the rest. The same head then goes into the checkpoint file
(``DSR_AUDIT_CHECKPOINT_FILE``), so the two can be compared.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.claims import DIGEST, SENT, claim
from workflows.deadlines.milestones import ReminderPolicy
from workflows.i18n import LANGUAGES, render_notification
from workflows.outbox.queue import Audience, Channel, enqueue
from workflows.persistence.tables import Request
from workflows.privacy.audit import ChainHead, chain_head
from workflows.privacy.audit_checkpoint import (
    Checkpoint,
    CheckpointError,
    append_checkpoint,
    last_checkpoint,
)
from workflows.privacy.vault import Vault
from workflows.requests.states import CLOSED, Status

log = logging.getLogger(__name__)

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


class StaffDigest:
    """Posts the day's digest and writes the day's audit checkpoint; see the module docstring."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        calendar: WorkingCalendar,
        policy: ReminderPolicy,
        *,
        checkpoint_file: Path | None = None,
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._calendar = calendar
        self._policy = policy
        self._checkpoint_file = checkpoint_file
        # The local day of the newest checkpoint known to be in the file, and of the last
        # failure to write one (logged once a day, not on every pass).
        self._checkpointed: date | None = None
        self._checkpoint_failed: date | None = None

    def next_at(self) -> datetime:
        """The next digest instant after now (working days only, when days are quiet)."""
        now = self._clock.now()
        day = self._calendar.local_date(now)
        for _ in range(400):
            at = self._policy.instant(day, self._calendar)
            if at > now and not self._policy.is_quiet(day, self._calendar):
                return at
            day += timedelta(days=1)
        raise ValueError("no working day within a year")  # pragma: no cover

    async def post(self) -> bool:
        """Post today's digest to the staff group once, from its hour on; never on a quiet day.

        A digest missed on an earlier day is not sent: it would describe a
        queue that has moved on, and today's says what is true now.
        """
        now = self._clock.now()
        today = self._calendar.local_date(now)
        if self._policy.is_quiet(today, self._calendar):
            return False
        if now < self._policy.instant(today, self._calendar):
            return False
        key = f"{DIGEST}/{today.isoformat()}"
        async with self._sessions.begin() as session:
            if not await claim(session, key, None, None, SENT, False, now, day=today):
                return False
            lists = await self._lists(session, today, now)
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

    async def _lists(
        self, session: AsyncSession, today: date, now: datetime
    ) -> dict[str, list[str]]:
        """The digest's lists of open, verified requests, earliest deadline first."""
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
        return {
            "new": new,
            "due_week": due_week,
            "overdue": overdue,
            "waiting": waiting,
            "unconfirmed": unconfirmed,
        }

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
        if self._checkpointed == today or now < self._policy.instant(today, self._calendar):
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
            if not self._policy.is_quiet(day, self._calendar):
                break
            day -= timedelta(days=1)
        return self._policy.instant(day, self._calendar)

    def _digest_line(self, request: Any) -> str:
        due = self._calendar.local_date(request.due_at).isoformat() if request.due_at else "—"
        return f"{request.reference} · {request.kind} · {due}"


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
