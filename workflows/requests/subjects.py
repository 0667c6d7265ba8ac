"""The people behind requests: found by Telegram account or e-mail address, made on first use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.persistence.tables import DataSubject
from workflows.privacy.vault import Vault

# Built once (a statement built anew costs more than running it: BENCHMARKS.md section 6).
_BY_TELEGRAM_USER = select(DataSubject).where(
    DataSubject.telegram_user_id == bindparam("telegram_user_id")
)


async def telegram_subject(
    session: AsyncSession, telegram_user_id: int, language: str, now: datetime
) -> DataSubject:
    """The person behind a Telegram account, who writes to the bot in ``language`` now."""
    subject = await session.scalar(_BY_TELEGRAM_USER, {"telegram_user_id": telegram_user_id})
    if subject is None:
        subject = DataSubject(
            telegram_user_id=telegram_user_id,
            telegram_unreachable=False,
            language=language,
            created_at=now,
        )
        session.add(subject)
        await session.flush()
    subject.language = language
    if subject.telegram_unreachable:
        subject.telegram_unreachable = False  # they are writing to the bot right now
    return subject


async def email_subjects(
    session: AsyncSession,
    vault: Vault,
    emails: Sequence[str],
    languages: Sequence[str],
    now: datetime,
) -> list[DataSubject]:
    """The people behind e-mail senders (normalised addresses), in order: one query, one INSERT.

    A new person's address is only proven by the code; until then it is where we answer.
    """
    indexes = [vault.blind_index("email", email) for email in emails]
    wanted = DataSubject.email_index.in_({i for i in indexes if i is not None})
    found: dict[str | None, DataSubject] = {}
    for row in await session.scalars(select(DataSubject).where(wanted).order_by(DataSubject.id)):
        found.setdefault(row.email_index, row)
    new: dict[str | None, dict[str, Any]] = {}
    for email, index, language in zip(emails, indexes, languages, strict=True):
        if index not in found and index not in new:
            new[index] = {
                "telegram_user_id": None,
                "telegram_unreachable": False,
                "language": language,
                "created_at": now,
                "email_enc": vault.encrypt(email),
                "email_index": index,
            }
    if new:
        made = await session.scalars(insert(DataSubject).returning(DataSubject), list(new.values()))
        found.update({row.email_index: row for row in made})
    subjects = [found[index] for index in indexes]
    for subject, language in zip(subjects, languages, strict=True):
        subject.language = language
    return subjects
