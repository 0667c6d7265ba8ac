"""Personal data never reaches a log in clear: masks and a logging filter.

``mask_phone("+77011234567")`` gives ``+7701*****67``; ``mask_email`` keeps the
first letter and the domain; ``mask_iin`` keeps the last two digits.
:class:`PersonalDataFilter` rewrites every log record's message so phones,
e-mails and IIN-like numbers that slipped into it are masked.
"""

from __future__ import annotations

import logging
import re
from typing import Generic, TypeVar

T = TypeVar("T")

_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")
# Twelve digits in a row (an IIN), not part of a longer number.
_IIN = re.compile(r"(?<!\d)\d{10}(\d{2})(?!\d)")
# A phone: an optional +, then 10-15 digits possibly split by spaces, dashes, brackets.
_PHONE = re.compile(r"(?<![\w+-])(\+?\d[\d\s()\-]{8,18}\d)(?!\d)")


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2})?$")


def mask_phone(phone: str | None) -> str:
    if not phone:
        return ""
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 6:
        return "*" * len(digits)
    head = ("+" if phone.strip().startswith("+") else "") + digits[:4]
    return head + "*" * (len(digits) - 6) + digits[-2:]


def mask_email(email: str | None) -> str:
    if not email:
        return ""
    local, sep, domain = email.partition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_iin(iin: str | None) -> str:
    if not iin:
        return ""
    return "*" * max(0, len(iin) - 2) + iin[-2:]


def _mask_phone_match(match: re.Match[str]) -> str:
    text = match.group(1)
    if _DATE.match(text):
        return text  # a timestamp, not a phone
    digits = re.sub(r"\D", "", text)
    if not 10 <= len(digits) <= 15:
        return text
    return mask_phone(text)


def mask_text(text: str) -> str:
    """``text`` with every e-mail, IIN-like and phone-like number masked."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    text = _IIN.sub(lambda m: "**********" + m.group(1), text)
    return _PHONE.sub(_mask_phone_match, text)


class Masked(Generic[T]):
    """A value that prints as ``MASKED`` wherever it ends up (repr, str, f-strings)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "MASKED"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "MASKED"


class PersonalDataFilter(logging.Filter):
    """Masks personal data in every record that passes (message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = mask_text(message)
        record.args = None
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True
