"""How fulfilment fails: its errors, and the reason staff read when approved work fails.

A reason names no personal data: the desk's own reasons are written so, and
another error's message is masked and cut short. The log names the code the
error came through, never its message.
"""

from __future__ import annotations

import traceback

from workflows.errors import DomainError
from workflows.privacy.masking import mask_text


class FulfilmentError(DomainError):
    """The work cannot be done as asked; the message says why (no personal data)."""


class FulfilmentFailed(FulfilmentError):
    """The work of an approved request failed; it stays approved, and staff were alerted."""


# What staff read of a failure: enough to act on, short enough for an alert.
REASON_LIMIT = 200


def failure_reason(exc: BaseException) -> str:
    """Why the work failed, for staff: the desk's own reason as it is; another error
    by its type and message, with phones, e-mails and IIN-like numbers masked."""
    if isinstance(exc, DomainError):
        text = str(exc)
    else:
        message = mask_text(" ".join(str(exc).split()))
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def error_origin(exc: BaseException) -> str:
    """The error's type and the code it came through, never its message (it may quote data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    places = "".join(f"\n  {frame.filename}:{frame.lineno} in {frame.name}" for frame in frames)
    return type(exc).__qualname__ + places
