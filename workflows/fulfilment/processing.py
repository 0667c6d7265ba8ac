"""Who receives a person's data, in which countries, and for how long each category is kept.

The policy names the kinds of recipients (section 9) but not the organisations,
says the data is kept in Kazakhstan (section 5) yet may be transferred abroad
(section 15), and ties retention to the purposes and the law (section 2). An
access report must name them (Art. 24 of the law, policy section 6), so the
operator writes them in a small TOML file (``DSR_PROCESSING_FILE``)::

    # processing.toml
    [[recipients]]
    name = "Example Cloud LLP"          # or { kk = "...", ru = "...", en = "..." }
    role = "processor"                  # processes on the company's behalf; or "recipient"
    country = "KZ"                      # ISO 3166 code; another than KZ is a cross-border transfer
    location = "Almaty"                 # optional: where it is
    purpose = "Hosting of the Service"  # optional: what for

    [retention]                         # per category of CATEGORIES; the policy's words otherwise
    purchases = { kk = "...", ru = "...", en = "Five years after the purchase" }

    [held_for_customers]                # categories the customer list does not show
    geolocation = true

Without a file the report gives the policy's own statements. A text is one
string for every language or a table with all three (kk, ru, en).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from babel import Locale

from workflows.i18n import LANGUAGES, pick_language
from workflows.privacy.retention import DEFAULT_RETENTION_DAYS

# The policy's categories of personal data (its definition and section 3), in the
# order the report lists them. The customer list and the desk show whether the
# first ten are held for a person; the rest only the operator knows (held_for_customers).
SHOWN_CATEGORIES = (
    "full_name",
    "iin",
    "gender",
    "birth_date",
    "phone",
    "email",
    "telegram",
    "account",
    "purchases",
    "requests",
)
OPERATOR_CATEGORIES = (
    "postal_address",
    "id_document",
    "electronic_data",
    "geolocation",
    "payment_card",
)
CATEGORIES = SHOWN_CATEGORIES + OPERATOR_CATEGORIES
# Section 1: the Service collects technical data (IP address, browser, language,
# operating system) automatically from everyone who uses it, so a customer has it.
POLICY_HELD_FOR_CUSTOMERS: Mapping[str, bool] = {
    "postal_address": False,
    "id_document": False,
    "electronic_data": True,
    "geolocation": False,
    "payment_card": False,
}
# The policy's retention of each category (section 2), as access.retention.<group> texts.
POLICY_RETENTION_GROUP: Mapping[str, str] = {
    **{key: "account" for key in ("full_name", "iin", "gender", "birth_date", "phone", "email")},
    "account": "account",
    "purchases": "purchases",
    "telegram": "telegram",
    "requests": "desk",
    **{key: "purposes" for key in OPERATOR_CATEGORIES},
}
Role = Literal["processor", "recipient"]
ROLES: tuple[Role, ...] = ("processor", "recipient")
HOME_COUNTRY = "KZ"

_TOP_KEYS = {"recipients", "retention", "held_for_customers"}
_RECIPIENT_KEYS = {"name", "role", "country", "location", "purpose"}


class ProcessingFileError(ValueError):
    """The operator's processing file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Recipient:
    """An organisation the data goes to: a processor acting for the company, or a recipient."""

    name: Mapping[str, str]
    role: Role
    country: str
    location: Mapping[str, str] | None = None
    purpose: Mapping[str, str] | None = None

    def abroad(self) -> bool:
        return self.country != HOME_COUNTRY


@dataclass(frozen=True)
class ProcessingFacts:
    """The operator's recipients, held categories and retention; the policy's words by default."""

    recipients: tuple[Recipient, ...] = ()
    retention: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    held_for_customers: Mapping[str, bool] = field(
        default_factory=lambda: dict(POLICY_HELD_FOR_CUSTOMERS)
    )
    # How long the desk keeps a closed request's messages and files (DSR_RETENTION_DAYS).
    desk_retention_days: int = DEFAULT_RETENTION_DAYS

    def transfers_abroad(self) -> tuple[str, ...]:
        """The countries (ISO codes) outside Kazakhstan that a recipient is in, sorted."""
        return tuple(sorted({r.country for r in self.recipients if r.abroad()}))

    @classmethod
    def from_file(cls, path: Path | str | None) -> ProcessingFacts:
        """The facts in ``path``, or the policy's own for ``None``; raises on a bad file."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ProcessingFileError(f"{path}: cannot be read ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ProcessingFileError(f"{path}: not valid TOML ({_one_line(exc)})") from None
        return _Reader(path).facts(data)


def country_name(language: str, code: str) -> str:
    """A country's name in ``language`` (CLDR), from its ISO 3166 code."""
    return str(_territories(pick_language(language)).get(code, code))


