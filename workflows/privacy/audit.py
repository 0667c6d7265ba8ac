"""The audit log as a keyed hash chain: each event carries the hash of the one before it,
and that hash signed with a key the database does not hold.

Every :class:`~workflows.persistence.tables.AuditEvent` added through any session gets,
when it is flushed (or appended in one INSERT, :mod:`workflows.privacy.audit_batch`),
its ``prev_hash``, its ``hash`` (SHA-256 of the previous hash and its own
content: the link) and its ``mac`` (HMAC-SHA256 of that hash under the audit
key, a subkey of ``DSR_ENCRYPTION_KEY``) with the ``key_id`` that says which
key signed it. The sessions carry the key (see
:func:`workflows.persistence.engines.make_sessionmaker`); a session without one cannot
write an event. Appending is serialised so the chain never forks: on
PostgreSQL by a transaction-level advisory lock, on SQLite by its single
writer (``BEGIN IMMEDIATE``).

:func:`verify_chain` walks the log and names the first event whose link,
content or signature does not hold. Whoever can write to the database can
change an event and hash every later one again, but cannot sign the new
hashes; they can also delete the newest events and leave a shorter chain
that holds, which only a record of the chain's length and head kept
elsewhere shows: the checkpoints (:mod:`workflows.privacy.audit_checkpoint`), and the
daily staff digest, which carry the hash, not the signature, so a key
rotation leaves them true.

Keys: the first configured key's subkey signs; each event records its key's
id, so a desk running with ``NEW,OLD`` verifies events signed by either.
``aina-dsr keys rotate`` signs the older events again with the first key
(:func:`resign_chain`), each only after its own link, content and signature
hold, so the old key can go; the hashes do not move. A database from before
the chain was keyed is signed once by the first command run after the
upgrade (:func:`sign_unkeyed_chain`), as far as its old links hold.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import event, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, UOWTransaction

from workflows.persistence.tables import AuditEvent
from workflows.privacy.audit_checkpoint import Checkpoint
from workflows.privacy.vault import Vault

log = logging.getLogger(__name__)

GENESIS = "0" * 64
# An arbitrary constant: the advisory lock that serialises appends to the chain.
_CHAIN_LOCK = 0x41494E41  # "AINA"
# Where a session finds the keys it signs with (``Session.info``).
_KEYS = "aina_dsr_audit_keys"
# Where this session's transaction left the chain (see link_events).
_CHAIN_END = "aina_dsr_audit_chain_end"
# The chain's last hash, built once (building a statement costs more than running it).
_LAST_HASH = (
    select(AuditEvent.hash).where(AuditEvent.hash.is_not(None)).order_by(AuditEvent.id.desc())
).limit(1)


class AuditKeyMissing(RuntimeError):
    """An audit event was written through a session that holds no audit key."""


@dataclass(frozen=True)
class ChainKey:
    """One audit key: its id (which reveals nothing of it) and the secret."""

    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def of(cls, secret: bytes) -> ChainKey:
        key_id = hmac.new(secret, b"aina-dsr audit key id", hashlib.sha256).hexdigest()[:16]
        return cls(key_id, secret)

    def sign(self, digest: str) -> str:
        """The signature of an event's hash."""
        return hmac.new(self.secret, digest.encode(), hashlib.sha256).hexdigest()

    def signed(self, digest: str, mac: str) -> bool:
        return hmac.compare_digest(self.sign(digest), mac)


class ChainKeys:
    """The audit keys of a vault: the first one signs, every one verifies."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("the audit chain needs at least one key")
        keys = [ChainKey.of(secret) for secret in secrets]
        self.current = keys[0]
        self._by_id = {key.key_id: key for key in reversed(keys)}

    @classmethod
    def of(cls, vault: Vault) -> ChainKeys:
        return cls(vault.audit_keys)

    def get(self, key_id: str | None) -> ChainKey | None:
        return self._by_id.get(key_id) if key_id else None


def signing_info(vault: Vault) -> dict[str, Any]:
    """What a session factory puts in each session's ``info`` so its events get signed."""
    return {_KEYS: ChainKeys.of(vault)}


