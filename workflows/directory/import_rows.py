"""A row of the file as the directory stores it: each value by its field's rule.

The account's fields follow :mod:`workflows.directory.field_rules`, the rules
staff's corrections follow too; ids, instants and amounts are the file's own.
Every problem of a row is one reason, column by column, naming the column and
the problem, never the value. A row's digest is a keyed hash of its values as
normalised, so the same customer written another way is the same row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from workflows.directory import field_rules
from workflows.directory.csv_file import CUSTOMER_COLUMNS
from workflows.directory.field_rules import InvalidField
from workflows.privacy.vault import Vault

MAX_ID_LENGTH = 64
# Numeric(14, 2): twelve digits before the point.
_MAX_AMOUNT = Decimal(10) ** 12


class InvalidRow(InvalidField):
    """One value of a row is wrong; the message names the column and the problem."""


def _external_id(value: str, column: str) -> str:
    if not value:
        raise InvalidRow(f"{column}: missing")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRow(f"{column}: longer than {MAX_ID_LENGTH} characters")
    return value


def _instant(value: str, column: str, tz: tzinfo) -> datetime | None:
    """An ISO 8601 date or date-time; a date is local midnight, a time without offset local."""
    if not value:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            parsed = datetime.combine(date.fromisoformat(value), time())
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRow(f"{column}: not an ISO 8601 date or date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class CustomerRow:
    """A customer row parsed: its id, the values of the columns the file has, its digest."""

    external_id: str
    values: dict[str, Any]
    digest: str
    line: int


def _customer_value(column: str, value: str, today: date, tz: tzinfo) -> Any:
    """One column's value as stored; the account's fields follow :mod:`.field_rules`."""
    if column == "full_name":
        return field_rules.full_name(value)
    if not value:
        return False if column == "marketing_consent" else None
    if column == "marketing_consent":
        return field_rules.marketing_consent(value)
    if column == "created_at":
        return _instant(value, column, tz)
    return field_rules.account_value(column, value, today=today)


def _parse_all(values: dict[str, str], parsers: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """Each column of the row parsed; every problem of the row in one reason, in column order."""
    parsed: dict[str, Any] = {}
    problems: list[str] = []
    for column, value in values.items():
        try:
            parsed[column] = parsers[column](value)
        except InvalidField as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidRow("; ".join(problems))
    return parsed


def parse_customer(
    values: dict[str, str], line: int, vault: Vault, now: datetime, tz: tzinfo
) -> CustomerRow:
    today = now.astimezone(tz).date()
    parsed = _parse_all(
        values,
        {
            column: (lambda v, c=column: _customer_value(c, v, today, tz))
            for column in CUSTOMER_COLUMNS
        }
        | {"id": lambda v: _external_id(v, "id")},
    )
    external_id = parsed.pop("id")
    return CustomerRow(external_id, parsed, row_digest(vault, external_id, parsed), line)


def row_digest(vault: Vault, external_id: str, values: dict[str, Any]) -> str:
    """A keyed hash of the columns the file has, as normalised: the same customer
    written another way (8 701... for +7701...) is the same row."""
    canonical = json.dumps(
        {"id": external_id, **{k: _canonical(v) for k, v in values.items()}},
        sort_keys=True,
        ensure_ascii=False,
    )
    digest = vault.blind_index("row", f"customer\x00{canonical}")
    assert digest is not None
    return digest


def _canonical(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True)
class PurchaseRow:
    """A purchase row parsed, with the id of the customer it belongs to."""

    external_id: str
    customer_external_id: str
    # Only the columns the file has: purchased_at, description, amount.
    values: dict[str, Any]
    line: int


def _amount(value: str) -> Decimal | None:
    if not value:
        return None
    text = re.sub(r"[\s\u00a0]", "", value)
    if "," in text and "." not in text:
        text = text.replace(",", ".")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise InvalidRow("amount: not an amount such as 15990.00") from None
    if not amount.is_finite() or abs(amount) >= _MAX_AMOUNT:
        raise InvalidRow("amount: not an amount such as 15990.00")
    if amount != amount.quantize(Decimal("0.01")):
        raise InvalidRow("amount: more than two digits after the point")
    return amount.quantize(Decimal("0.01"))


def parse_purchase(values: dict[str, str], line: int, tz: tzinfo) -> PurchaseRow:
    parsers: dict[str, Callable[[str], Any]] = {
        "purchased_at": lambda v: _instant(v, "purchased_at", tz),
        "description": lambda v: " ".join(v.split()) or None,
        "amount": _amount,
    }
    parsers["purchase_id"] = lambda v: _external_id(v, "purchase_id")
    parsers["customer_id"] = lambda v: _external_id(v, "customer_id")
    parsed = _parse_all(values, parsers)
    return PurchaseRow(
        external_id=parsed.pop("purchase_id"),
        customer_external_id=parsed.pop("customer_id"),
        values=parsed,
        line=line,
    )
