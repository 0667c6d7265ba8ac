"""CSV that people open in a spreadsheet: no cell of it runs as a formula.

Exports carry words nobody on staff wrote: a person's description of the data
concerned, a Telegram display name. A spreadsheet runs a cell beginning with
``=``, ``+``, ``-`` or ``@`` (and one beginning with a tab or a carriage
return, which it skips first) as a formula, and a formula can send the cells
beside it to a stranger's server (``=HYPERLINK("http://…?"&A2,…)``) or start a
program. Following OWASP's advice on CSV injection, such a cell is written
with a leading ``'``, which the spreadsheet shows as text and does not run.
Every CSV the desk writes goes through :class:`SafeWriter` or
:class:`SafeDictWriter`; JSON, read by programs, keeps the values as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

# What a spreadsheet takes as the start of a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """``value`` as a spreadsheet may open it: text that would run gets a leading ``'``.

    Numbers, booleans and ``None`` are left to the CSV writer: a negative
    number is a number to a spreadsheet, not a formula.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeWriter:
    """:func:`csv.writer` whose every cell goes through :func:`safe_cell`."""

    def __init__(self, out: Any, **options: Any) -> None:
        self._writer = csv.writer(out, **options)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([safe_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


# DictWriter is generic only to the type checker before Python 3.12.
if TYPE_CHECKING:
    _DictWriter = csv.DictWriter[str]
else:
    _DictWriter = csv.DictWriter


class SafeDictWriter(_DictWriter):
    """:class:`csv.DictWriter` whose every value goes through :func:`safe_cell`."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({key: safe_cell(value) for key, value in rowdict.items()})

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:
        # DictWriter.writerows goes to the underlying writer directly, past writerow.
        for rowdict in rowdicts:
            self.writerow(rowdict)