def keys_of(sessions: async_sessionmaker[AsyncSession]) -> ChainKeys:
    """The keys the sessions sign with (given to ``make_sessionmaker``)."""
    keys = sessions.kw.get("info", {}).get(_KEYS)
    if keys is None:
        raise AuditKeyMissing("these sessions hold no audit key: give the vault to verify with")
    return keys  # type: ignore[no-any-return]


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_event(
    session: AsyncSession | Session,
    *,
    request_id: int,
    reference: str | None,
    at: datetime,
    action: str,
    channel: str,
    actor: str = "system",
    actor_id: str | None = None,
    actor_name: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Adds one event to the session: the one way anything writes the audit log.

    The chain's hash is filled in at flush (see ``_chain_new_events``), so a caller only says
    what happened, to which request, when and by whom."""
    row = AuditEvent(
        request_id=request_id,
        reference=reference,
        at=at,
        actor=actor,
        actor_id=actor_id,
        actor_name=actor_name,
        channel=channel,
        action=action,
        from_status=from_status,
        to_status=to_status,
        details=dict(details or {}),
    )
    session.add(row)
    return row


def event_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The link of one event: its content, canonically, after the previous hash."""
    body = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def event_fields(row: AuditEvent) -> dict[str, Any]:
    """What the hash covers: everything an auditor reads in the event."""
    return {
        "request_id": row.request_id,
        "reference": row.reference,
        "at": _instant(row.at),
        "actor": row.actor,
        "actor_id": row.actor_id,
        "actor_name": row.actor_name,
        "channel": row.channel,
        "action": row.action,
        "from_status": row.from_status,
        "to_status": row.to_status,
        "details": row.details or {},
    }


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})


@event.listens_for(Session, "before_flush")
def _chain_new_events(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    link_events(session, [o for o in session.new if isinstance(o, AuditEvent) and o.hash is None])


def link_events(session: Session, new: Sequence[AuditEvent]) -> None:
    """Chain and sign ``new`` events in their order, to be stored so (ids ascending) now."""
    if not new:
        return
    keys: ChainKeys | None = session.info.get(_KEYS)
    if keys is None:
        raise AuditKeyMissing(
            "audit events are signed: make the sessions with make_sessionmaker(engine, vault)"
        )
    # The end of the chain as this transaction left it, if it appended already: it holds
    # the append lock (advisory lock or SQLite's write lock) since, so nobody else moved it.
    prev = session.info.get(_CHAIN_END)
    if prev is None:
        with session.no_autoflush:
            _lock_chain(session)
            last = session.execute(_LAST_HASH).scalar()
        prev = last or GENESIS
    for row in new:
        row.prev_hash = prev
        row.hash = event_hash(prev, event_fields(row))
        row.key_id = keys.current.key_id
        row.mac = keys.current.sign(row.hash)
        prev = row.hash
    session.info[_CHAIN_END] = prev


@event.listens_for(Session, "after_transaction_end")
def _forget_chain_end(session: Session, transaction: Any) -> None:
    # Any end, a savepoint's too: what a rolled-back savepoint appended is gone.
    session.info.pop(_CHAIN_END, None)


@dataclass(frozen=True)
class ChainHead:
    """How many events the chain holds, and the id and hash of the last one."""

    events: int
    head: str = GENESIS
    head_id: int | None = None


async def chain_head(session: AsyncSession) -> ChainHead:
    """The chain's length and head, as of one moment.

    Appends are serialised and commit in id order (the append lock is held
    from before the insert to the commit), so every event up to the newest
    committed one is committed: counting up to its id gives a length and a
    head that belong together, even on PostgreSQL's per-statement snapshots.
    """
    last = (
        await session.execute(
            select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
        )
    ).first()
    if last is None or last.hash is None:
        return ChainHead(0)
    count = await session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.id <= last.id)
    )
    return ChainHead(int(count or 0), last.hash, last.id)


