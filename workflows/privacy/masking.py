"""Personal data never reaches a log in clear: masks and a logging filter.

``mask_phone("+77011234567")`` gives ``+7701*****67``; ``mask_email`` keeps the
first letter and the domain; ``mask_iin`` keeps the last two digits;
``mask_telegram_id`` keeps a few digits at each end (``123***89``).
:class:`PersonalDataFilter` rewrites every log record's message so phones
(spaced, bracketed or dotted), e-mails (a quoted local part too), IIN-like
numbers (in one piece or two) and Telegram ids named as a user's, a chat's
or a dialog key's that slipped into it are masked; the database driver's
debug lines keep their statement and lose their parameters.
"""

from __future__ import annotations

import logging
import re
from typing import Generic, TypeVar

T = TypeVar("T")

_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")
# RFC 5322 lets a local part be quoted, and then hold dots, spaces and escapes.
_QUOTED_EMAIL = re.compile(r'"\s*((?:[^"\\\r\n]|\\.)*)"@([\w-]+(?:\.[\w-]+)+)')
# Twelve digits in a row (an IIN), not part of a longer number.
_IIN = re.compile(r"(?<!\d)\d{10}(\d{2})(?!\d)")
# An IIN in two halves, the birth date and the rest: "900101 300123".
_SPLIT_IIN = re.compile(r"(?<![\d+])\d{6}[ \u00a0-]\d{4}(\d{2})(?!\d)")
# A phone: an optional +, then 10-15 digits possibly split by spaces, dashes, brackets.
_PHONE = re.compile(r"(?<![\w+-])(\+?\d[\d\s()\-]{8,18}\d)(?!\d)")
# A phone split by dots ("8.701.123.45.67", "+7.701.123.4567"): three groups or more, so a
# decimal number is not one, and an IPv4 address is told apart by its groups.
_DOTTED_PHONE = re.compile(r"(?<![\w.+])(\+?\d{1,4}(?:\.\d{1,4}){2,5})(?![.\d]?\d)")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
# A Telegram id has no shape of its own, so it is known by the word before it: a user,
# chat, sender or staff member's id (``chat 123456789``, ``telegram_user_id=...``,
# ``User(id=...)``, ``'user_id': ...``), at least five digits.
_TELEGRAM_ID = re.compile(
    r"(?i)(?<![a-z])((?:telegram|tg|user|chat|sender|person|staff|member|contact)"
    r"(?:[ _](?:user|chat))?(?:[ _]?ids?)?['\"]?\s*(?:\(\s*id\s*=|[=:#])?\s*)(-?\d{5,})(?!\d)"
)
# A dialog's storage key names its chat and user: ``fsm:<chat>:<user>:<destiny>``.
_DIALOG_KEY = re.compile(r"(?<![\w])(fsm)((?::-?\d+)+)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2})?$")
# aiosqlite's debug lines: ``executing functools.partial(<method>, 'SQL', (parameters))``.
_DRIVER_CALL = re.compile(
    r"(functools\.partial\(<[^<>]*>, (?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"))(, .*)\)",
    re.DOTALL,
)
_DRIVER_LOGGERS = ("aiosqlite",)


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
    local, sep, domain = email.rpartition("@")
    if not sep:
        return "***"
    return f"{local.strip(chr(34))[:1]}***@{domain}"


def mask_iin(iin: str | None) -> str:
    if not iin:
        return ""
    return "*" * max(0, len(iin) - 2) + iin[-2:]


def mask_telegram_id(value: int | str | None) -> str:
    """A Telegram user or chat id with its middle hidden: ``1234567889`` gives ``123***89``.

    At least half of the digits (and never fewer than three) are hidden; a
    group's minus sign stays.
    """
    if value is None:
        return ""
    text = str(value).strip()
    sign = "-" if text.startswith("-") else ""
    digits = text.lstrip("-")
    hidden = max(3, -(-len(digits) // 2))
    if len(digits) <= hidden:
        return sign + "***"
    tail = min(2, len(digits) - hidden)
    head = len(digits) - hidden - tail
    return f"{sign}{digits[:head]}***{digits[len(digits) - tail :]}"


def _mask_phone_match(match: re.Match[str]) -> str:
    text = match.group(1)
    if _DATE.match(text):
        return text  # a timestamp, not a phone
    digits = re.sub(r"\D", "", text)
    if not 10 <= len(digits) <= 15:
        return text
    if len(digits) == 12 and not text.startswith("+"):
        # Twelve digits in groups are an IIN (a Kazakh phone has eleven): its head is a
        # birth date, so only its tail may show.
        return mask_iin(digits)
    return mask_phone(text)


def _mask_dotted_phone(match: re.Match[str]) -> str:
    text = match.group(1)
    if _IPV4.fullmatch(text):
        return text
    return _mask_phone_match(match)


def _mask_dialog_key(match: re.Match[str]) -> str:
    ids = match.group(2).split(":")[1:]
    return match.group(1) + "".join(f":{mask_telegram_id(part)}" for part in ids)


def mask_text(text: str) -> str:
    """``text`` with every e-mail, IIN-like, phone-like number and named Telegram id masked."""
    text = _QUOTED_EMAIL.sub(lambda m: f"{m.group(1)[:1]}***@{m.group(2)}", text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    text = _DIALOG_KEY.sub(_mask_dialog_key, text)
    # Ids before phones: a ten-digit id would otherwise show its first four digits.
    text = _TELEGRAM_ID.sub(lambda m: m.group(1) + mask_telegram_id(m.group(2)), text)
    text = _IIN.sub(lambda m: "**********" + m.group(1), text)
    text = _SPLIT_IIN.sub(lambda m: "**********" + m.group(1), text)
    text = _DOTTED_PHONE.sub(_mask_dotted_phone, text)
    return _PHONE.sub(_mask_phone_match, text)


def hide_driver_parameters(text: str) -> str:
    """A database driver's debug line with its statement kept and its parameters hidden.

    Parameters are bare values (a Telegram id is just a number there), so no
    mask can tell which of them are personal.
    """
    return _DRIVER_CALL.sub(lambda m: f"{m.group(1)}, …)", text)


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
        if record.name.startswith(_DRIVER_LOGGERS):
            message = hide_driver_parameters(message)
        record.msg = mask_text(message)
        record.args = None
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True
