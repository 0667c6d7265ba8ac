"""Domain errors the channels translate into words for people."""

from __future__ import annotations


class DomainError(Exception):
    """Something the request service refuses, with a reason a channel can show."""


class RequestNotFound(DomainError):
    def __init__(self, reference: str) -> None:
        super().__init__(f"no request {reference}")
        self.reference = reference


class IllegalTransition(DomainError):
    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"cannot {action} a request that is {status}")
        self.status = status
        self.action = action


class ConcurrentChange(DomainError):
    """Someone else changed the request at the same moment; read it again."""


class IdentityRefused(DomainError):
    """The proof of identity offered does not prove this person's identity."""


class MissingFields(DomainError):
    def __init__(self, fields: list[str]) -> None:
        super().__init__("missing: " + ", ".join(fields))
        self.fields = fields


class NotAllowed(DomainError):
    """The actor may not do this (for example, cancel someone else's request)."""


class KindUndecided(DomainError):
    """An unclassified request cannot be approved or completed: staff pick its kind first."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"{reference} is unclassified: pick its kind first")
        self.reference = reference


class OwnRequest(NotAllowed):
    """A staff member may not approve a request they filed themselves."""


class ApprovalMismatch(DomainError):
    """A later approval names other work than the first: four eyes agree on one thing."""


class AnswerNeeded(DomainError):
    """A complaint is closed with the answer staff wrote for the person, never without one."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"{reference} is a complaint: it is closed with its answer")
        self.reference = reference