@dataclass(frozen=True)
class ChainReport:
    """The outcome of a walk through the log (``head`` is the last event walked)."""

    events: int
    broken_at: int | None = None
    reference: str | None = None
    reason: str | None = None
    head: str = GENESIS
    head_id: int | None = None

    @property
    def intact(self) -> bool:
        return self.reason is None


async def _batches(
    sessions: async_sessionmaker[AsyncSession], batch: int
) -> AsyncIterator[Sequence[AuditEvent]]:
    last_id = 0
    async with sessions() as session:
        for _ in range(10**9):
            rows = (
                await session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.id > last_id)
                    .order_by(AuditEvent.id)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return
            yield rows
            last_id = rows[-1].id
            session.expunge_all()


def _fault(row: AuditEvent, prev: str, keys: ChainKeys) -> str | None:
    """Why ``row`` does not hold after an event whose hash is ``prev``; ``None`` if it does."""
    if row.prev_hash != prev:
        return "it does not follow the event before"
    if row.hash is None or row.hash != event_hash(prev, event_fields(row)):
        return "its content was changed"
    if row.mac is None:
        return "it is not signed with the audit key"
    key = keys.get(row.key_id)
    if key is None:
        return f"it is signed with a key that is not configured (key id {row.key_id})"
    if not key.signed(row.hash, row.mac):
        return "its signature does not match: it was written or changed without the audit key"
    return None


def _when(checkpoint: Checkpoint) -> str:
    return checkpoint.at.isoformat(timespec="seconds")


async def verify_chain(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault | None = None,
    *,
    checkpoints: Sequence[Checkpoint] = (),
    batch: int = 1000,
) -> ChainReport:
    """Walk the audit log in order; the first event that does not fit breaks the chain.

    Signatures are checked with ``vault``'s audit keys (by default the keys
    the sessions sign with). Each checkpoint must find its hash as the
    chain's ``events``-th event, and no checkpoint may count more events
    than the chain holds.
    """
    keys = ChainKeys.of(vault) if vault is not None else keys_of(sessions)
    expected: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        if checkpoint.events > 0:
            expected.setdefault(checkpoint.events, []).append(checkpoint)
    prev = GENESIS
    head_id: int | None = None
    count = 0
    async for rows in _batches(sessions, batch):
        for row in rows:
            count += 1
            fault = _fault(row, prev, keys)
            if fault is not None:
                return ChainReport(count, row.id, row.reference, fault, prev, head_id)
            for checkpoint in expected.get(count, ()):
                if row.hash != checkpoint.head:
                    reason = (
                        f"it is not the event the checkpoint of {_when(checkpoint)} recorded as "
                        f"event {checkpoint.events}: the log was cut or rewritten since"
                    )
                    return ChainReport(count, row.id, row.reference, reason, prev, head_id)
            prev = row.hash or GENESIS
            head_id = row.id
    longest = max(checkpoints, key=lambda c: c.events, default=None)
    if longest is not None and longest.events > count:
        reason = (
            f"the log holds {count} event(s), the checkpoint of {_when(longest)} recorded "
            f"{longest.events} event(s): events were deleted from its end"
        )
        return ChainReport(count, None, None, reason, prev, head_id)
    return ChainReport(count, head=prev, head_id=head_id)


