"""What leaves the data layer: small frozen values, never ORM rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any


class ActorKind(StrEnum):
    PERSON = "person"
    STAFF = "staff"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    """Who does something, and through which channel.

    A person is identified by what the channel vouches for (their Telegram
    user id, or the e-mail address the letter came from); that identity is
    checked against the request and never written to the audit log in clear.
    """

    kind: ActorKind
    channel: str
    staff_id: int | None = None
    name: str | None = None
    telegram_user_id: int | None = None
    email: str | None = None

    @classmethod
    def staff(cls, user_id: int, name: str | None, channel: str = "telegram") -> Actor:
        return cls(ActorKind.STAFF, channel, staff_id=user_id, name=name)

    @classmethod
    def person_telegram(cls, user_id: int) -> Actor:
        return cls(ActorKind.PERSON, "telegram", telegram_user_id=user_id)

    @classmethod
    def person_email(cls, email: str) -> Actor:
        return cls(ActorKind.PERSON, "email", email=email)

    @classmethod
    def system(cls, channel: str = "system") -> Actor:
        return cls(ActorKind.SYSTEM, channel)


@dataclass(frozen=True)
class AuditView:
    """One audit event as the register shows it."""

    id: int
    at: datetime
    actor: str
    actor_id: str | None
    actor_name: str | None
    channel: str
    action: str
    from_status: str | None
    to_status: str | None
    details: Mapping[str, Any]
    prev_hash: str | None = None
    hash: str | None = None

    def as_dict(self, tz: tzinfo) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.astimezone(tz).isoformat(),
            "actor": self.actor,
            "actor_id": self.actor_id,
            "actor_name": self.actor_name,
            "channel": self.channel,
            "action": self.action,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "details": dict(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def _iso(value: datetime | None, tz: tzinfo) -> str | None:
    return value.astimezone(tz).isoformat() if value is not None else None


@dataclass(frozen=True)
class RequestView:
    """A request as the channels and the register see it."""

    id: int
    reference: str
    kind: str
    status: str
    channel: str
    language: str
    received_at: datetime
    clock_started_at: datetime | None
    due_at: datetime | None
    verified_at: datetime | None
    verified_by: str | None
    customer_matched: bool
    assignee_id: int | None
    assignee_name: str | None
    closed_at: datetime | None
    subject_id: int
    subject_telegram_user_id: int | None
    fields: Mapping[str, Any] = field(default_factory=dict)
    missing_fields: tuple[str, ...] = ()
    events: tuple[AuditView, ...] = ()
    # For destructive kinds: the staff who approved so far (four eyes).
    approvals: tuple[str, ...] = ()
    # The kinds an unclassified request most likely is, as it was opened (kind values).
    candidates: tuple[str, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def is_overdue(self, now: datetime) -> bool:
        return self.is_open and self.due_at is not None and self.due_at < now

    def as_dict(self, tz: tzinfo, *, with_events: bool = False) -> dict[str, Any]:
        """The JSON shape of the design's contract (times ISO 8601 with offset)."""
        data: dict[str, Any] = {
            "reference": self.reference,
            "kind": self.kind,
            "status": self.status,
            "channel": self.channel,
            "language": self.language,
            "received_at": _iso(self.received_at, tz),
            "clock_started_at": _iso(self.clock_started_at, tz),
            "due_at": _iso(self.due_at, tz),
            "verified_at": _iso(self.verified_at, tz),
            "verified_by": self.verified_by,
            "customer_matched": self.customer_matched,
            "assignee_id": self.assignee_id,
            "assignee_name": self.assignee_name,
            "closed_at": _iso(self.closed_at, tz),
            "candidates": list(self.candidates),
        }
        if with_events:
            data["events"] = [event.as_dict(tz) for event in self.events]
        return data
