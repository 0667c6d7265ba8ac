"""``aina-dsr directory``: what other company systems must stop doing with whose data."""

from __future__ import annotations

import asyncio
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from aina_dsr.settings import load_settings
from aina_dsr.wiring import open_core
from workflows.directory.sql_directory import SqlDirectory
from workflows.directory.suppressions import Suppression, suppressions_csv, suppressions_json

directory_app = typer.Typer(
    help="The customer directory's fulfilment side: the suppression list.",
    no_args_is_help=True,
)


class SuppressionFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


async def _suppressions() -> list[Suppression]:
    async with open_core(load_settings()) as core:
        directory = SqlDirectory(core.sessions, core.vault, core.clock)
        return await directory.suppressions()


@directory_app.command("export-suppressions")
def export_suppressions(
    fmt: Annotated[
        SuppressionFormat, typer.Option("--format", help="csv or json.")
    ] = SuppressionFormat.CSV,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Customers whose marketing or processing is stopped, or who are blocked or erased."""
    items = asyncio.run(_suppressions())
    text = (
        suppressions_json(items) + "\n"
        if fmt is SuppressionFormat.JSON
        else suppressions_csv(items)
    )
    if output is None:
        sys.stdout.write(text)
        return
    with output.open("w", encoding="utf-8", newline="") as out:
        out.write(text)
    typer.echo(f"{len(items)} customer(s) written to {output}", err=True)
