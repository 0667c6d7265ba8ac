"""Identity primitives: normalised phones and e-mails, IIN checks, one-time codes.

One-time codes are 6 digits from a CSPRNG, stored only as a keyed hash with a
per-code salt, live 15 minutes, and die after 5 wrong tries. Comparison is in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

import phonenumbers
from email_validator import EmailNotValidError, validate_email

CODE_LENGTH = 6
CODE_TTL = timedelta(minutes=15)
CODE_MAX_TRIES = 5


class InvalidIdentifier(ValueError):
    """A phone, e-mail or IIN that is not valid; the message says why, without the value."""


class InvalidPhone(InvalidIdentifier):
    pass


class InvalidEmail(InvalidIdentifier):
    pass


class InvalidIIN(InvalidIdentifier):
    pass


# -- phones and e-mails -------------------------------------------------------


def normalize_phone(raw: str, default_region: str = "KZ") -> str:
    """A number a person typed, in E.164 (``+77011234567``); raises :class:`InvalidPhone`.

    Without a "+" it is read as a Kazakh number (``8 701 …`` is +7 701 …). A
    Telegram contact's number is international: read it with :func:`contact_phone`.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("no phone number given")
    # A long run of digits not starting with the trunk prefix 8 is an international
    # number typed without its plus sign.
    if text[0].isdigit() and len(re.sub(r"\D", "", text)) > 10 and not text.startswith("8"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidPhone("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def contact_phone(raw: str) -> str:
    """The number of a Telegram shared contact in E.164; raises :class:`InvalidPhone`.

    Telegram sends a contact's number in international form, often without
    its "+": ``84912345678`` is Vietnam's +84, ``85291234567`` Hong Kong's
    +852. It is never a national number, so it is never read with the
    Kazakh default, whose trunk prefix 8 would turn the first into
    +74912345678 and refuse the second.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("no phone number given")
    if not text.startswith("+"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidPhone("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    """The address with its domain normalised and lower-cased; raises :class:`InvalidEmail`."""
    text = (raw or "").strip()
    if not text:
        raise InvalidEmail("no e-mail address given")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(f"not a valid e-mail address: {exc}") from None
    return str(result.normalized).lower()


# Providers that ignore dots in the local part, and the domain their mail lands in.
_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox_of(email: str) -> str:
    """The mailbox an address reaches: case folded, ``+tag`` dropped (and Gmail's dots).

    ``Victim+1@Example.kz`` and ``victim@example.kz`` are one mailbox, so
    whatever limits what the desk sends to a mailbox counts them together. Not
    an address to write to: the person's own spelling is kept for that.
    """
    local, at, domain = email.strip().lower().rpartition("@")
    if not at:
        return email.strip().lower()
    untagged = local.split("+", 1)[0]
    if untagged:
        local = untagged
    if domain in _DOTLESS_DOMAINS:
        local, domain = local.replace(".", "") or local, _DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"


# -- IIN ------------------------------------------------------------------------

_IIN_WEIGHTS_1 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
_IIN_WEIGHTS_2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)
_CENTURY = {"1": 1800, "2": 1800, "3": 1900, "4": 1900, "5": 2000, "6": 2000}


def iin_check_digit(first_eleven: str) -> int | None:
    """The 12th digit of an IIN, or ``None`` when no check digit exists for it."""
    digits = [int(c) for c in first_eleven]
    check = sum(d * w for d, w in zip(digits, _IIN_WEIGHTS_1, strict=True)) % 11
    if check == 10:
        check = sum(d * w for d, w in zip(digits, _IIN_WEIGHTS_2, strict=True)) % 11
        if check == 10:
            return None
    return check


def iin_birth_date(iin: str) -> date:
    """The date of birth encoded in a valid IIN of a person."""
    base = _CENTURY[iin[6]]
    return date(base + int(iin[0:2]), int(iin[2:4]), int(iin[4:6]))


def validate_iin(raw: str) -> str:
    """The IIN as 12 digits if it is valid (date part, century digit, check digit)."""
    iin = re.sub(r"[\s-]", "", raw or "")
    if not re.fullmatch(r"\d{12}", iin):
        raise InvalidIIN("an IIN has 12 digits")
    if iin[6] not in _CENTURY:
        raise InvalidIIN("the 7th digit of an IIN gives the century and sex (1-6)")
    try:
        iin_birth_date(iin)
    except ValueError:
        raise InvalidIIN("the first six digits of an IIN are a date of birth") from None
    if iin_check_digit(iin[:11]) != int(iin[11]):
        raise InvalidIIN("the check digit of the IIN does not match")
    return iin


# -- one-time codes ---------------------------------------------------------------


class CodeOutcome(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    DEAD = "dead"
    USED = "used"


@dataclass(frozen=True)
class StoredCode:
    """What is kept of a code: its keyed hash, never the code."""

    code_hash: str
    salt: bytes
    created_at: datetime
    expires_at: datetime
    attempts: int = 0
    dead: bool = False
    used: bool = False


def generate_code(randbelow: Callable[[int], int] = secrets.randbelow) -> str:
    return "".join(str(randbelow(10)) for _ in range(CODE_LENGTH))


def hash_code(code: str, key: bytes, salt: bytes) -> str:
    return hmac.new(key, salt + code.encode(), hashlib.sha256).hexdigest()


def new_code(
    now: datetime,
    key: bytes,
    *,
    randbelow: Callable[[int], int] = secrets.randbelow,
) -> tuple[str, StoredCode]:
    """A fresh code (to send) and what to store of it."""
    code = generate_code(randbelow)
    salt = secrets.token_bytes(16)
    return code, StoredCode(hash_code(code, key, salt), salt, now, now + CODE_TTL)


def tries_left(stored: StoredCode) -> int:
    if stored.dead or stored.used:
        return 0
    return max(0, CODE_MAX_TRIES - stored.attempts)


def check_code(
    stored: StoredCode, attempt: str, key: bytes, now: datetime
) -> tuple[CodeOutcome, StoredCode]:
    """Checks a typed code; returns the outcome and the record to store back."""
    if stored.used:
        return CodeOutcome.USED, stored
    if stored.dead or stored.attempts >= CODE_MAX_TRIES:
        return CodeOutcome.DEAD, replace(stored, dead=True)
    if now >= stored.expires_at:
        return CodeOutcome.EXPIRED, replace(stored, dead=True)
    typed = re.sub(r"[\s\-]", "", attempt or "")
    # Always hash, so a malformed attempt costs the same time as a wrong one.
    matches = hmac.compare_digest(hash_code(typed, key, stored.salt), stored.code_hash)
    if matches and len(typed) == CODE_LENGTH:
        return CodeOutcome.OK, replace(stored, used=True)
    attempts = stored.attempts + 1
    return CodeOutcome.WRONG if attempts < CODE_MAX_TRIES else CodeOutcome.DEAD, replace(
        stored, attempts=attempts, dead=attempts >= CODE_MAX_TRIES
    )
