"""The access report as a PDF: A4 pages set in DejaVu Sans, every value complete.

Apart from :mod:`workflows.fulfilment.access_report` so that fpdf2 (a third of a
second to import) is loaded only when a report is made, not by every process
that can approve a request.
"""

from __future__ import annotations

import math
from importlib.resources import files
from typing import Any

from fpdf import FPDF
from fpdf.enums import MethodReturnValue, XPos, YPos

from workflows.fulfilment.access_report import (
    POLICY_SECTIONS,
    AccessReport,
    ReportItem,
    ReportSection,
)
from workflows.i18n import catalogue, format_date

_FONT = "DejaVu"


def render_pdf(report: AccessReport) -> bytes:
    """The report as a PDF document with complete values; its metadata names no person."""
    pdf = _ReportPDF(footer_text=report.text("access.pdf.footer"))
    pdf.set_title(report.text("access.title"))
    pdf.set_author(catalogue().text(report.language, "context.company"))
    pdf.set_creator("AINA Privacy Desk")
    pdf.set_lang(report.language)
    pdf.set_creation_date(report.generated_at)
    pdf.add_page()

    pdf.set_font(_FONT, "B", 16)
    pdf.multi_cell(0, 8, report.text("access.title"), align="L", **_NEXT_LINE)
    pdf.set_font(_FONT, "", 10)
    pdf.ln(1)
    for line in (
        report.text("access.reference", reference=report.reference),
        report.text("access.date", date=format_date(report.language, report.generated_at.date())),
    ):
        pdf.multi_cell(0, 5, line, align="L", **_NEXT_LINE)
    pdf.ln(2)
    for line in (report.text("access.intro"), report.text("access.pdf.keep_safe")):
        pdf.multi_cell(0, 5, line, align="L", **_NEXT_LINE)
        pdf.ln(1)

    for section in report.sections:
        _pdf_section(pdf, section)
    return bytes(pdf.output())


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


def _pdf_section(pdf: FPDF, section: ReportSection) -> None:
    # A heading is kept with at least a few lines of what follows it.
    if pdf.will_page_break(24):
        pdf.add_page()
    pdf.ln(3)
    pdf.set_font(_FONT, "B", 12)
    pdf.multi_cell(0, 6, section.title, align="L", **_NEXT_LINE)
    pdf.set_font(_FONT, "", 10)
    pdf.ln(1)
    bullets = section.key in POLICY_SECTIONS and len(section.paragraphs) > 1
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


def _rows(pdf: FPDF, item: ReportItem) -> list[tuple[str, str]]:
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
