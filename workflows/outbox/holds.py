"""A person's notices held until the dialog state they belong to is durable, then released.

A channel's update may file a request (its notices commit with it) and then
change the person's dialog, written later in the update. A dispatcher that
ran in between (this process's own round, another replica's) would send the
person's confirmation ahead of the dialog state it belongs to. So while an
update runs under :meth:`NoticeHolds.hold`, a notice to the person on one of
the releasing dispatcher's channels is written due only after a hold (30 s),
and no dispatcher takes it before. Once the update's dialog writes commit,
the update releases its notices (:meth:`NoticeHolds.release`) to its own
process's dispatcher, which claims them at once (:mod:`workflows.outbox.claims`).
The hold runs out only when the process dies between the two; the notice then
goes late, never lost.

Staff's messages, other channels' notices and whatever is enqueued outside an
update are not held. A notice is remembered only once its transaction has
committed: a rolled-back one leaves nothing behind (on SQLite its id could be
given to another row). The desk uses no savepoints; one would need care here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

if TYPE_CHECKING:  # workflows.outbox.queue enqueues under the hold: it imports this module
    from workflows.outbox.queue import Audience, Channel

_PERSON = "subject"  # Audience.SUBJECT
# Long enough that only a crash between a filing and its update's dialog write lets it
# run out; short enough that the notice is still timely when it does.
HOLD = timedelta(seconds=30)


class HeldNotices:
    """The notices one update holds: their ids, once committed, until released."""

    def __init__(self, channels: frozenset[Channel], hold: timedelta) -> None:
        self._channels = channels
        self._hold = hold
        self._ids: list[int] = []
        self._open = True

    def holds(self, channel: Channel, audience: Audience) -> bool:
        """Whether a message to ``audience`` on ``channel`` enqueued now is held."""
        return self._open and audience == _PERSON and channel in self._channels

    def due_at(self, now: datetime) -> datetime:
        """When a notice held now is due, should its release never come."""
        return now + self._hold

    def committed(self, ids: Iterable[int]) -> None:
        """These held notices are committed: they wait for the release."""
        self._ids.extend(ids)

    def take(self) -> list[int]:
        """The notices held so far (committed), to be released; none are kept."""
        ids, self._ids = self._ids, []
        return ids

    def close(self) -> None:
        """The update is over: nothing enqueued from now on is held."""
        # A task started within the update may outlive it: what it enqueues is not held.
        self._open = False


class NoticeHolds:
    """One dispatcher's held notices: the updates hold them, the dispatcher takes the released.

    ``channels`` are the dispatcher's; ``wake`` tells it there is work
    (the channel's wake-up call).
    """

    def __init__(
        self,
        channels: Collection[Channel],
        *,
        wake: Callable[[], object] | None = None,
        hold: timedelta = HOLD,
    ) -> None:
        self.channels = frozenset(channels)
        self._wake = wake
        self._hold = hold
        self._released: set[int] = set()

    @contextmanager
    def hold(self) -> Iterator[HeldNotices]:
        """For the duration of an update: the person's notices it enqueues are held."""
        held = HeldNotices(self.channels, self._hold)
        token = _HOLDING.set(held)
        try:
            yield held
        finally:
            held.close()
            _HOLDING.reset(token)

    def release(self, held: HeldNotices) -> None:
        """The update's dialog writes are committed: its notices may go now (wakes if any)."""
        ids = held.take()
        if not ids:
            return
        self._released.update(ids)
        if self._wake is not None:
            self._wake()

    def released(self) -> frozenset[int]:
        """The released notices not yet claimed (or found gone)."""
        return frozenset(self._released)

    def forget(self, ids: Iterable[int]) -> None:
        """Claimed, or no longer waiting (sent by another once the hold ran out, never made)."""
        self._released.difference_update(ids)


_HOLDING: ContextVar[HeldNotices | None] = ContextVar("aina_dsr_held_notices", default=None)


def holding() -> HeldNotices | None:
    """The notices the update under way holds; None outside one."""
    return _HOLDING.get()


# In a session's info: (held notices, id) enqueued in its transaction, not yet committed.
_PENDING = "aina_dsr_held_notices"


def remember_when_committed(session: Any, held: HeldNotices, ids: Iterable[int]) -> None:
    """Hand ``ids`` to ``held`` once the session's transaction commits (dropped on rollback).

    ``session`` is an ``AsyncSession`` or a ``Session``: both share one ``info``.
    """
    pending: list[tuple[HeldNotices, int]] = session.info.setdefault(_PENDING, [])
    pending.extend((held, item_id) for item_id in ids)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for held, item_id in session.info.pop(_PENDING, ()):
        held.committed((item_id,))


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # rolled back: what it enqueued never was
        session.info.pop(_PENDING, None)
