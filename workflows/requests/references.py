"""Human references, ``DSR-YYYY-NNNNNN``, unique however many are made at once."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.persistence.tables import ReferenceCounter
from workflows.persistence.upsert import upsert

REFERENCE_PATTERN = re.compile(r"\bDSR-(\d{4})-(\d{6})\b", re.IGNORECASE)


def _insert(session: AsyncSession) -> Any:
    return upsert(session, ReferenceCounter)


async def next_reference(session: AsyncSession, year: int) -> str:
    """Take the next number of ``year`` in the caller's transaction.

    The counter row is bumped with one ``UPDATE … RETURNING`` (the year's
    first number also inserts the row): the database's
    row lock (PostgreSQL) or write lock (SQLite) serialises concurrent callers,
    so two requests never share a number and a rolled-back one frees nothing
    that another has already taken.
    """
    (reference,) = await next_references(session, year, 1)
    return reference


# Built once (building a statement anew costs more than running it: BENCHMARKS.md 6).
_BUMP = (
    update(ReferenceCounter)
    .where(ReferenceCounter.year == bindparam("counter_year"))
    .values(last=ReferenceCounter.last + bindparam("count"))
    .returning(ReferenceCounter.last)
)


async def next_references(session: AsyncSession, year: int, count: int) -> list[str]:
    """``count`` consecutive numbers of ``year`` in the caller's transaction, in one
    statement once the year has its counter (see :func:`next_reference`)."""
    if count <= 0:
        return []
    bump = {"counter_year": year, "count": count}
    last = await session.scalar(_BUMP, bump)
    if last is None:
        await session.execute(
            _insert(session)
            .values(year=year, last=0)
            .on_conflict_do_nothing(index_elements=["year"])
        )
        last = await session.scalar(_BUMP, bump)
    assert last is not None
    return [f"DSR-{year}-{number:06d}" for number in range(last - count + 1, last + 1)]


def find_reference(text: str) -> str | None:
    """The first reference written in ``text`` (a subject line, a message), upper-cased."""
    match = REFERENCE_PATTERN.search(text)
    return f"DSR-{match.group(1)}-{match.group(2)}" if match else None
