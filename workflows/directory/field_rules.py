"""The rules of the directory's fields: what a value may be, and the form it is stored in.

One function per field takes a value as a file or a person writes it and
returns it as the directory stores it, or raises :class:`InvalidField` with
a message that names the field and the problem, never the value (so a report
or a chat reply holding it holds no personal data). The customer import and
staff's corrections both go through :func:`account_value` (corrections through
:func:`corrected_value`, which is it without the blank), so a value one
refuses the other refuses in the same words, and both store ``ж`` as ``f``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from workflows.i18n import LANGUAGES
from workflows.identity import (
    InvalidEmail,
    InvalidIdentifier,
    normalize_email,
    normalize_phone,
    validate_iin,
)

_GENDERS = {
    "m": "m", "male": "m", "м": "m", "муж": "m", "мужской": "m", "ер": "m",
    "f": "f", "female": "f", "ж": "f", "жен": "f", "женский": "f", "әйел": "f",
}  # fmt: skip
_CONSENT = {
    "true": True, "yes": True, "1": True, "да": True, "иә": True,
    "false": False, "no": False, "0": False, "нет": False, "жоқ": False,
}  # fmt: skip
CONSENT_WORDS = "true/false, yes/no, 1/0, да/нет, иә/жоқ"


class InvalidField(ValueError):
    """A value a field cannot hold; the message is ``field: problem``, without the value."""


def full_name(value: str) -> str | None:
    """The name with its spaces collapsed; blank is no name."""
    return " ".join(value.split()) or None


def phone(value: str) -> str:
    """A phone number in any usual spelling, stored as ``+7…``."""
    try:
        return normalize_phone(value)
    except InvalidIdentifier as exc:
        raise InvalidField(f"phone: {exc}") from None


def email(value: str) -> str:
    """An e-mail address, stored lower-cased."""
    try:
        return normalize_email(value)
    except InvalidEmail:
        # email-validator's own messages may quote part of the address.
        raise InvalidField("email: not a valid e-mail address") from None


def iin(value: str) -> str:
    """An IIN: twelve digits whose check digit matches."""
    try:
        return validate_iin(value)
    except InvalidIdentifier as exc:
        raise InvalidField(f"iin: {exc}") from None


def gender(value: str) -> str:
    """``m`` or ``f``, from the spellings the shop's systems and staff use."""
    stored = _GENDERS.get(value.strip().lower())
    if stored is None:
        raise InvalidField("gender: not one of m, f, male, female, м, ж")
    return stored


def birth_date(value: str, *, today: date) -> str:
    """A ``YYYY-MM-DD`` date not after ``today`` (the desk's local date), stored as ISO."""
    try:
        born = date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidField("birth_date: not a date in the form YYYY-MM-DD") from None
    if born > today:
        raise InvalidField("birth_date: in the future")
    return born.isoformat()


def language(value: str) -> str:
    """``kk``, ``ru`` or ``en``, any letter case."""
    folded = value.strip().lower()
    if folded not in LANGUAGES:
        raise InvalidField(f"language: not one of {', '.join(LANGUAGES)}")
    return folded


def marketing_consent(value: str) -> bool:
    """Yes or no to newsletters, in the words of :data:`CONSENT_WORDS`."""
    consent = _CONSENT.get(value.strip().lower())
    if consent is None:
        raise InvalidField(f"marketing_consent: not one of {CONSENT_WORDS}")
    return consent


_ACCOUNT: dict[str, Callable[[str, date], str | None]] = {
    "full_name": lambda value, _: full_name(value),
    "phone": lambda value, _: phone(value),
    "email": lambda value, _: email(value),
    "iin": lambda value, _: iin(value),
    "gender": lambda value, _: gender(value),
    "birth_date": lambda value, today: birth_date(value, today=today),
    "language": lambda value, _: language(value),
}
ACCOUNT_FIELD_NAMES = tuple(_ACCOUNT)


def account_value(name: str, value: str, *, today: date) -> str | None:
    """``value`` of the account field ``name`` as stored; raises :class:`InvalidField`.

    ``today`` is the desk's local date, the latest birth date there can be.
    """
    try:
        rule = _ACCOUNT[name]
    except KeyError:
        raise InvalidField(f"{name}: not a field of the account") from None
    return rule(value, today)


def corrected_value(name: str, value: str, *, today: date) -> str:
    """:func:`account_value` for a correction, where a value is never blank.

    Only a blank name comes back empty from the rules: erasing is a destruction,
    not a correction.
    """
    stored = account_value(name, value, today=today)
    if stored is None:
        raise InvalidField(f"{name}: empty")
    return stored
