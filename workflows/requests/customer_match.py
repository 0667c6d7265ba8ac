"""Which customer a verified request is about, even after the person's account was deleted.

The directory is searched by the blind indexes of the phone and e-mail the
person proved. Deleting an account clears those indexes but keeps the
customer row with the purchase history the law makes the company keep, and
every request keeps the customer it matched (retention keeps that link for
good). So when no index matches, the customer an earlier request of the same
person matched, and whose identifiers were since erased, is the match: an
access request after a deletion still shows the history that was kept. The
same person is the same subject (Telegram account, e-mail sender), or one
with the same proven phone or e-mail.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.persistence.tables import Customer, DataSubject, Request


async def match_customer(session: AsyncSession, subject: DataSubject) -> int | None:
    """The id of the customer a request of ``subject`` (just verified) is about, if any."""
    # The directory does not depend on what this transaction has pending: no flush first,
    # so the request's changes go out in one UPDATE with the ones that follow.
    with session.no_autoflush:
        by_index = await _by_identifiers(session, subject)
        if by_index is not None:
            return by_index
        return await _erased_by_earlier_request(session, subject)


async def _by_identifiers(session: AsyncSession, subject: DataSubject) -> int | None:
    conditions = []
    if subject.phone_index is not None:
        conditions.append(Customer.phone_index == subject.phone_index)
    if subject.email_index is not None:
        conditions.append(Customer.email_index == subject.email_index)
    if not conditions:
        return None
    return await session.scalar(
        select(Customer.id).where(or_(*conditions)).order_by(Customer.id).limit(1)
    )


async def _erased_by_earlier_request(session: AsyncSession, subject: DataSubject) -> int | None:
    same_person: list[ColumnElement[bool]] = []
    if subject.id is not None:
        same_person.append(Request.subject_id == subject.id)
    if subject.phone_index is not None:
        same_person.append(DataSubject.phone_index == subject.phone_index)
    if subject.email_index is not None:
        same_person.append(DataSubject.email_index == subject.email_index)
    if not same_person:
        return None
    return await session.scalar(
        select(Customer.id)
        .join(Request, Request.customer_id == Customer.id)
        .join(DataSubject, DataSubject.id == Request.subject_id)
        .where(or_(*same_person), Customer.erased_at.is_not(None))
        .order_by(Customer.id)
        .limit(1)
    )
