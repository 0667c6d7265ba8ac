"""``aina-dsr audit``: proof that the audit log is intact."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from aina_dsr.settings import load_settings
from aina_dsr.wiring import open_core
from workflows.audit import ChainReport, verify_chain

audit_app = typer.Typer(help="Check the audit log's hash chain.", no_args_is_help=True)


async def _verify() -> ChainReport:
    async with open_core(load_settings()) as core:
        return await verify_chain(core.sessions)


@audit_app.command("verify")
def verify(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for other programs.")] = False,
) -> None:
    """Walk the audit log in order: exit 0 if every link holds, 1 naming the first broken event."""
    report = asyncio.run(_verify())
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "intact": report.intact,
                    "events": report.events,
                    "broken_at": report.broken_at,
                    "reference": report.reference,
                    "reason": report.reason,
                }
            )
        )
    elif report.intact:
        typer.echo(f"audit log intact: {report.events} event(s), every link holds")
    else:
        typer.echo(
            f"audit log BROKEN at event {report.broken_at}"
            f" ({report.reference or 'no request'}): {report.reason}",
            err=True,
        )
    raise typer.Exit(0 if report.intact else 1)
