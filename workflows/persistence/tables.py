"""The database schema: every row the desk keeps.

Columns ending in ``_enc`` hold Fernet tokens (see :mod:`workflows.privacy.vault`);
columns ending in ``_index`` hold keyed blind indexes for lookup. Rows never
leave the data layer: the service turns them into frozen dataclasses.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; SQLite keeps no offset, so we add it back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}  # noqa: RUF012


class DataSubject(Base):
    """A person who asked us something, as known from the channel they used."""

    __tablename__ = "data_subject"

    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_user_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    telegram_unreachable: Mapped[bool] = mapped_column(Boolean, default=False)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_index: Mapped[str | None] = mapped_column(String(64), index=True)
    email_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_index: Mapped[str | None] = mapped_column(String(64), index=True)
    full_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    language: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[datetime]


class Customer(Base):
    """A customer of the shop, from the company's own records (the directory)."""

    __tablename__ = "customer"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    full_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_index: Mapped[str | None] = mapped_column(String(64), index=True)
    email_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_index: Mapped[str | None] = mapped_column(String(64), index=True)
    iin_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    iin_index: Mapped[str | None] = mapped_column(String(64), index=True)
    gender_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    birth_date_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    language: Mapped[str | None] = mapped_column(String(2))
    marketing_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    registered_at: Mapped[datetime | None]
    # A keyed hash of the imported row, so a re-import of the same file changes nothing.
    source_digest: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # What the person's requests changed: other systems read these (suppression list).
    marketing_stopped_at: Mapped[datetime | None]
    processing_stopped_at: Mapped[datetime | None]
    processing_scope_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    blocked_at: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]
    # Names of the erased or destroyed fields, never their values.
    erased_fields: Mapped[list[str] | None] = mapped_column(JSON)


class Purchase(Base):
    """One purchase of a customer: history the account deletion keeps."""

    __tablename__ = "purchase"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"), index=True)
    purchased_at: Mapped[datetime | None]
    description_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))


class ReferenceCounter(Base):
    """The last reference number handed out in a year (``DSR-YYYY-NNNNNN``)."""

    __tablename__ = "reference_counter"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(Integer)


class Request(Base):
    """A data-subject request and where it stands."""

    __tablename__ = "request"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(2))
    subject_id: Mapped[int] = mapped_column(ForeignKey("data_subject.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    received_at: Mapped[datetime]
    clock_started_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None] = mapped_column(index=True)
    verified_at: Mapped[datetime | None]
    verified_by: Mapped[str | None] = mapped_column(String(32))
    assignee_id: Mapped[int | None] = mapped_column(BigInteger)
    assignee_name: Mapped[str | None] = mapped_column(String(200))
    fields_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    closed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer, default=1)
    # When the scheduler next owes anyone a notice about this request (UTC). NULL: not
    # planned yet, or changed since (see workflows.deadlines.notice_plan): the next pass plans it.
    next_notice_at: Mapped[datetime | None] = mapped_column(index=True)
    # The kinds an unclassified request most likely is (kind values), as it was opened;
    # NULL for a request opened with its kind (see workflows.requests.classification).
    candidates: Mapped[list[str] | None] = mapped_column(JSON)
    # When staff last changed the kind, and how many times: the scheduler owes the
    # notices of the clock set then only from that instant on, under keys of that change.
    kind_changed_at: Mapped[datetime | None]
    kind_changes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The work the approvals agreed to (fields to destroy, corrected values), encrypted
    # JSON: the fulfilment does exactly this. Kept from the first approval until the
    # request closes (see workflows.requests.approvals).
    approved_work_enc: Mapped[bytes | None] = mapped_column(LargeBinary)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class AuditEvent(Base):
    """One thing that happened to a request. Append-only; outlives the request."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    # No foreign key on purpose: evidence stays when a request row is purged.
    request_id: Mapped[int | None] = mapped_column(Integer, index=True)
    reference: Mapped[str | None] = mapped_column(String(20), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_name: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(48))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The hash chain (see workflows.privacy.audit): the previous event's hash, and this one's.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The hash signed with the audit key (HMAC-SHA256), and which key signed it.
    mac: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(16))


class Message(Base):
    """Every message in or out about a request, body encrypted."""

    __tablename__ = "message"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("request.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(16))
    body_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    external_id: Mapped[str | None] = mapped_column(String(998), index=True)
    outbox_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]


class Attachment(Base):
    """A file the person sent as evidence, encrypted."""

    __tablename__ = "attachment"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("request.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("message.id"))
    filename_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class Verification(Base):
    """A proof of identity: a Telegram contact, or a one-time code sent somewhere."""

    __tablename__ = "verification"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("request.id"), index=True)
    method: Mapped[str] = mapped_column(String(32))
    target_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Indexed: the mail intake asks which senders' addresses were ever verified.
    target_index: Mapped[str | None] = mapped_column(String(64), index=True)
    telegram_user_id: Mapped[int | None] = mapped_column(BigInteger)
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_salt: Mapped[bytes | None] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    dead: Mapped[bool] = mapped_column(Boolean, default=False)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    verified_at: Mapped[datetime | None]


class OutboxItem(Base):
    """A message waiting to be delivered by a channel, written with its cause."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("request.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    audience: Mapped[str] = mapped_column(String(16))
    address_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    template: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(2))
    params_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))  # the claim's owner token
    last_error: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(998))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)


