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

from sqlalchemy import bindparam, or_, select
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
    if subject.phone_index is None and subject.email_index is None:
        return None
    return await session.scalar(_BY_IDENTIFIERS, _identifiers(subject))


async def _erased_by_earlier_request(session: AsyncSession, subject: DataSubject) -> int | None:
    if subject.id is None and subject.phone_index is None and subject.email_index is None:
        return None
    return await session.scalar(_ERASED_BY_EARLIER_REQUEST, _identifiers(subject))


def _identifiers(subject: DataSubject) -> dict[str, object]:
    # What the subject does not have is NULL, which equals nothing.
    return {
        "subject_id": subject.id,
        "phone_index": subject.phone_index,
        "email_index": subject.email_index,
    }


# Built once, the values given as parameters: building a statement anew costs more than
# running it (BENCHMARKS.md section 6, fifth session); every verified request runs them.
_BY_IDENTIFIERS = (
    select(Customer.id)
    .where(
        or_(
            Customer.phone_index == bindparam("phone_index"),
            Customer.email_index == bindparam("email_index"),
        )
    )
    .order_by(Customer.id)
    .limit(1)
)
_ERASED_BY_EARLIER_REQUEST = (
    select(Customer.id)
    .join(Request, Request.customer_id == Customer.id)
    .join(DataSubject, DataSubject.id == Request.subject_id)
    .where(
        or_(
            Request.subject_id == bindparam("subject_id"),
            DataSubject.phone_index == bindparam("phone_index"),
            DataSubject.email_index == bindparam("email_index"),
        ),
        Customer.erased_at.is_not(None),
    )
    .order_by(Customer.id)
    .limit(1)
)
