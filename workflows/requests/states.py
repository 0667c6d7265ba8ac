"""The request state machine: which action moves a request from where to where."""

from __future__ import annotations

from enum import StrEnum

from workflows.errors import IllegalTransition


class Status(StrEnum):
    AWAITING_VERIFICATION = "awaiting_verification"
    VERIFIED = "verified"
    IN_REVIEW = "in_review"
    AWAITING_INFO = "awaiting_info"
    APPROVED = "approved"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Action(StrEnum):
    VERIFY = "verify"
    TAKE = "take"
    APPROVE = "approve"
    REJECT = "reject"
    ASK_INFO = "ask_info"
    INFO_RECEIVED = "info_received"
    COMPLETE = "complete"
    CANCEL = "cancel"
    EXPIRE = "expire"


CLOSED = frozenset({Status.COMPLETED, Status.REJECTED, Status.CANCELLED, Status.EXPIRED})
OPEN = frozenset(Status) - CLOSED

_S = Status
_A = Action

# (from, action) -> to. INFO_RECEIVED returns to review when someone has taken
# the request and to the queue otherwise; the service picks which.
TRANSITIONS: dict[tuple[Status, Action], Status] = {
    (_S.AWAITING_VERIFICATION, _A.VERIFY): _S.VERIFIED,
    (_S.AWAITING_VERIFICATION, _A.CANCEL): _S.CANCELLED,
    (_S.AWAITING_VERIFICATION, _A.EXPIRE): _S.EXPIRED,
    (_S.VERIFIED, _A.TAKE): _S.IN_REVIEW,
    (_S.VERIFIED, _A.APPROVE): _S.APPROVED,
    (_S.VERIFIED, _A.REJECT): _S.REJECTED,
    (_S.VERIFIED, _A.ASK_INFO): _S.AWAITING_INFO,
    (_S.VERIFIED, _A.CANCEL): _S.CANCELLED,
    (_S.IN_REVIEW, _A.TAKE): _S.IN_REVIEW,
    (_S.IN_REVIEW, _A.APPROVE): _S.APPROVED,
    (_S.IN_REVIEW, _A.REJECT): _S.REJECTED,
    (_S.IN_REVIEW, _A.ASK_INFO): _S.AWAITING_INFO,
    (_S.IN_REVIEW, _A.CANCEL): _S.CANCELLED,
    (_S.AWAITING_INFO, _A.INFO_RECEIVED): _S.IN_REVIEW,
    (_S.AWAITING_INFO, _A.TAKE): _S.AWAITING_INFO,
    (_S.AWAITING_INFO, _A.REJECT): _S.REJECTED,
    (_S.AWAITING_INFO, _A.CANCEL): _S.CANCELLED,
    (_S.APPROVED, _A.COMPLETE): _S.COMPLETED,
}


def next_status(current: Status, action: Action) -> Status:
    """Where ``action`` takes a request in ``current``; raises :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[(current, action)]
    except KeyError:
        raise IllegalTransition(current.value, action.value) from None
