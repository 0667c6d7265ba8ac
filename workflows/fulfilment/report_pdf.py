"""The access report as a PDF: A4 pages in DejaVu Sans, a table of values per section.

DejaVu Sans has every Kazakh letter. A value too tall for a page (a long
message, many lines) is cut into rows that each fit one, so no value stops
the report; the document's metadata names no person.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any, Protocol

from fpdf import FPDF
from fpdf.enums import MethodReturnValue, XPos, YPos

_FONT = "DejaVu"
_NEXT_LINE: dict[str, Any] = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}
# A section's values are a table of two columns, label and value (shares of the width).
_COLUMNS = (38, 62)
_PADDING = 1.2
_LINE_HEIGHT = 5
# fpdf2 draws a table row on one page and raises ValueError for a taller one: a value
# of a few thousand characters, or of many lines, would stop the report. Such a value
# goes on in the rows below its first, at most this many lines a row: short enough
# that a page breaking before a row leaves little blank.
_ROW_LINES = 12


class Item(Protocol):
    """A labelled value of a section."""

    @property
    def label(self) -> str: ...

    @property
    def value(self) -> str: ...


class Section(Protocol):
    """A heading with paragraphs, then values."""

    @property
    def title(self) -> str: ...

    @property
    def paragraphs(self) -> tuple[str, ...]: ...

    @property
    def items(self) -> Sequence[Item]: ...

    @property
    def bullets(self) -> bool: ...


@dataclass(frozen=True)
class PdfFrame:
    """What every page and the document's metadata say: no personal data here."""

    title: str
    author: str
    footer: str
    language: str
    created: datetime
    head_lines: tuple[str, ...]  # reference and date, under the title
    intro: tuple[str, ...]  # paragraphs before the first section


def render_pdf(frame: PdfFrame, sections: Sequence[Section]) -> bytes:
    """The PDF document of ``sections`` inside ``frame``."""
    pdf = _ReportPDF(footer_text=frame.footer)
    pdf.set_title(frame.title)
    pdf.set_author(frame.author)
    pdf.set_creator("AINA Privacy Desk")
    pdf.set_lang(frame.language)
    pdf.set_creation_date(frame.created)
    pdf.add_page()

    pdf.set_font(_FONT, "B", 16)
    pdf.multi_cell(0, 8, frame.title, align="L", **_NEXT_LINE)
    pdf.set_font(_FONT, "", 10)
    pdf.ln(1)
    for line in frame.head_lines:
        pdf.multi_cell(0, 5, line, align="L", **_NEXT_LINE)
    pdf.ln(2)
    for line in frame.intro:
        pdf.multi_cell(0, 5, line, align="L", **_NEXT_LINE)
        pdf.ln(1)

    for section in sections:
        _pdf_section(pdf, section)
    return bytes(pdf.output())


class _ReportPDF(FPDF):
    """An A4 page set in DejaVu Sans (it has every Kazakh letter), numbered in the footer."""

    def __init__(self, *, footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self._footer_text = footer_text
        fonts = files("workflows") / "fonts"
        self.add_font(_FONT, "", str(fonts / "DejaVuSans.ttf"))
        self.add_font(_FONT, "B", str(fonts / "DejaVuSans-Bold.ttf"))
        self.set_margins(18, 18, 18)
        self.set_auto_page_break(auto=True, margin=18)

    def footer(self) -> None:
        self.set_y(-13)
        self.set_font(_FONT, "", 8)
        self.set_text_color(110)
        self.cell(0, 5, f"{self._footer_text} · {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0)


def _pdf_section(pdf: FPDF, section: Section) -> None:
    # A heading is kept with at least a few lines of what follows it.
    if pdf.will_page_break(24):
        pdf.add_page()
    pdf.ln(3)
    pdf.set_font(_FONT, "B", 12)
    pdf.multi_cell(0, 6, section.title, align="L", **_NEXT_LINE)
    pdf.set_font(_FONT, "", 10)
    pdf.ln(1)
    bullets = section.bullets and len(section.paragraphs) > 1
    for paragraph in section.paragraphs:
        if bullets:
            pdf.cell(5, 5, "•")  # the text after it wraps under itself, not under the bullet
        pdf.multi_cell(0, 5, paragraph, align="L", **_NEXT_LINE)
        pdf.ln(0.8)
    if section.items:
        with pdf.table(
            col_widths=_COLUMNS,
            first_row_as_headings=False,
            borders_layout="HORIZONTAL_LINES",
            text_align="LEFT",
            line_height=_LINE_HEIGHT,
            padding=_PADDING,
        ) as table:
            for item in section.items:
                for label, value in _rows(pdf, item):
                    row = table.row()
                    row.cell(label)
                    row.cell(value)


def _rows(pdf: FPDF, item: Item) -> list[tuple[str, str]]:
    """The table rows of one item: one, unless it is too tall for a page (see _ROW_LINES).

    A long word is broken between letters (fpdf2's wrapping does so for a word wider
    than its column), and the lines are cut here into rows that each fit a page.
    """
    # 1 mm narrower than the cell's text, so the table does not wrap these lines again.
    widths = [pdf.epw * share / sum(_COLUMNS) - 2 * _PADDING - 1 for share in _COLUMNS]
    label, value = _lines(pdf, item.label, widths[0]), _lines(pdf, item.value, widths[1])
    tallest = max(len(label), len(value))
    if tallest <= _ROW_LINES:
        return [(item.label, item.value)]
    return [
        (
            "\n".join(label[start : start + _ROW_LINES]),
            "\n".join(value[start : start + _ROW_LINES]),
        )
        for start in range(0, _ROW_LINES * math.ceil(tallest / _ROW_LINES), _ROW_LINES)
    ]


def _lines(pdf: FPDF, text: str, width: float) -> list[str]:
    """``text`` wrapped to ``width`` in the current font, as the table would wrap it."""
    lines = pdf.multi_cell(width, _LINE_HEIGHT, text, dry_run=True, output=MethodReturnValue.LINES)
    assert isinstance(lines, list)  # output=LINES gives the lines alone
    return [str(line) for line in lines]