@cache
def _territories(language: str) -> Mapping[str, str]:
    return dict(Locale.parse(language).territories)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


class _Reader:
    """Reads one processing file; every problem names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, problem: str) -> ProcessingFileError:
        return ProcessingFileError(f"{self.path}: {problem}")

    def facts(self, data: dict[str, Any]) -> ProcessingFacts:
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise self.fail(
                f"unknown key {unknown[0]!r}; use [[recipients]], [retention], [held_for_customers]"
            )
        recipients = data.get("recipients", [])
        if not isinstance(recipients, list) or not all(isinstance(r, dict) for r in recipients):
            raise self.fail("recipients must be [[recipients]] tables")
        retention = self._table(data, "retention")
        held = self._table(data, "held_for_customers")
        return ProcessingFacts(
            recipients=tuple(self._recipient(i, r) for i, r in enumerate(recipients, 1)),
            retention={
                self._category(f"retention.{key}", key, CATEGORIES): self._text(
                    f"retention.{key}", value
                )
                for key, value in retention.items()
            },
            held_for_customers={**POLICY_HELD_FOR_CUSTOMERS, **self._held(held)},
        )

    def _table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(f"{key} must be a table [{key}]")
        return value

    def _category(self, where: str, key: str, allowed: tuple[str, ...]) -> str:
        if key not in allowed:
            raise self.fail(f"{where}: {key!r} is not a category; use one of {', '.join(allowed)}")
        return key

    def _held(self, held: dict[str, Any]) -> dict[str, bool]:
        result: dict[str, bool] = {}
        for key, value in held.items():
            where = f"held_for_customers.{key}"
            self._category(where, key, OPERATOR_CATEGORIES)
            if not isinstance(value, bool):
                raise self.fail(f"{where} must be true or false, not {value!r}")
            result[key] = value
        return result

    def _recipient(self, number: int, table: dict[str, Any]) -> Recipient:
        where = f"recipients #{number}"
        unknown = sorted(set(table) - _RECIPIENT_KEYS)
        if unknown:
            raise self.fail(f"{where}: unknown key {unknown[0]!r}")
        if "name" not in table:
            raise self.fail(f"{where} has no name")
        role = table.get("role")
        if role not in ROLES:
            raise self.fail(f"{where}: role must be 'processor' or 'recipient', not {role!r}")
        country = table.get("country")
        if (
            not isinstance(country, str)
            or not (len(country) == 2 and country.isalpha() and country.isupper())
            or country == "ZZ"
            or country not in _territories("en")
        ):
            raise self.fail(
                f"{where}: country must be an ISO 3166 code such as KZ, not {country!r}"
            )
        optional = {
            key: self._text(f"{where}.{key}", table[key])
            for key in ("location", "purpose")
            if key in table
        }
        return Recipient(
            name=self._text(f"{where}.name", table["name"]),
            role=role,
            country=country,
            location=optional.get("location"),
            purpose=optional.get("purpose"),
        )

    def _text(self, where: str, value: Any) -> dict[str, str]:
        if isinstance(value, str) and value.strip():
            return {language: value.strip() for language in LANGUAGES}
        if isinstance(value, dict):
            missing = [lang for lang in LANGUAGES if not str(value.get(lang) or "").strip()]
            unknown = sorted(set(value) - set(LANGUAGES))
            if unknown:
                raise self.fail(f"{where}: unknown language {unknown[0]!r}; use kk, ru, en")
            if missing:
                raise self.fail(f"{where} has no text in {', '.join(missing)}")
            if all(isinstance(value[lang], str) for lang in LANGUAGES):
                return {lang: str(value[lang]).strip() for lang in LANGUAGES}
        raise self.fail(f"{where} must be a text, or a table of kk, ru and en texts")
