"""Reading a CSV file of the shop: the header checked, the rows streamed with their line.

The file may come from a spreadsheet: its charset is found by decoding it
strictly as UTF-8 with a byte-order mark, UTF-16 (Excel's "Unicode text", which
always has one), UTF-8, then windows-1251 (Excel's "CSV" on a Russian
Windows), the first that reads the whole file; the delimiter (``;``, ``,`` or
tab) is the one the header uses most. Line numbers are the file's own: a
quoted field over several lines counts all of them. A problem with the file as
a whole is an :class:`ImportFileError`; a row of the wrong width is
:class:`Rejected` with its line, and the import goes on.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
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
    """The file cannot be imported (no header, unknown columns, not text); ``line`` when
    the problem is at a line past the header, where the rows before it were read."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


# Codec -> the charset's name as the operator knows it.
CHARSETS = {
    "utf-8-sig": "UTF-8 with BOM",
    "utf-16": "UTF-16",
    "utf-8": "UTF-8",
    "cp1251": "windows-1251",
}
_CHUNK = 1 << 20
_BINARY_PROBE = 8000
# .xlsx (a ZIP archive) and .xls (an OLE2 compound file), saved under a .csv name.
_WORKBOOKS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
# Excel writes "?" for a letter windows-1251 lacks (Kazakh ә, ғ, қ, ң, ө, ұ, ү, һ): a "?"
# right before a Cyrillic letter is one of those.
_LOST_LETTER = re.compile(r"\?[А-Яа-яЁёІі]")


def _reads_as(path: str | PathLike[str], codec: str) -> bool:
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    try:
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def detect_codec(path: str | PathLike[str]) -> str:
    """The codec that reads the whole file (a key of :data:`CHARSETS`), or ImportFileError."""
    with open(path, "rb") as file:
        head = file.read(_BINARY_PROBE)
    if head.startswith(_WORKBOOKS):
        raise ImportFileError(
            'this is an Excel workbook, not CSV; save it as "CSV UTF-8 (comma delimited)"'
        )
    if head.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    elif b"\0" in head:
        # As git tells binary files: a NUL in the first 8000 bytes is no text without a BOM.
        raise ImportFileError("the file is not text (it holds NUL bytes); it needs to be CSV")
    else:
        candidates = ["utf-8", "cp1251"]
    for codec in candidates:
        if _reads_as(path, codec):
            return codec
    raise ImportFileError(
        f"the file is not {CHARSETS[candidates[0]]} text; "
        'save it from Excel as "CSV UTF-8 (comma delimited)"'
    )


def charset_of(stream: TextIO) -> str | None:
    """The operator's name for the charset an open file is read in, if it is one we name."""
    codec = getattr(stream, "encoding", None)
    return CHARSETS.get(codecs.lookup(codec).name if codec else "", codec)


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
    """A path opened as text in the charset it is written in, or the open text file itself
    (left open)."""
    if isinstance(source, str | PathLike):
        return open(source, encoding=detect_codec(source), newline="")
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
        self.charset = charset_of(stream)
        # Lines where a letter windows-1251 lacks became "?" (only a windows-1251 file).
        self.letters_lost: list[int] = []
        try:
            first = stream.readline()
        except UnicodeDecodeError:
            raise ImportFileError(
                f"line 1: the file is not {self.charset or 'UTF-8'} text"
            ) from None
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

    @property
    def next_line(self) -> int:
        """The line the next row starts on: every row before it has been read."""
        return self._reader.line_num + 1

    def __iter__(self) -> Iterator[tuple[int, dict[str, str] | Rejected]]:
        width = len(self.header)
        line = self._reader.line_num + 1
        while True:
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise ImportFileError(
                    f"line {line}: the file is not {self.charset or 'UTF-8'} text", line=line
                ) from None
            except csv.Error as exc:
                raise ImportFileError(f"line {line}: {exc}", line=line) from None
            start, line = line, self._reader.line_num + 1
            if not any(value.strip() for value in fields):
                continue
            if self.charset == "windows-1251" and any(_LOST_LETTER.search(v) for v in fields):
                self.letters_lost.append(start)
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
