"""``aina-dsr retention``: the retention purge by hand (the scheduler runs it every night)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from aina_dsr.settings import load_settings
from aina_dsr.wiring import open_core
from workflows.privacy.retention import PurgeReport, describe, purge_closed

retention_app = typer.Typer(
    help="Drop what closed requests no longer need after DSR_RETENTION_DAYS.",
    no_args_is_help=True,
)


async def _purge(dry_run: bool) -> tuple[int, PurgeReport]:
    settings = load_settings()
    async with open_core(settings) as core:
        report = await purge_closed(
            core.sessions,
            core.vault,
            core.clock,
            retention_days=settings.retention_days,
            dry_run=dry_run,
        )
        return settings.retention_days, report


@retention_app.command("purge")
def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for other programs.")] = False,
) -> None:
    """Purge closed requests past retention now: evidence and audit log stay, the rest goes."""
    days, report = asyncio.run(_purge(dry_run))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "retention_days": days,
                    "dry_run": report.dry_run,
                    "requests": report.requests,
                    "skipped": report.skipped,
                    **report.counts(),
                }
            )
        )
        return
    typer.echo(f"retention {days} day(s){' (dry run: nothing changed)' if dry_run else ''}")
    for line in describe(report):
        typer.echo(f"  {line}")
