"""The register page's charts, drawn by matplotlib as inline SVG (nothing to fetch at view time).

Only ``aina-dsr report`` imports this module: matplotlib takes a while to load,
and no other command needs it. Figures are drawn through the SVG backend's
canvas directly (no pyplot, no interactive backend, no global state), and each
SVG gets its own id salt so that several can sit in one page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from datetime import date, timedelta

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workflows.register.figures import OpenRequest, RegisterFigures

# Colour-blind safe (Okabe-Ito), one per kind in the order the page lists them; the
# vermilion is kept for what is late, so no kind wears it.
PALETTE = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442", "#999999", "#000000",
    "#7F4F24",
)  # fmt: skip
LATE = "#D55E00"
ON_TRACK = "#0072B2"
TODAY = "#333333"
# More open requests than this make the timeline unreadable; the page says how many more
# there are, and the overdue table lists every late one.
TIMELINE_ROWS = 40
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def _svg(figure: Figure, salt: str) -> str:
    """The figure as an ``<svg>`` element, without the XML prologue."""
    out = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        FigureCanvasSVG(figure)  # the SVG backend's canvas: no pyplot, no window
        figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    text = out.getvalue()
    # The prologue and the RDF metadata name schema URLs; the page needs neither.
    return _METADATA.sub("", text[text.index("<svg") :])


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    figure.patch.set_facecolor("white")
    return figure


def by_month(figures: RegisterFigures, labels: Mapping[str, str], title: str) -> str:
    """Requests received per month, one stacked colour per kind."""
    figure = _figure(8, 3.6)
    axes = figure.add_subplot()
    months = list(figures.months)
    positions = range(len(months))
    bottom = [0] * len(months)
    for colour, kind in zip(PALETTE * 2, figures.by_kind, strict=False):
        counts = [figures.by_kind_month.get(kind, {}).get(month, 0) for month in months]
        axes.bar(positions, counts, bottom=bottom, color=colour, label=labels.get(kind, kind))
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axes.set_xticks(list(positions), months, rotation=45 if len(months) > 8 else 0)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title, loc="left")
    axes.spines[["top", "right"]].set_visible(False)
    if figures.by_kind:
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _svg(figure, "by-month")


def on_time_by_kind(figures: RegisterFigures, labels: Mapping[str, str], title: str) -> str:
    """The share answered by the deadline, per kind (100 % is every answer on time)."""
    kinds = list(figures.on_time_by_kind)
    figure = _figure(8, 0.5 + 0.45 * max(len(kinds), 1))
    axes = figure.add_subplot()
    rates = [100 * (figures.on_time_by_kind[kind].rate or 0) for kind in kinds]
    colours = [ON_TRACK if rate >= 100 else LATE for rate in rates]
    axes.barh([labels.get(kind, kind) for kind in kinds], rates, color=colours)
    for row, kind in enumerate(kinds):
        counts = figures.on_time_by_kind[kind]
        axes.text(101, row, f"{counts.on_time}/{counts.answered}", va="center", fontsize=9)
    axes.set_xlim(0, 112)
    axes.invert_yaxis()
    axes.set_title(title, loc="left")
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure, "on-time")


def timeline(
    items: Sequence[OpenRequest], today: date, title: str, today_label: str, overdue_label: str
) -> str:
    """Each open request from its receipt to its deadline; past due, on to today in red."""
    rows = list(items[:TIMELINE_ROWS])
    first = min([item.received for item in rows] + [today])

    def x(day: date) -> int:  # days since the earliest receipt; a day's bar covers the day
        return (day - first).days

    figure = _figure(8, 1.2 + 0.32 * max(len(rows), 1))
    axes = figure.add_subplot()
    late_labelled = False
    for row, item in enumerate(rows):
        due = item.due or today
        axes.barh(row, max(x(due) + 1 - x(item.received), 0.5), left=x(item.received),
                  color=ON_TRACK, height=0.5)  # fmt: skip
        if item.overdue:
            label = None if late_labelled else overdue_label
            axes.barh(row, x(today) - x(due), left=x(due) + 1, color=LATE, height=0.5,
                      label=label)  # fmt: skip
            late_labelled = True
    axes.axvline(x(today) + 0.5, color=TODAY, linestyle="--", linewidth=1, label=today_label)
    last = max([x(item.due or today) + 1 for item in rows] + [x(today) + 1])
    ticks = [round(last * step / 5) for step in range(6)]
    axes.set_xticks(ticks, [(first + timedelta(days=tick)).isoformat() for tick in ticks])
    axes.set_yticks(range(len(rows)), [item.reference for item in rows], fontsize=8)
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.set_title(title, loc="left", pad=24)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False, fontsize=8)
    return _svg(figure, "timeline")


def shares(counts: Mapping[str, int], title: str, salt: str) -> str:
    """A small horizontal bar per value (channels, languages)."""
    names = list(counts)
    figure = _figure(3.8, 0.6 + 0.4 * max(len(names), 1))
    axes = figure.add_subplot()
    axes.barh(names, [counts[name] for name in names], color=ON_TRACK)
    axes.invert_yaxis()
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title, loc="left")
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure, salt)
