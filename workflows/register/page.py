"""The register as one self-contained HTML page: styles and charts inline, nothing fetched.

The page is for the privacy officer and the authorised body, in Kazakh, Russian
or English (``register.po``). It names requests by their reference only: no
name, phone, e-mail or Telegram id reaches it (the figures it is drawn from
hold none). Every figure is also in a table, each cell marked with ``data-*``
attributes in the register's own codes, so that a program can read it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from html import escape

from workflows.i18n import COMPANY, catalogue, format_date, kind_name, pick_language, status_name
from workflows.register import charts
from workflows.register.figures import OnTime, RegisterFigures

_STYLE = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 2rem auto;
       max-width: 62rem; padding: 0 1rem; color: #222; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
.meta { color: #555; margin: .1rem 0; }
.cards { display: flex; flex-wrap: wrap; gap: .8rem; margin: 1.4rem 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6rem 1rem; min-width: 9rem; }
.card b { display: block; font-size: 1.6rem; }
.card.late b { color: #D55E00; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; }
td.num { text-align: right; }
td.late { color: #D55E00; font-weight: bold; }
#overdue td:nth-child(1), #overdue td:nth-child(3) { white-space: nowrap; }
.chart svg { max-width: 100%; height: auto; }
.pair { display: flex; flex-wrap: wrap; gap: 2rem; }
.note { color: #555; font-size: .85rem; }
"""


@dataclass(frozen=True)
class _Words:
    """The page's words in one language, escaped for HTML."""

    language: str

    def __call__(self, msgid: str, **params: object) -> str:
        return escape(catalogue().text(self.language, f"report.{msgid}", **params))

    def kind(self, kind: str) -> str:
        try:
            return escape(kind_name(self.language, kind))
        except LookupError:
            return escape(kind)

    def status(self, status: str) -> str:
        try:
            return escape(status_name(self.language, status))
        except LookupError:
            return escape(status)

    def named(self, group: str, code: str) -> str:
        """A channel's or a language's name, plain text (the code for one without words)."""
        try:
            return catalogue().text(self.language, f"report.{group}.{code}")
        except LookupError:
            return code

    def day(self, day: date) -> str:
        return escape(format_date(self.language, day))


def _rate(counts: OnTime) -> str:
    return "—" if counts.rate is None else f"{100 * counts.rate:.0f}%"


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _table(table_id: str, head: Iterable[str], rows: Iterable[str]) -> str:
    header = "".join(f"<th>{cell}</th>" for cell in head)
    body = "".join(rows)
    return f'<table id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _counts_table(w: _Words, group: str, counts: Mapping[str, int]) -> str:
    rows = (
        f"<tr><td>{escape(w.named(group, name))}</td>"
        f'<td class="num" data-{group}="{escape(name)}">{count}</td></tr>'
        for name, count in counts.items()
    )
    return _table(f"{group}s", (w(f"column.{group}"), w("column.requests")), rows)


def _by_month(w: _Words, figures: RegisterFigures) -> str:
    rows = []
    for kind in figures.by_kind:
        cells = "".join(
            f'<td class="num" data-kind="{escape(kind)}" data-month="{month}">'
            f"{figures.by_kind_month[kind].get(month, 0)}</td>"
            for month in figures.months
        )
        total = (
            f'<td class="num" data-kind="{escape(kind)}" data-month="all">'
            f"{figures.by_kind[kind]}</td>"
        )
        rows.append(f"<tr><td>{w.kind(kind)}</td>{cells}{total}</tr>")
    return _table("by-month", (w("column.kind"), *figures.months, w("column.total")), rows)


def _on_time(w: _Words, figures: RegisterFigures) -> str:
    def row(kind: str, label: str, counts: OnTime, median: float | None) -> str:
        return (
            f'<tr data-kind="{escape(kind)}"><td>{label}</td>'
            f'<td class="num" data-figure="answered">{counts.answered}</td>'
            f'<td class="num" data-figure="on-time">{counts.on_time}</td>'
            f'<td class="num" data-figure="rate">{_rate(counts)}</td>'
            f'<td class="num" data-figure="median">{_days(median)}</td></tr>'
        )

    rows = [
        row(kind, w.kind(kind), counts, figures.median_by_kind.get(kind))
        for kind, counts in figures.on_time_by_kind.items()
    ]
    rows.append(row("all", w("on_time.all"), figures.on_time, figures.median_working_days))
    columns = ("kind", "answered", "on_time", "rate", "median")
    return _table("on-time", [w(f"column.{column}") for column in columns], rows)


