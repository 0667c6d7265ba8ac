"""What the e-mail intake may act on and answer within an hour: three caps, counted per batch.

A From address proves nothing: anyone can write "from" a stranger, under as
many spellings of the stranger's address as they like (``victim+1@``,
``Victim+2@`` ...), and every letter that opens a request mails that stranger
a confirmation code. So the caps count by *mailbox*
(:func:`workflows.identity.mailbox_of`), and:

- ``letters_per_sender``: letters acted on from one mailbox an hour (the
  per-sender cap of issue 7);
- ``acks_per_mailbox``: acknowledgements sent to one mailbox an hour through
  addresses nobody has verified (no request was ever confirmed with a code
  sent there);
- ``acks_in_total``: such acknowledgements an hour over all senders, so that a
  flood spread over many mailboxes is bounded too.

An address verified with a code is the person's own: its letters are counted
by the first cap only. The counts come from ``inbound_mail`` (its
``sender_index`` is the mailbox's blind index, ``answered_unverified`` marks
the letters that were acknowledged to an unverified address), so every process
and every restart sees the same numbers; a :class:`Ledger` holds them for one
batch, three queries in all, and counts the batch's own letters as it goes.

A letter a cap holds back gets the cap's outcome (:class:`Cap`), is kept raw,
and is not answered; the first one held back in the hour (per mailbox for the
two mailbox caps) tells staff.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.persistence.tables import InboundMail, Verification

WINDOW = timedelta(hours=1)
EMAIL_CODE = "email_code"  # VerificationMethod.EMAIL_CODE of the request service

DEFAULT_LETTERS_PER_SENDER = 20
DEFAULT_ACKS_PER_MAILBOX = 3
DEFAULT_ACKS_IN_TOTAL = 300


class Cap(StrEnum):
    """A cap, named by the outcome of the letters it holds back."""

    SENDER = "rate_limited"
    MAILBOX = "capped_mailbox"
    TOTAL = "capped_total"


@dataclass(frozen=True)
class Caps:
    """The three numbers (see the module docstring)."""

    letters_per_sender: int = DEFAULT_LETTERS_PER_SENDER
    acks_per_mailbox: int = DEFAULT_ACKS_PER_MAILBOX
    acks_in_total: int = DEFAULT_ACKS_IN_TOTAL

    def limit(self, cap: Cap) -> int:
        return {
            Cap.SENDER: self.letters_per_sender,
            Cap.MAILBOX: self.acks_per_mailbox,
            Cap.TOTAL: self.acks_in_total,
        }[cap]


@dataclass(frozen=True)
class Held:
    """A letter a cap held back; ``first``: the first this hour, so staff are told."""

    cap: Cap
    first: bool


@dataclass
class _Mailbox:
    acted: int = 0  # letters acted on (not held back) this hour
    acks: int = 0  # acknowledgements to unverified addresses of this mailbox this hour
    held: set[Cap] = field(default_factory=set)  # caps that held one of its letters back


class Ledger:
    """This hour's counts for one batch: the database's, plus the batch's letters so far."""

    def __init__(
        self,
        caps: Caps,
        mailboxes: dict[str, _Mailbox],
        acks: int,
        total_held: bool,
        verified: set[str],
    ) -> None:
        self.caps = caps
        self._mailboxes = mailboxes
        self._acks = acks
        self._total_held = total_held
        self._verified = verified

    def verified(self, address: str | None) -> bool:
        """Whether a request was ever confirmed with a code sent to this address (its index)."""
        return address is not None and address in self._verified

    def take_letter(self, mailbox: str) -> Held | None:
        """Count a letter from ``mailbox`` (its index) as acted on, or hold it back."""
        box = self._mailboxes.setdefault(mailbox, _Mailbox())
        if box.acted >= self.caps.letters_per_sender:
            return self._hold(box, Cap.SENDER)
        box.acted += 1
        return None

    def give_back_letter(self, mailbox: str) -> None:
        """A letter counted by :meth:`take_letter` was held back after all (by an answer cap)."""
        box = self._mailboxes.setdefault(mailbox, _Mailbox())
        box.acted = max(0, box.acted - 1)

    def take_answer(self, mailbox: str, address: str | None) -> Held | None:
        """Count an acknowledgement to ``address`` in ``mailbox`` (indexes), or hold it back.

        A verified address is never held back here and counts nothing.
        """
        if self.verified(address):
            return None
        box = self._mailboxes.setdefault(mailbox, _Mailbox())
        if box.acks >= self.caps.acks_per_mailbox:
            return self._hold(box, Cap.MAILBOX)
        if self._acks >= self.caps.acks_in_total:
            first, self._total_held = not self._total_held, True
            return Held(Cap.TOTAL, first)
        box.acks += 1
        self._acks += 1
        return None

    @staticmethod
    def _hold(box: _Mailbox, cap: Cap) -> Held:
        first = cap not in box.held
        box.held.add(cap)
        return Held(cap, first)


async def read_ledger(
    session: AsyncSession,
    caps: Caps,
    now: datetime,
    mailboxes: Iterable[str],
    addresses: Iterable[str],
) -> Ledger:
    """The hour's counts for these mailboxes and addresses (blind indexes): three queries."""
    since = now - WINDOW
    wanted = sorted(set(mailboxes))
    boxes: dict[str, _Mailbox] = {}
    if wanted:
        held = [cap.value for cap in Cap]
        rows = await session.execute(
            select(
                InboundMail.sender_index,
                func.count(InboundMail.id),
                _count(InboundMail.outcome.in_(held)),
                _count(InboundMail.answered_unverified.is_(True)),
                _count(InboundMail.outcome == Cap.SENDER.value),
                _count(InboundMail.outcome == Cap.MAILBOX.value),
            )
            .where(InboundMail.sender_index.in_(wanted), InboundMail.received_at > since)
            .group_by(InboundMail.sender_index)
        )
        for index, count, kept, acks, limited, capped in rows.all():
            box = _Mailbox(acted=int(count) - int(kept or 0), acks=int(acks or 0))
            box.held = {cap for cap, n in ((Cap.SENDER, limited), (Cap.MAILBOX, capped)) if n}
            boxes[str(index)] = box
    totals = await session.execute(
        select(
            _count(InboundMail.answered_unverified.is_(True)),
            _count(InboundMail.outcome == Cap.TOTAL.value),
        ).where(InboundMail.received_at > since)
    )
    acks, total_held = totals.one()
    return Ledger(
        caps,
        boxes,
        int(acks or 0),
        bool(total_held),
        await _verified(session, addresses),
    )


async def told_already(session: AsyncSession, cap: Cap, mailbox: str | None, now: datetime) -> bool:
    """Whether a letter held back by ``cap`` this hour (from ``mailbox``, for the two
    mailbox caps) was recorded already: staff were told then."""
    query = select(func.count(InboundMail.id)).where(
        InboundMail.outcome == cap.value, InboundMail.received_at > now - WINDOW
    )
    if cap is not Cap.TOTAL:
        query = query.where(InboundMail.sender_index == mailbox)
    return bool(await session.scalar(query))


async def _verified(session: AsyncSession, addresses: Iterable[str]) -> set[str]:
    wanted = sorted(set(addresses))
    if not wanted:
        return set()
    found = await session.scalars(
        select(Verification.target_index)
        .where(
            Verification.target_index.in_(wanted),
            Verification.method == EMAIL_CODE,
            Verification.verified_at.is_not(None),
        )
        .distinct()
    )
    return {str(index) for index in found}


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    """How many rows meet ``condition`` (inside a grouped or whole-table count)."""
    return func.sum(case((condition, 1), else_=0))
