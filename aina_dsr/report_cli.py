"""``aina-dsr report``: the register as one self-contained page, for the officer and regulator."""

from __future__ import annotations

import asyncio
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from aina_dsr.failures import EXIT_WRONG_INPUT, say
from aina_dsr.settings import load_settings
from aina_dsr.wiring import open_core
from workflows.register.figures import RegisterFigures, register_figures


def _day(option: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        say(f"{option} {value!r}: give the date as YYYY-MM-DD")
        raise typer.Exit(EXIT_WRONG_INPUT) from None


class PageLanguage(StrEnum):
    KK = "kk"
    RU = "ru"
    EN = "en"


async def _figures(start: date | None, end: date | None) -> tuple[RegisterFigures, str]:
    settings = load_settings()
    async with open_core(settings) as core:
        # The same views, clock and overdue rule as `requests list --json`.
        views = await core.service.list_requests()
        figures = register_figures(views, core.calendar, core.clock.now(), start=start, end=end)
        return figures, settings.timezone


def report(
    html: Annotated[Path, typer.Option("--html", help="Write the page to this file.")],
    start: Annotated[
        str | None, typer.Option("--from", help="Requests received on or after, YYYY-MM-DD.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Requests received on or before, YYYY-MM-DD.")
    ] = None,
    language: Annotated[
        PageLanguage, typer.Option("--language", help="The page's language: kk, ru or en.")
    ] = PageLanguage.EN,
) -> None:
    """The register as one HTML page with charts (nothing loaded from the network)."""
    first, last = _day("--from", start), _day("--to", end)
    if first is not None and last is not None and first > last:
        say(f"--from {first} is after --to {last}")
        raise typer.Exit(EXIT_WRONG_INPUT)
    figures, timezone = asyncio.run(_figures(first, last))
    # matplotlib is loaded here only: every other command starts without it.
    from workflows.register.page import register_page

    html.write_text(register_page(figures, timezone, language.value), encoding="utf-8")
    typer.echo(f"{figures.total} request(s) in the register page {html}", err=True)
