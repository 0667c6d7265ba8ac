"""The customer import: the shop's CSV files written into the directory, row by row counted.

The import streams the file (:mod:`workflows.directory.csv_file`), checks every
row (:mod:`workflows.directory.import_rows`) and stores it encrypted, with
blind indexes for phone, e-mail and IIN. A bad row is rejected with its line
and a reason that names the column and the problem, never the value, so the
report holds no personal data. Re-importing a file changes nothing: each
customer keeps a keyed digest of the row it came from. What the person had
erased or withdrawn through a request is never written back
(:mod:`workflows.directory.import_holds`).

Rows are committed in batches. An import either commits whole or raises
:class:`ImportStopped`, which says how many rows were committed and the line
it stopped at: a database error rolls back the batch in hand (the rows from
its first line on are not written); a file that cannot be read past some line
keeps the rows before that line; Ctrl-C lets the batch in hand finish first.
Importing the file again after the fix writes the rest and leaves the rest
unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.deadlines.calendar import DEFAULT_TIMEZONE
from workflows.directory.csv_file import (
    CUSTOMERS,
    PURCHASES,
    ImportFileError,
    Rejected,
    RowReader,
    Source,
    open_source,
)
from workflows.directory.import_holds import hold_for
from workflows.directory.import_rows import (
    CustomerRow,
    InvalidRow,
    PurchaseRow,
    parse_customer,
    parse_purchase,
    row_digest,
)
from workflows.persistence.tables import Customer, Purchase
from workflows.privacy.vault import Vault

Progress = Callable[[int], None]


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
    # The charset the file was read in ("windows-1251"), None for a stream of text.
    charset: str | None = None
    # Lines where Excel wrote "?" for a letter windows-1251 lacks (Kazakh ә, қ, ң, ...).
    letters_lost: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        return self.created + self.updated + self.unchanged + len(self.rejected)

    @property
    def committed(self) -> int:
        """Rows written or found unchanged: all of them in the database."""
        return self.created + self.updated + self.unchanged

    def as_dict(self) -> dict[str, Any]:
        return {
            "charset": self.charset,
            "letters_lost": list(self.letters_lost),
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected],
            "withheld": [{"line": w.line, "reason": w.reason} for w in self.withheld],
        }


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


def _purchase_differs(purchase: Purchase, customer_id: int, row: PurchaseRow, vault: Vault) -> bool:
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


def _apply_purchase(purchase: Purchase, customer_id: int, row: PurchaseRow, vault: Vault) -> None:
    """Write the row onto the purchase; a column the file lacks is left alone."""
    purchase.customer_id = customer_id
    if "purchased_at" in row.values:
        purchase.purchased_at = row.values["purchased_at"]
    if "description" in row.values:
        purchase.description_enc = vault.encrypt(row.values["description"])
    if "amount" in row.values:
        purchase.amount = row.values["amount"]


# -- importing -----------------------------------------------------------------------


class Interrupted(Exception):
    """The import was asked to stop (Ctrl-C) and stopped after the batch in hand."""

    def __init__(self) -> None:
        super().__init__("interrupted")


class ImportStopped(Exception):
    """The import stopped part-way: ``report`` counts what was committed before ``line``.

    ``cause`` is why: a database error, an :class:`ImportFileError` past the
    header, or :class:`Interrupted`.
    """

    def __init__(self, report: ImportReport, line: int, cause: BaseException) -> None:
        super().__init__(f"{report.committed} rows committed, stopped at line {line}: {cause}")
        self.report = report
        self.line = line
        self.cause = cause


class _Tally:
    def __init__(self) -> None:
        self.created = self.updated = self.unchanged = 0
        self.rejected: list[Rejected] = []
        self.withheld: list[Withheld] = []

    def mark(self) -> tuple[int, int, int, int, int]:
        return (
            self.created, self.updated, self.unchanged, len(self.rejected), len(self.withheld)
        )  # fmt: skip

    def restore(self, mark: tuple[int, int, int, int, int]) -> None:
        """Back to ``mark``: the batch since was rolled back."""
        self.created, self.updated, self.unchanged, rejected, withheld = mark
        del self.rejected[rejected:], self.withheld[withheld:]

    def report(self, reader: RowReader | None = None) -> ImportReport:
        rejected = tuple(sorted(self.rejected, key=lambda r: r.line))
        withheld = tuple(sorted(self.withheld, key=lambda w: w.line))
        report = ImportReport(self.created, self.updated, self.unchanged, rejected, withheld)
        if reader is None:
            return report
        return replace(report, charset=reader.charset, letters_lost=tuple(reader.letters_lost))


async def _commit(store: Coroutine[Any, Any, None]) -> None:
    """Run one batch's transaction to its end even if the import is cancelled meanwhile
    (Ctrl-C): then :class:`Interrupted` once it is committed, so the count is exact."""
    task = asyncio.ensure_future(store)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise Interrupted() from None


async def _run_batches(
    reader: RowReader,
    batches: Iterator[tuple[int, int, list[Any]]],
    tally: _Tally,
    store: Callable[[list[Any]], Coroutine[Any, Any, None]],
    progress: Progress | None,
) -> ImportReport:
    """Each batch parsed and stored in its own transaction; a stop part-way is
    :class:`ImportStopped` counting the batches committed before it."""
    try:
        for processed, first_line, batch in batches:
            mark = tally.mark()
            try:
                await _commit(store(batch))
            except Interrupted as exc:
                raise ImportStopped(tally.report(reader), reader.next_line, exc) from None
            except Exception as exc:
                tally.restore(mark)
                raise ImportStopped(tally.report(reader), first_line, exc) from exc
            if progress is not None:
                progress(processed)
    except ImportFileError as exc:
        if exc.line is None:
            raise
        raise ImportStopped(tally.report(reader), exc.line, exc) from None
    return tally.report(reader)


def _batches(
    reader: RowReader, batch_size: int, tally: _Tally, key: str
) -> Iterator[tuple[int, int, list[tuple[int, dict[str, str]]]]]:
    """Rows in batches ``(rows read so far, the batch's first line, rows)``, rejecting rows
    of the wrong width and ids seen before in the file. The rows before a line that cannot
    be read are a batch of their own, then the error."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    first_seen: dict[str, int] = {}
    batch: list[tuple[int, dict[str, str]]] = []
    processed = 0
    first_line = reader.next_line
    rows = iter(reader)
    while True:
        try:
            line, row = next(rows)
        except StopIteration:
            break
        except ImportFileError:
            if batch:
                yield processed, first_line, batch
            raise
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
            yield processed, first_line, batch
            batch, first_line = [], reader.next_line
    if batch or processed % batch_size:
        yield processed, first_line, batch


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

    async def store(batch: list[tuple[int, dict[str, str]]]) -> None:
        rows: list[CustomerRow] = []
        for line, values in batch:
            try:
                rows.append(parse_customer(values, line, vault, now, zone))
            except InvalidRow as exc:
                tally.rejected.append(Rejected(line, str(exc)))
        if rows:
            await _store_customers(sessions, vault, rows, now, zone, tally)

    with open_source(source) as stream:
        reader = RowReader(stream, CUSTOMERS)
        batches = _batches(reader, batch_size, tally, "id")
        return await _run_batches(reader, batches, tally, store, progress)


async def _store_customers(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    rows: Sequence[CustomerRow],
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
                else row_digest(vault, row.external_id, hold.values)
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

    async def store(batch: list[tuple[int, dict[str, str]]]) -> None:
        rows: list[PurchaseRow] = []
        for line, values in batch:
            try:
                rows.append(parse_purchase(values, line, zone))
            except InvalidRow as exc:
                tally.rejected.append(Rejected(line, str(exc)))
        if rows:
            await _store_purchases(sessions, vault, rows, tally)

    with open_source(source) as stream:
        reader = RowReader(stream, PURCHASES)
        batches = _batches(reader, batch_size, tally, "purchase_id")
        return await _run_batches(reader, batches, tally, store, progress)


async def _store_purchases(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    rows: Sequence[PurchaseRow],
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
