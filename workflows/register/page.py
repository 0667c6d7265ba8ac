"""The register as one self-contained HTML page: styles and charts inline, nothing fetched.

The page is for the privacy officer and the authorised body. It names requests
by their reference only: no name, phone, e-mail or Telegram id reaches it (the
figures it is drawn from hold none). Every figure is also in a table (each cell
marked with ``data-*`` attributes, so that a program can read the page back).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape

from workflows.i18n import COMPANY, kind_name
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
.chart svg { max-width: 100%; height: auto; }
.pair { display: flex; flex-wrap: wrap; gap: 2rem; }
.note { color: #555; font-size: .85rem; }
"""


def _kind(kind: str) -> str:
    try:
        return kind_name("en", kind)
    except LookupError:
        return kind


def _rate(counts: OnTime) -> str:
    return "—" if counts.rate is None else f"{100 * counts.rate:.0f}%"


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _period(figures: RegisterFigures) -> str:
    start = figures.start.isoformat() if figures.start else "the first request"
    end = figures.end.isoformat() if figures.end else "today"
    return f"Requests received from {start} to {end}"


def _table(table_id: str, head: Iterable[str], rows: Iterable[str]) -> str:
    header = "".join(f"<th>{escape(cell)}</th>" for cell in head)
    body = "".join(rows)
    return f'<table id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _counts_table(table_id: str, attribute: str, counts: Mapping[str, int]) -> str:
    rows = (
        f"<tr><td>{escape(name)}</td>"
        f'<td class="num" data-{attribute}="{escape(name)}">{count}</td></tr>'
        for name, count in counts.items()
    )
    return _table(table_id, (attribute, "requests"), rows)


def _by_month(figures: RegisterFigures) -> str:
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
        rows.append(f"<tr><td>{escape(_kind(kind))} ({escape(kind)})</td>{cells}{total}</tr>")
    return _table("by-month", ("kind", *figures.months, "total"), rows)


def _on_time(figures: RegisterFigures) -> str:
    def row(kind: str, label: str, counts: OnTime, median: float | None) -> str:
        return (
            f'<tr data-kind="{escape(kind)}"><td>{escape(label)}</td>'
            f'<td class="num" data-figure="answered">{counts.answered}</td>'
            f'<td class="num" data-figure="on-time">{counts.on_time}</td>'
            f'<td class="num" data-figure="rate">{_rate(counts)}</td>'
            f'<td class="num" data-figure="median">{_days(median)}</td></tr>'
        )

    rows = [
        row(kind, f"{_kind(kind)} ({kind})", counts, figures.median_by_kind.get(kind))
        for kind, counts in figures.on_time_by_kind.items()
    ]
    rows.append(row("all", "All kinds", figures.on_time, figures.median_working_days))
    head = ("kind", "answered", "on time", "on-time rate", "median working days to answer")
    return _table("on-time", head, rows)


def _overdue(figures: RegisterFigures) -> str:
    rows = [
        f'<tr data-reference="{escape(item.reference)}"><td>{escape(item.reference)}</td>'
        f"<td>{escape(_kind(item.kind))}</td>"
        f"<td>{item.due.isoformat() if item.due else '—'}</td>"
        f'<td class="num late" data-figure="days-overdue">{item.days_overdue}</td>'
        f"<td>{escape(item.status)}</td></tr>"
        for item in figures.overdue
    ]
    if not rows:
        return '<p id="overdue-none">No open request is past its deadline.</p>'
    return _table("overdue", ("reference", "kind", "due", "days overdue", "status"), rows)


def _timeline(figures: RegisterFigures) -> str:
    if not figures.open:
        return '<p id="open-none">No request is open.</p>'
    chart = charts.timeline(
        figures.open,
        figures.today,
        "Open requests: received → due",
        f"today, {figures.today.isoformat()}",
        "overdue",
    )
    more = len(figures.open) - charts.TIMELINE_ROWS
    note = (
        f'<p class="note">The {charts.TIMELINE_ROWS} soonest deadlines are drawn; '
        f"{more} more open requests are not.</p>"
        if more > 0
        else ""
    )
    return f'<div class="chart" id="timeline-chart">{chart}</div>{note}'


def _cards(figures: RegisterFigures) -> str:
    late = len(figures.overdue)
    cards = (
        ("total", "requests received", str(figures.total), ""),
        ("open", "open now", str(len(figures.open)), ""),
        ("overdue", "overdue now", str(late), " late" if late else ""),
        ("on-time", "answered on time", _rate(figures.on_time), ""),
        ("median", "median working days to answer", _days(figures.median_working_days), ""),
    )
    boxes = "".join(
        f'<div class="card{extra}" data-card="{key}"><b>{escape(value)}</b>{escape(label)}</div>'
        for key, label, value, extra in cards
    )
    return f'<div class="cards">{boxes}</div>'


def register_page(figures: RegisterFigures, timezone: str) -> str:
    """The whole page as one HTML document."""
    labels = {kind: _kind(kind) for kind in figures.by_kind}
    generated = figures.generated_at.strftime("%Y-%m-%d %H:%M")
    month_chart = charts.by_month(figures, labels, "Requests received per month, by kind")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Register of requests: {escape(COMPANY['en'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Register of data-subject requests</h1>",
        f'<p class="meta" id="company">{escape(COMPANY["en"])}</p>',
        f'<p class="meta" id="period">{escape(_period(figures))}</p>',
        f'<p class="meta" id="generated">Generated {generated} ({escape(timezone)})</p>',
        _cards(figures),
        "<h2>Requests by kind and month</h2>",
        f'<div class="chart" id="by-month-chart">{month_chart}</div>',
        _by_month(figures),
        "<h2>Answered on time</h2>",
    ]
    if figures.on_time_by_kind:
        chart = charts.on_time_by_kind(figures, labels, "Answered by the deadline, per kind")
        parts.append(f'<div class="chart" id="on-time-chart">{chart}</div>')
    parts += [
        _on_time(figures),
        '<p class="note">Answered: completed or rejected by staff (not cancelled by the person, '
        "not expired unverified). On time: closed by the deadline. Working days: Kazakhstan's "
        "calendar with the desk's transfers; the day of receipt does not count.</p>",
        "<h2>Open requests against their deadlines</h2>",
        _timeline(figures),
        "<h2>Overdue</h2>",
        _overdue(figures),
        "<h2>Channels and languages</h2>",
        '<div class="pair"><div>',
        f'<div class="chart">{charts.shares(figures.by_channel, "Channel", "channels")}</div>',
        _counts_table("channels", "channel", figures.by_channel),
        "</div><div>",
        f'<div class="chart">{charts.shares(figures.by_language, "Language", "languages")}</div>',
        _counts_table("languages", "language", figures.by_language),
        "</div></div>",
        '<p class="note">Requests are named by their reference only. Overdue: open past the end '
        "of the due day (days overdue are calendar days).</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
