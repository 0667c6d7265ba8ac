"""The customer directory: the shop's customer list, imported from CSV, found by identifier.

The import streams the file, checks every row and stores it encrypted, with
blind indexes for phone, e-mail and IIN. A bad row is rejected with its line
and a reason that names the column and the problem, never the value, so the
report holds no personal data. Re-importing a file changes nothing: each
customer keeps a keyed digest of the row it came from. What the person had
erased or withdrawn through a request is never written back
(:mod:`workflows.directory.import_holds`).
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from os import PathLike
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.deadlines.calendar import DEFAULT_TIMEZONE
from workflows.directory import field_rules
from workflows.directory.field_rules import InvalidField
from workflows.directory.import_holds import hold_for
from workflows.identity import normalize_email, normalize_phone, validate_iin
from workflows.persistence.tables import Customer, Purchase
from workflows.privacy.vault import Vault

CUSTOMER_COLUMNS = (
    "id", "full_name", "phone", "email", "iin", "gender", "birth_date", "language",
    "marketing_consent", "created_at",
)  # fmt: skip
PURCHASE_COLUMNS = ("customer_id", "purchase_id", "purchased_at", "description", "amount")
MAX_ID_LENGTH = 64
# Numeric(14, 2): twelve digits before the point.
_MAX_AMOUNT = Decimal(10) ** 12

Progress = Callable[[int], None]
Source = str | PathLike[str] | TextIO


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (no header, unknown columns, not UTF-8)."""


@dataclass(frozen=True)
class Rejected:
    """A row left out of the import: its line in the file and why, without its values."""

    line: int
    reason: str


@dataclass(frozen=True)
class Withheld:
    """A row not written in full, because of what the person asked: its line and what stayed."""

    line: int
    reason: str


@dataclass(frozen=True)
class ImportReport:
    """What an import did, row by row counted.

    A ``withheld`` row is also counted as updated or unchanged: it is listed
    because part of it (or all of it) was not written, see :mod:`workflows.directory.import_holds`.
    """

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: tuple[Rejected, ...] = ()
    withheld: tuple[Withheld, ...] = ()

    @property
    def rows(self) -> int:
        return self.created + self.updated + self.unchanged + len(self.rejected)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected],
            "withheld": [{"line": w.line, "reason": w.reason} for w in self.withheld],
        }


@dataclass(frozen=True)
class PurchaseRecord:
    """One purchase as the directory holds it."""

    purchase_id: str
    purchased_at: datetime | None
    description: str | None = field(repr=False)
    amount: Decimal | None


@dataclass(frozen=True)
class CustomerRecord:
    """A customer, decrypted; personal values stay out of ``repr`` (and so out of logs)."""

    id: str
    full_name: str | None = field(repr=False)
    phone: str | None = field(repr=False)
    email: str | None = field(repr=False)
    iin: str | None = field(repr=False)
    gender: str | None = field(repr=False)
    birth_date: date | None = field(repr=False)
    language: str | None
    marketing_consent: bool
    registered_at: datetime | None
    imported_at: datetime
    updated_at: datetime
    purchases: tuple[PurchaseRecord, ...] = ()


# -- reading the file ------------------------------------------------------------


class _Invalid(InvalidField):
    """One value of a row is wrong; the message names the column and the problem."""


@dataclass(frozen=True)
class _Layout:
    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]


_CUSTOMERS = _Layout("customer", CUSTOMER_COLUMNS, ("id",))
_PURCHASES = _Layout("purchase", PURCHASE_COLUMNS, ("customer_id", "purchase_id"))