class MailCursor(Base):
    """Where the IMAP poller stands in a folder."""

    __tablename__ = "mail_cursor"

    id: Mapped[int] = mapped_column(primary_key=True)
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("folder"),)


class ConversationState(Base):
    """A chat dialog's state and data (aiogram FSM), so a restart loses no conversation.

    The data holds what the person typed, so it is stored encrypted.
    """

    __tablename__ = "conversation_state"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(255))
    data_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]


class StaffCard(Base):
    """Where a request's card sits in the staff group, so it is edited in place."""

    __tablename__ = "staff_card"

    request_id: Mapped[int] = mapped_column(ForeignKey("request.id"), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class InboundMail(Base):
    """Every mail the poller took from the mailbox, and what became of it.

    ``mail_key`` is a hash of the Message-ID (or of the content when there is
    none), so the same letter seen twice (a re-poll, a restart, a copy in two
    folders, a new UIDVALIDITY) is handled once. A mail that cannot be parsed
    keeps its raw bytes, encrypted, for staff to read.
    """

    __tablename__ = "inbound_mail"

    id: Mapped[int] = mapped_column(primary_key=True)
    mail_key: Mapped[str] = mapped_column(String(64), unique=True)
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str | None] = mapped_column(String(500))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("request.id"), index=True)
    # The blind index of the sender's mailbox (plus-tags and case folded, see
    # workflows.identity.mailbox_of): the mail intake's hourly caps count by it.
    sender_index: Mapped[str | None] = mapped_column(String(64), index=True)
    # The letter was answered at an address nobody had verified (a request opened and its
    # code mailed, or a "too large" note): what the caps on such answers count.
    answered_unverified: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    raw_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(index=True)
    processed_at: Mapped[datetime]


class ScheduledNotice(Base):
    """A reminder, a deadline notice or a digest the scheduler has dealt with, once.

    ``key`` is the idempotency key (request and milestone, or the digest's
    day): a second scheduler, a restart or a retried job finds it and sends
    nothing. ``outcome`` is ``sent`` or ``skipped`` (a missed notice that a
    later one of its series replaced); ``late`` marks one sent after its day.
    """

    __tablename__ = "scheduled_notice"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("request.id"), index=True)
    milestone: Mapped[str] = mapped_column(String(64))
    meant_for: Mapped[date] = mapped_column(Date)
    outcome: Mapped[str] = mapped_column(String(16))
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_at: Mapped[datetime]


class SchedulerState(Base):
    """What the scheduler keeps between runs, by name.

    ``notice_plan_basis`` is the fingerprint of everything the requests' stored
    next notice instants were computed from (:mod:`workflows.deadlines.notice_plan`).
    """

    __tablename__ = "scheduler_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime]
