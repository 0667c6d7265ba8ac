"""How much one person may ask of the desk at once, and the refusals when they ask for more.

The counts are read from the database (open requests, codes sent), so every
process of a scaled-out desk sees the same numbers and a restart forgets
nothing. The windows are measured on the injected clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.errors import DomainError
from workflows.persistence.tables import Request, Verification
from workflows.requests.states import OPEN

CODE_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Limits:
    """The per-person limits the request service enforces."""

    # Requests one Telegram user may have open at the same time.
    max_open_requests: int = 5
    # Confirmation codes mailed for one person within an hour, over all their requests.
    codes_per_hour: int = 3


class TooManyOpen(DomainError):
    """The person has as many open requests as the desk takes at once."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} open requests at once")
        self.limit = limit


class TooManyCodes(DomainError):
    """Enough confirmation codes were mailed for this person within the hour."""

    def __init__(self, limit: int, retry_at: datetime, now: datetime) -> None:
        super().__init__(f"at most {limit} codes an hour")
        self.limit = limit
        self.retry_at = retry_at
        self.minutes = max(1, math.ceil((retry_at - now).total_seconds() / 60))


# Built once: a statement built anew costs more than running it (BENCHMARKS.md section 6).
_OPEN_OF_SUBJECT = select(func.count(Request.id)).where(
    Request.subject_id == bindparam("subject_id"),
    Request.status.in_([status.value for status in OPEN]),
)


async def ensure_can_open(session: AsyncSession, subject_id: int, limits: Limits) -> None:
    """Raise :class:`TooManyOpen` when the person already has ``max_open_requests`` open."""
    count = await session.scalar(_OPEN_OF_SUBJECT, {"subject_id": subject_id})
    if int(count or 0) >= limits.max_open_requests:
        raise TooManyOpen(limits.max_open_requests)


async def ensure_can_send_code(
    session: AsyncSession, subject_id: int, now: datetime, limits: Limits
) -> None:
    """Raise :class:`TooManyCodes` when the hour's codes for this person are used up."""
    since = now - CODE_WINDOW
    sent = list(
        await session.scalars(
            select(Verification.created_at)
            .join(Request, Request.id == Verification.request_id)
            .where(
                Request.subject_id == subject_id,
                Verification.method == "email_code",
                Verification.created_at > since,
            )
            .order_by(Verification.created_at)
        )
    )
    if len(sent) >= limits.codes_per_hour:
        # A slot frees when the oldest code that still counts leaves the window.
        oldest = sent[len(sent) - limits.codes_per_hour]
        raise TooManyCodes(limits.codes_per_hour, oldest + CODE_WINDOW, now)