def _open(source: Source) -> AbstractContextManager[TextIO]:
    if isinstance(source, str | PathLike):
        # utf-8-sig drops the byte-order mark spreadsheet programs put in front.
        return open(source, encoding="utf-8-sig", newline="")
    return nullcontext(source)


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _Reader:
    """Streams the rows of a CSV file as ``(line, values)`` with the header checked."""

    def __init__(self, stream: TextIO, layout: _Layout) -> None:
        self._stream = stream
        self._layout = layout
        try:
            first = stream.readline()
        except UnicodeDecodeError:
            raise ImportFileError("line 1: the file is not UTF-8 text") from None
        first = first.removeprefix("\ufeff")
        if not first.strip():
            raise ImportFileError(
                f"the file is empty; it needs a header row with at least: "
                f"{', '.join(layout.required)}"
            )
        self._reader = csv.reader(itertools.chain([first], stream), delimiter=_delimiter(first))
        self.header = self._check_header(next(self._reader))

    def _check_header(self, names: list[str]) -> tuple[str, ...]:
        header = tuple(name.strip().lower() for name in names)
        unnamed = [str(i) for i, name in enumerate(header, 1) if not name]
        if unnamed:
            raise ImportFileError(f"header: column {', '.join(unnamed)} has no name")
        unknown = [name for name in header if name not in self._layout.columns]
        if unknown:
            raise ImportFileError(
                f"header: unknown column(s) {', '.join(unknown)}; "
                f"the {self._layout.name} columns are {', '.join(self._layout.columns)}"
            )
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise ImportFileError(f"header: column(s) {', '.join(twice)} given twice")
        missing = [name for name in self._layout.required if name not in header]
        if missing:
            raise ImportFileError(f"header: the column(s) {', '.join(missing)} are required")
        return header

    def __iter__(self) -> Iterator[tuple[int, dict[str, str] | Rejected]]:
        width = len(self.header)
        line = self._reader.line_num + 1
        while True:
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise ImportFileError(f"line {line}: the file is not UTF-8 text") from None
            except csv.Error as exc:
                raise ImportFileError(f"line {line}: {exc}") from None
            start, line = line, self._reader.line_num + 1
            if not any(value.strip() for value in fields):
                continue
            if len(fields) != width:
                yield (
                    start,
                    Rejected(start, f"the row has {len(fields)} fields, the header has {width}"),
                )
                continue
            yield (
                start,
                {name: value.strip() for name, value in zip(self.header, fields, strict=True)},
            )


def check_file(source: Source, *, purchases: bool = False) -> None:
    """Read only the header of a customers (or purchases) file; raises :class:`ImportFileError`."""
    with _open(source) as stream:
        _Reader(stream, _PURCHASES if purchases else _CUSTOMERS)


# -- values ------------------------------------------------------------------------