async def sign_unkeyed_chain(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, *, batch: int = 500
) -> int:
    """Sign, once, the events an older version chained without a key; return how many.

    Those are the unsigned events the chain starts with (from before
    revision 0009). Each is signed only when its link and content hold as
    the older version made them, oldest first, so a change made before the
    upgrade is never blessed: signing stops there, and ``aina-dsr audit
    verify`` names that event. Once the chain's first event is signed this
    does nothing (one indexed read).
    """
    async with sessions() as session:
        first = await session.scalar(select(AuditEvent.mac).order_by(AuditEvent.id).limit(1))
        empty = await session.scalar(select(AuditEvent.id).limit(1)) is None
    if empty or first is not None:
        return 0
    key = ChainKeys.of(vault).current
    signed = 0
    prev = GENESIS
    last_id = 0
    while True:
        async with sessions.begin() as session:
            await session.run_sync(_lock_chain)
            rows = (
                await session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.id > last_id)
                    .order_by(AuditEvent.id)
                    .limit(batch)
                )
            ).all()
            for row in rows:
                if row.mac is not None:
                    rows = []  # the unsigned start ends here (or another process signed it)
                    break
                if row.prev_hash != prev or row.hash != event_hash(prev, event_fields(row)):
                    log.error(
                        "audit log: event %s was changed before the chain was keyed; it and "
                        "the events after it stay unsigned (aina-dsr audit verify names it)",
                        row.id,
                    )
                    rows = []
                    break
                row.key_id = key.key_id
                row.mac = key.sign(row.hash)
                prev = row.hash
                last_id = row.id
                signed += 1
        if not rows:
            break
    if signed:
        log.info("audit log: %d event(s) from before the chain was keyed now signed", signed)
    return signed


@dataclass
class Resigned:
    """What a pass over the log found (and, rotating, did) about its signatures.

    ``older``: events that hold, signed with a configured key other than the
    first; ``foreign``: events signed with a key not configured (the old
    one, once dropped); ``broken``: events whose content or signature does not
    hold (``aina-dsr audit verify`` names the first). Only ``older`` ones are
    signed again.
    """

    events: int = 0
    older: int = 0
    resigned: int = 0
    foreign: int = 0
    broken: int = 0
    changed_meanwhile: int = 0


Standing = Literal["current", "older", "foreign", "broken"]


def _standing(row: AuditEvent, keys: ChainKeys) -> Standing:
    """Who signed an event as it stands: the first key, an older configured one, a key
    not configured, or nobody (not signed, or not what was signed)."""
    if row.hash is None or row.prev_hash is None or row.mac is None:
        return "broken"
    if row.hash != event_hash(row.prev_hash, event_fields(row)):
        return "broken"
    key = keys.get(row.key_id)
    if key is None:
        return "foreign"
    if not key.signed(row.hash, row.mac):
        return "broken"
    return "current" if key is keys.current else "older"


async def resign_chain(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    *,
    write: bool = True,
    batch: int = 500,
) -> Resigned:
    """Sign with the first key every event signed with an older one (``write``), or count them.

    An event is signed again only when its content and its old signature
    hold, so a rotation never blesses a forgery; links between events are
    :func:`verify_chain`'s to check, and only the signature changes, never a
    hash, so checkpoints and digests stay true. A row signed again meanwhile
    (by another rotation) is left to it.
    """
    keys = ChainKeys.of(vault)
    current = keys.current
    found = Resigned()
    async for rows in _batches(sessions, batch):
        renew: list[tuple[int, str, str]] = []
        for row in rows:
            found.events += 1
            standing = _standing(row, keys)
            if standing == "foreign":
                found.foreign += 1
            elif standing == "broken":
                found.broken += 1
            elif standing == "older" and row.hash and row.mac:
                found.older += 1
                renew.append((row.id, row.mac, current.sign(row.hash)))
        if write and renew:
            async with sessions.begin() as session:
                for row_id, old, new in renew:
                    result = await session.execute(
                        update(AuditEvent)
                        .where(AuditEvent.id == row_id, AuditEvent.mac == old)
                        .values(mac=new, key_id=current.key_id)
                        .execution_options(synchronize_session=False)
                    )
                    if getattr(result, "rowcount", 0):
                        found.resigned += 1
                    else:
                        found.changed_meanwhile += 1
    return found
