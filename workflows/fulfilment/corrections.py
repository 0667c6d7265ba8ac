"""What staff write for a request's work: corrections to make and fields to destroy.

Each corrected value is checked by the directory's field rule, the one the
customer import follows (:func:`workflows.directory.field_rules.corrected_value`),
so a value one refuses the other refuses in the same words. Field names are
shown to the person in their own language.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from workflows.directory.customer_directory import DIRECTORY_FIELDS
from workflows.directory.field_rules import InvalidField, corrected_value
from workflows.fulfilment.failures import FulfilmentError
from workflows.i18n import catalogue


def field_names(language: str, names: Sequence[str]) -> str:
    """Directory field names as the person reads them, in their language."""
    if not names:
        return "—"
    return ", ".join(catalogue().text(language, f"directory_field.{name}") for name in names)


def parse_corrections(text: str, *, today: date) -> dict[str, str]:
    """Staff's corrections, one ``field: value`` per line, each value checked by the import's rule.

    ``today`` is the desk's local date (no birth date is after it). A refused
    value is named by its line and the rule's words (:mod:`workflows.directory.field_rules`).
    """
    changes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            name, sep, value = line.partition("=")
        name = name.strip().lower().replace(" ", "_")
        value = value.strip()
        if not sep or name not in DIRECTORY_FIELDS or not value:
            raise FulfilmentError(
                f"line {number}: write field: value, with a field among "
                + ", ".join(sorted(DIRECTORY_FIELDS))
            )
        try:
            changes[name] = corrected_value(name, value, today=today)
        except InvalidField as exc:
            raise FulfilmentError(f"line {number}: {exc}") from None
    if not changes:
        raise FulfilmentError("no correction given")
    return changes


def checked_corrections(changes: Mapping[str, str], *, today: date) -> dict[str, str]:
    """Corrections given as values (not typed lines), checked and stored as the import would."""
    unknown = sorted(set(changes) - DIRECTORY_FIELDS)
    if unknown:
        raise FulfilmentError(f"unknown fields: {', '.join(unknown)}")
    try:
        return {name: corrected_value(name, value, today=today) for name, value in changes.items()}
    except InvalidField as exc:
        raise FulfilmentError(str(exc)) from None


def parse_field_names(text: str) -> list[str]:
    names = [n.strip().lower().replace(" ", "_") for n in text.replace(",", " ").split()]
    unknown = sorted(set(names) - DIRECTORY_FIELDS)
    if unknown or not names:
        raise FulfilmentError(
            "name the fields to destroy among " + ", ".join(sorted(DIRECTORY_FIELDS))
        )
    return list(dict.fromkeys(names))
