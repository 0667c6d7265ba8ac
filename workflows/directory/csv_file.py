"""Reading a CSV file of the shop: the header checked, the rows streamed with their line.

The file may come from a spreadsheet: a byte-order mark is dropped, the
delimiter (``;``, ``,`` or tab) is the one the header uses most. A problem
with the file as a whole is an :class:`ImportFileError`; a row of the wrong
width is :class:`Rejected` with its line, and the import goes on.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from os import PathLike
from typing import TextIO

CUSTOMER_COLUMNS = (
    "id", "full_name", "phone", "email", "iin", "gender", "birth_date", "language",
    "marketing_consent", "created_at",
)  # fmt: skip
PURCHASE_COLUMNS = ("customer_id", "purchase_id", "purchased_at", "description", "amount")

Source = str | PathLike[str] | TextIO


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (no header, unknown columns, not UTF-8)."""


@dataclass(frozen=True)
class Rejected:
    """A row left out of the import: its line in the file and why, without its values."""

    line: int
    reason: str


@dataclass(frozen=True)
class Layout:
    """The columns one kind of file may have, and those it must."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]


CUSTOMERS = Layout("customer", CUSTOMER_COLUMNS, ("id",))
PURCHASES = Layout("purchase", PURCHASE_COLUMNS, ("customer_id", "purchase_id"))


def open_source(source: Source) -> AbstractContextManager[TextIO]:
    """A path opened as UTF-8 text, or the open text file itself (left open)."""
    if isinstance(source, str | PathLike):
        # utf-8-sig drops the byte-order mark spreadsheet programs put in front.
        return open(source, encoding="utf-8-sig", newline="")
    return nullcontext(source)


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class RowReader:
    """Streams the rows of a CSV file as ``(line, values)`` with the header checked."""

    def __init__(self, stream: TextIO, layout: Layout) -> None:
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
    with open_source(source) as stream:
        RowReader(stream, PURCHASES if purchases else CUSTOMERS)