def _external_id(value: str, column: str) -> str:
    if not value:
        raise _Invalid(f"{column}: missing")
    if len(value) > MAX_ID_LENGTH:
        raise _Invalid(f"{column}: longer than {MAX_ID_LENGTH} characters")
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
        raise _Invalid(f"{column}: not an ISO 8601 date or date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class _CustomerRow:
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
        raise _Invalid("; ".join(problems))
    return parsed


def _parse_customer(
    values: dict[str, str], line: int, vault: Vault, now: datetime, tz: tzinfo
) -> _CustomerRow:
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
    return _CustomerRow(external_id, parsed, _row_digest(vault, external_id, parsed), line)


def _row_digest(vault: Vault, external_id: str, values: dict[str, Any]) -> str:
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


def _apply_customer(
    customer: Customer,
    values: dict[str, Any],
    digest: str,
    vault: Vault,
    now: datetime,
    *,
    new: bool,
) -> None:
    """Write the row's columns onto the customer; a column the file lacks is left alone."""
    if "full_name" in values:
        customer.full_name_enc = vault.encrypt(values["full_name"])
    for kind in ("phone", "email", "iin"):
        if kind in values:
            setattr(customer, f"{kind}_enc", vault.encrypt(values[kind]))
            setattr(customer, f"{kind}_index", vault.blind_index(kind, values[kind]))
    if "gender" in values:
        customer.gender_enc = vault.encrypt(values["gender"])
    if "birth_date" in values:
        customer.birth_date_enc = vault.encrypt(values["birth_date"])
    if "language" in values:
        customer.language = values["language"]
    if "marketing_consent" in values:
        customer.marketing_consent = values["marketing_consent"]
    elif new:
        customer.marketing_consent = False
    registered = values.get("created_at")
    if registered is not None:
        customer.registered_at = registered
    elif new:
        customer.registered_at = now
    customer.source_digest = digest
    customer.updated_at = now
    if new:
        customer.imported_at = now


@dataclass(frozen=True)
class _PurchaseRow:
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
        raise _Invalid("amount: not an amount such as 15990.00") from None
    if not amount.is_finite() or abs(amount) >= _MAX_AMOUNT:
        raise _Invalid("amount: not an amount such as 15990.00")
    if amount != amount.quantize(Decimal("0.01")):
        raise _Invalid("amount: more than two digits after the point")
    return amount.quantize(Decimal("0.01"))


def _parse_purchase(values: dict[str, str], line: int, tz: tzinfo) -> _PurchaseRow:
    parsers: dict[str, Callable[[str], Any]] = {
        "purchased_at": lambda v: _instant(v, "purchased_at", tz),
        "description": lambda v: " ".join(v.split()) or None,
        "amount": _amount,
    }
    parsers["purchase_id"] = lambda v: _external_id(v, "purchase_id")
    parsers["customer_id"] = lambda v: _external_id(v, "customer_id")
    parsed = _parse_all(values, parsers)
    return _PurchaseRow(
        external_id=parsed.pop("purchase_id"),
        customer_external_id=parsed.pop("customer_id"),
        values=parsed,
        line=line,
    )


def _purchase_differs(
    purchase: Purchase, customer_id: int, row: _PurchaseRow, vault: Vault
) -> bool:
    if purchase.customer_id != customer_id:
        return True
    values = row.values
    return (
        ("purchased_at" in values and purchase.purchased_at != values["purchased_at"])
        or ("amount" in values and purchase.amount != values["amount"])
        or (
            "description" in values
            and vault.decrypt(purchase.description_enc) != values["description"]
        )
    )


def _apply_purchase(purchase: Purchase, customer_id: int, row: _PurchaseRow, vault: Vault) -> None:
    """Write the row onto the purchase; a column the file lacks is left alone."""
    purchase.customer_id = customer_id
    if "purchased_at" in row.values:
        purchase.purchased_at = row.values["purchased_at"]
    if "description" in row.values:
        purchase.description_enc = vault.encrypt(row.values["description"])
    if "amount" in row.values:
        purchase.amount = row.values["amount"]


# -- importing -----------------------------------------------------------------------


class _Tally:
    def __init__(self) -> None:
        self.created = self.updated = self.unchanged = 0
        self.rejected: list[Rejected] = []
        self.withheld: list[Withheld] = []

    def report(self) -> ImportReport:
        rejected = tuple(sorted(self.rejected, key=lambda r: r.line))
        withheld = tuple(sorted(self.withheld, key=lambda w: w.line))
        return ImportReport(self.created, self.updated, self.unchanged, rejected, withheld)


def _batches(
    reader: _Reader, batch_size: int, tally: _Tally, key: str
) -> Iterator[tuple[int, list[tuple[int, dict[str, str]]]]]:
    """Rows in batches, rejecting rows of the wrong width and ids seen before in the file."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    first_seen: dict[str, int] = {}
    batch: list[tuple[int, dict[str, str]]] = []
    processed = 0
    for line, row in reader:
        processed += 1
        if isinstance(row, Rejected):
            tally.rejected.append(row)
        elif row[key] and row[key] in first_seen:
            tally.rejected.append(
                Rejected(line, f"{key}: the same id as line {first_seen[row[key]]}")
            )
        else:
            if row[key]:
                first_seen[row[key]] = line
            batch.append((line, row))
        if processed % batch_size == 0:
            yield processed, batch
            batch = []
    if batch or processed % batch_size:
        yield processed, batch


async def import_customers(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    source: Source,
    *,
    now: datetime,
    tz: tzinfo | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> ImportReport:
    """Create or update customers from a CSV file (a path or an open text file).

    Rows are read one at a time and committed every ``batch_size`` rows;
    ``progress`` gets the number of rows read so far after each commit. Dates
    and times without an offset are local to ``tz`` (the desk's zone).
    What the person had erased or withdrawn is never written back; such rows
    are listed in the report's ``withheld`` (:mod:`workflows.directory.import_holds`).
    Raises :class:`ImportFileError` when the file as a whole cannot be read.
    """
    zone = tz or ZoneInfo(DEFAULT_TIMEZONE)
    tally = _Tally()
    with _open(source) as stream:
        reader = _Reader(stream, _CUSTOMERS)
        for processed, batch in _batches(reader, batch_size, tally, "id"):
            rows: list[_CustomerRow] = []
            for line, values in batch:
                try:
                    rows.append(_parse_customer(values, line, vault, now, zone))
                except _Invalid as exc:
                    tally.rejected.append(Rejected(line, str(exc)))
            if rows:
                await _store_customers(sessions, vault, rows, now, zone, tally)
            if progress is not None:
                progress(processed)
    return tally.report()


async def _store_customers(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    rows: Sequence[_CustomerRow],
    now: datetime,
    tz: tzinfo,
    tally: _Tally,
) -> None:
    async with sessions.begin() as session:
        found = await session.scalars(
            select(Customer).where(Customer.external_id.in_([r.external_id for r in rows]))
        )
        existing = {c.external_id: c for c in found}
        for row in rows:
            customer = existing.get(row.external_id)
            if customer is None:
                customer = Customer(external_id=row.external_id)
                _apply_customer(customer, row.values, row.digest, vault, now, new=True)
                session.add(customer)
                tally.created += 1
                continue
            # Checked on every run, not only when the row changed: a key rotation changes
            # every digest, and the file may say again what the person took away.
            hold = hold_for(customer, row.values, tz)
            digest = (
                row.digest
                if hold.values == row.values
                else _row_digest(vault, row.external_id, hold.values)
            )
            reasons = list(hold.withheld)
            if customer.source_digest == digest:
                tally.unchanged += 1
            elif hold.paused:
                reasons += hold.paused
                tally.unchanged += 1
            else:
                _apply_customer(customer, hold.values, digest, vault, now, new=False)
                tally.updated += 1
            if reasons:
                tally.withheld.append(Withheld(row.line, "; ".join(reasons)))


async def import_purchases(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    source: Source,
    *,
    tz: tzinfo | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> ImportReport:
    """Create or update purchases from a CSV file, each linked to a customer by its id.

    A purchase whose customer is not in the directory is rejected, so import
    the customers first. Batches, progress and ``tz`` work as in
    :func:`import_customers`; a purchase is the same when every column is.
    """
    zone = tz or ZoneInfo(DEFAULT_TIMEZONE)
    tally = _Tally()
    with _open(source) as stream:
        reader = _Reader(stream, _PURCHASES)
        for processed, batch in _batches(reader, batch_size, tally, "purchase_id"):
            rows: list[_PurchaseRow] = []
            for line, values in batch:
                try:
                    rows.append(_parse_purchase(values, line, zone))
                except _Invalid as exc:
                    tally.rejected.append(Rejected(line, str(exc)))
            if rows:
                await _store_purchases(sessions, vault, rows, tally)
            if progress is not None:
                progress(processed)
    return tally.report()


async def _store_purchases(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    rows: Sequence[_PurchaseRow],
    tally: _Tally,
) -> None:
    async with sessions.begin() as session:
        linked = await session.execute(
            select(Customer.external_id, Customer.id).where(
                Customer.external_id.in_({r.customer_external_id for r in rows})
            )
        )
        owners = {external_id: pk for external_id, pk in linked}
        found = await session.scalars(
            select(Purchase).where(Purchase.external_id.in_([r.external_id for r in rows]))
        )
        existing = {p.external_id: p for p in found}
        for row in rows:
            customer_id = owners.get(row.customer_external_id)
            if customer_id is None:
                tally.rejected.append(
                    Rejected(row.line, "customer_id: no customer with this id in the directory")
                )
                continue
            purchase = existing.get(row.external_id)
            if purchase is None:
                purchase = Purchase(external_id=row.external_id)
                _apply_purchase(purchase, customer_id, row, vault)
                session.add(purchase)
                tally.created += 1
            elif not _purchase_differs(purchase, customer_id, row, vault):
                tally.unchanged += 1
            else:
                _apply_purchase(purchase, customer_id, row, vault)
                tally.updated += 1


# -- looking up ------------------------------------------------------------------------


async def find_customer(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    *,
    phone: str | None = None,
    email: str | None = None,
    iin: str | None = None,
) -> CustomerRecord | None:
    """The customer with every identifier given (in any usual spelling), with purchases.

    Raises :class:`~workflows.identity.InvalidIdentifier` for an identifier
    that cannot be one, and :class:`ValueError` when none is given. When
    several customers share the identifiers, the one imported first wins.
    """
    conditions = []
    if phone is not None:
        conditions.append(
            Customer.phone_index == vault.blind_index("phone", normalize_phone(phone))
        )
    if email is not None:
        conditions.append(
            Customer.email_index == vault.blind_index("email", normalize_email(email))
        )
    if iin is not None:
        conditions.append(Customer.iin_index == vault.blind_index("iin", validate_iin(iin)))
    if not conditions:
        raise ValueError("give a phone, an e-mail or an IIN to look for")
    async with sessions() as session:
        customer = await session.scalar(
            select(Customer).where(*conditions).order_by(Customer.id).limit(1)
        )
        if customer is None:
            return None
        return await customer_record(session, vault, customer)


async def customer_record(
    session: AsyncSession, vault: Vault, customer: Customer
) -> CustomerRecord:
    """A customer row, decrypted, with its purchases."""
    purchases = await session.scalars(
        select(Purchase)
        .where(Purchase.customer_id == customer.id)
        .order_by(Purchase.purchased_at, Purchase.id)
    )
    bought = tuple(
        PurchaseRecord(
            purchase_id=p.external_id,
            purchased_at=p.purchased_at,
            description=vault.decrypt(p.description_enc),
            amount=p.amount,
        )
        for p in purchases
    )
    born = vault.decrypt(customer.birth_date_enc)
    return CustomerRecord(
        id=customer.external_id,
        full_name=vault.decrypt(customer.full_name_enc),
        phone=vault.decrypt(customer.phone_enc),
        email=vault.decrypt(customer.email_enc),
        iin=vault.decrypt(customer.iin_enc),
        gender=vault.decrypt(customer.gender_enc),
        birth_date=date.fromisoformat(born) if born else None,
        language=customer.language,
        marketing_consent=customer.marketing_consent,
        registered_at=customer.registered_at,
        imported_at=customer.imported_at,
        updated_at=customer.updated_at,
        purchases=bought,
    )
