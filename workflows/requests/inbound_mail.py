"""The desk's record of each letter the mail channel read: one ``inbound_mail`` row, once.

A row is keyed by the letter's ``mail_key`` (a hash of its Message-ID, or of
its content), so a letter seen twice is recorded once: a second insert of the
same key fails, and the caller learns the letter was known already. A letter
the desk did not act on keeps its raw bytes, encrypted, for staff. What the
row makes the desk say (notices to staff, notes to the writer) is queued in
the row's own transaction. The rows are also what the hourly caps count (see
:mod:`workflows.requests.mail_caps`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.outbox.queue import NewMessage, enqueue_many
from workflows.persistence.tables import InboundMail
from workflows.privacy.vault import Vault
from workflows.requests.mail_caps import Cap, Caps, Ledger, read_ledger, told_already
from workflows.requests.queries import message_references


@dataclass(frozen=True)
class InboundRecord:
    """What became of one letter, as the mail channel tells it."""

    mail_key: str
    folder: str
    uidvalidity: int
    uid: int
    outcome: str
    reason: str | None = None
    request_id: int | None = None
    sender_index: str | None = None  # the blind index of the sender's mailbox (the caps')
    answered_unverified: bool = False  # answered at an address nobody has verified
    raw: bytes | None = None  # kept for staff, stored encrypted; ``None``: not kept


@dataclass(frozen=True)
class BatchLookup:
    """What the desk knows of a batch's letters before it plans them."""

    known: set[str]  # the mail keys recorded already
    ledger: Ledger  # the hour's counts of their senders (see workflows.requests.mail_caps)
    requests: dict[str, tuple[str, int]]  # Message-ID -> (reference, request id) of requests


# The notices a record makes the desk send: given the record's place in its batch and its row id.
Notices = Callable[[int, int], Sequence[NewMessage]]


class InboundMailLog:
    """The ``inbound_mail`` rows: which letters are known, the caps' counts, new records."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], vault: Vault, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock

    async def outcome_of(self, mail_key: str) -> str | None:
        """The recorded outcome of the letter with this key; ``None``: not seen yet."""
        async with self._sessions() as session:
            outcome = await session.scalar(
                select(InboundMail.outcome).where(InboundMail.mail_key == mail_key)
            )
            return outcome

    async def look_up(
        self,
        mail_keys: Iterable[str],
        caps: Caps,
        senders: tuple[Iterable[str], Iterable[str]],
        message_ids: Iterable[str],
    ) -> BatchLookup:
        """What the desk knows of a batch of letters (:class:`BatchLookup`), in one session.

        ``senders``: the blind indexes of the senders' mailboxes and addresses;
        ``message_ids``: the Message-IDs the letters are or answer.
        """
        wanted = sorted(set(mail_keys))
        known: set[str] = set()
        async with self._sessions() as session:
            if wanted:
                found = select(InboundMail.mail_key).where(InboundMail.mail_key.in_(wanted))
                known = set(await session.scalars(found))
            ledger = await read_ledger(session, caps, self._clock.now(), *senders)
            return BatchLookup(known, ledger, await message_references(session, message_ids))

    async def told_already(self, cap: Cap, mailbox: str | None) -> bool:
        """Whether staff heard this hour of a letter ``cap`` held back (from ``mailbox``)."""
        async with self._sessions() as session:
            return await told_already(session, cap, mailbox, self._clock.now())

    async def record(self, record: InboundRecord, notices: Notices) -> bool:
        """One record and its notices in a transaction of their own; ``False``: known already."""
        try:
            async with self._sessions.begin() as session:
                await self.write(session, [record], notices)
        except IntegrityError:
            return False
        return True

    async def record_all(self, records: Sequence[InboundRecord], notices: Notices) -> None:
        """Records and their notices in one transaction; a key known already fails them all."""
        async with self._sessions.begin() as session:
            await self.write(session, records, notices)

    async def write(
        self, session: AsyncSession, records: Sequence[InboundRecord], notices: Notices
    ) -> None:
        """Records and their notices inside the caller's transaction (with new requests)."""
        if not records:
            return
        now = self._clock.now()
        rows = [self._row(record, now) for record in records]
        # Rows as parameters, not one VALUES clause: the statement is compiled once, not per batch.
        statement = insert(InboundMail).returning(InboundMail.id, InboundMail.mail_key)
        made = await session.execute(statement.execution_options(render_nulls=True), rows)
        ids = {key: row_id for row_id, key in made.all()}  # the staff notices name the rows
        queued = [
            notice
            for place, record in enumerate(records)
            for notice in notices(place, ids[record.mail_key])
        ]
        await enqueue_many(session, self._vault, now, queued)

    def _row(self, record: InboundRecord, now: datetime) -> dict[str, Any]:
        return {
            "mail_key": record.mail_key,
            "folder": record.folder[:255],
            "uidvalidity": record.uidvalidity,
            "uid": record.uid,
            "outcome": record.outcome,
            "reason": (record.reason or "")[:500] or None,
            "request_id": record.request_id,
            "sender_index": record.sender_index,
            "answered_unverified": record.answered_unverified,
            "raw_enc": self._vault.encrypt_bytes(record.raw) if record.raw is not None else None,
            "received_at": now,
            "processed_at": now,
        }