def _overdue(w: _Words, figures: RegisterFigures) -> str:
    rows = [
        f'<tr data-reference="{escape(item.reference)}"><td>{escape(item.reference)}</td>'
        f"<td>{w.kind(item.kind)}</td>"
        f"<td>{item.due.isoformat() if item.due else '—'}</td>"
        f'<td class="num late" data-figure="days-overdue">{item.days_overdue}</td>'
        f"<td>{w.status(item.status)}</td></tr>"
        for item in figures.overdue
    ]
    if not rows:
        return f'<p id="overdue-none">{w("overdue.none")}</p>'
    columns = ("reference", "kind", "due", "days_overdue", "status")
    return _table("overdue", [w(f"column.{column}") for column in columns], rows)


def _timeline(w: _Words, figures: RegisterFigures) -> str:
    if not figures.open:
        return f'<p id="open-none">{w("open.none")}</p>'
    text = catalogue().text
    chart = charts.timeline(
        figures.open,
        figures.today,
        text(w.language, "report.open.chart"),
        text(w.language, "report.open.today", date=figures.today.isoformat()),
        text(w.language, "report.open.overdue"),
    )
    more = ""
    if len(figures.open) > charts.TIMELINE_ROWS:
        shown = w("open.more", shown=charts.TIMELINE_ROWS, total=len(figures.open))
        more = f'<p class="note">{shown}</p>'
    return f'<div class="chart" id="timeline-chart">{chart}</div>{more}'


def _cards(w: _Words, figures: RegisterFigures) -> str:
    late = len(figures.overdue)
    cards = (
        ("total", str(figures.total), ""),
        ("open", str(len(figures.open)), ""),
        ("overdue", str(late), " late" if late else ""),
        ("on_time", _rate(figures.on_time), ""),
        ("median", _days(figures.median_working_days), ""),
    )
    boxes = "".join(
        f'<div class="card{extra}" data-card="{key}"><b>{value}</b>{w(f"card.{key}")}</div>'
        for key, value, extra in cards
    )
    return f'<div class="cards">{boxes}</div>'


def _head(w: _Words, figures: RegisterFigures, timezone: str) -> list[str]:
    company = escape(COMPANY[w.language])
    start, end = figures.period
    at = f"{w.day(figures.today)} {figures.generated_at:%H:%M}"
    return [
        "<!DOCTYPE html>",
        f'<html lang="{w.language}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{w('title')}: {company}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{w('title')}</h1>",
        f'<p class="meta" id="company">{company}</p>',
        f'<p class="meta" id="period">{w("period", start=w.day(start), end=w.day(end))}</p>',
        f'<p class="meta" id="generated">{w("generated", at=at, timezone=timezone)}</p>',
    ]


def register_page(figures: RegisterFigures, timezone: str, language: str = "en") -> str:
    """The whole page as one HTML document, in ``language`` (kk, ru or en)."""
    w = _Words(pick_language(language))

    def raw(msgid: str) -> str:  # for the charts: matplotlib writes its text escaped
        return catalogue().text(w.language, f"report.{msgid}")

    labels = {kind: kind_name(w.language, kind) for kind in figures.by_kind}
    month_chart = charts.by_month(figures, labels, raw("by_month.chart"))
    channels = {w.named("channel", code): n for code, n in figures.by_channel.items()}
    languages = {w.named("language", code): n for code, n in figures.by_language.items()}
    parts = [
        *_head(w, figures, timezone),
        _cards(w, figures),
        f"<h2>{w('by_month.heading')}</h2>",
        f'<div class="chart" id="by-month-chart">{month_chart}</div>',
        _by_month(w, figures),
        f"<h2>{w('on_time.heading')}</h2>",
    ]
    if figures.on_time_by_kind:
        chart = charts.on_time_by_kind(figures, labels, raw("on_time.chart"))
        parts.append(f'<div class="chart" id="on-time-chart">{chart}</div>')
    parts += [
        _on_time(w, figures),
        f'<p class="note">{w("on_time.note")}</p>',
        f"<h2>{w('open.heading')}</h2>",
        _timeline(w, figures),
        f"<h2>{w('overdue.heading')}</h2>",
        _overdue(w, figures),
        f"<h2>{w('channels.heading')}</h2>",
        '<div class="pair"><div>',
        f'<div class="chart">{charts.shares(channels, raw("channels.chart"), "channels")}</div>',
        _counts_table(w, "channel", figures.by_channel),
        "</div><div>",
        f'<div class="chart">{charts.shares(languages, raw("languages.chart"), "languages")}</div>',
        _counts_table(w, "language", figures.by_language),
        "</div></div>",
        f'<p class="note">{w("footer")}</p>',
        "</body></html>",
    ]
    return "\n".join(parts)
