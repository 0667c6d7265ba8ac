"""``aina-dsr requests``: the register of requests, for the operator and the regulator."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from aina_dsr.settings import load_settings
from aina_dsr.wiring import open_core
from workflows.csv_export import SafeDictWriter
from workflows.errors import RequestNotFound
from workflows.requests.states import Status
from workflows.snapshots import RequestView

requests_app = typer.Typer(help="Read and export the register of requests.", no_args_is_help=True)


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


def _status(value: str) -> str:
    try:
        return Status(value).value
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise typer.BadParameter(f"unknown status {value!r}; one of: {known}") from None


async def _list(status: list[str], overdue: bool) -> tuple[list[RequestView], Any, datetime]:
    async with open_core(load_settings()) as core:
        views = await core.service.list_requests(status=status or None, overdue=overdue)
        return views, core.timezone, core.clock.now()


@requests_app.command("list")
def list_requests(
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only this status (repeatable).")
    ] = None,
    overdue: Annotated[
        bool, typer.Option("--overdue", help="Only open requests past due.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for other programs.")] = False,
) -> None:
    """The requests, soonest deadline first."""
    statuses = [_status(s) for s in status or []]
    views, tz, now = asyncio.run(_list(statuses, overdue))
    if as_json:
        typer.echo(json.dumps([v.as_dict(tz) for v in views], ensure_ascii=False, indent=2))
        return
    from rich.console import Console  # only for a table: the other commands start without it
    from rich.table import Table

    table = Table(title=f"{len(views)} request(s)")
    for column in ("reference", "kind", "status", "channel", "lang", "received", "due", "verified"):
        table.add_column(column)
    for v in views:
        due = v.due_at.astimezone(tz).date().isoformat() if v.due_at else "—"
        if v.is_overdue(now):
            due = f"[bold red]{due} overdue[/]"
        table.add_row(
            v.reference,
            v.kind,
            v.status,
            v.channel,
            v.language,
            v.received_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
            due,
            v.verified_by or "—",
        )
    Console().print(table)


async def _show(reference: str) -> tuple[RequestView, Any]:
    async with open_core(load_settings()) as core:
        return await core.service.get(reference, with_events=True), core.timezone


@requests_app.command("show")
def show_request(
    reference: Annotated[str, typer.Argument(help="DSR-YYYY-NNNNNN")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON for other programs.")] = False,
) -> None:
    """One request with its audit trail."""
    try:
        view, tz = asyncio.run(_show(reference))
    except RequestNotFound:
        typer.echo(f"aina-dsr: no request {reference}", err=True)
        raise typer.Exit(1) from None
    data = view.as_dict(tz, with_events=True)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(show_header=False, title=view.reference)
    for key, value in data.items():
        if key != "events":
            summary.add_row(key, "—" if value is None else str(value))
    console.print(summary)
    events = Table(title="audit trail")
    for column in ("at", "actor", "channel", "action", "from", "to"):
        events.add_column(column)
    for e in view.events:
        who = e.actor if not e.actor_name else f"{e.actor} {e.actor_name} ({e.actor_id})"
        events.add_row(
            e.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
            who,
            e.channel,
            e.action,
            e.from_status or "",
            e.to_status or "",
        )
    console.print(events)


REGISTER_COLUMNS = (
    "reference", "kind", "status", "channel", "language", "received_at", "due_at",
    "verified_by", "customer_matched", "closed_at",
    "event_id", "event_at", "actor", "actor_id", "actor_name", "event_channel", "action",
    "from_status", "to_status", "prev_hash", "hash",
)  # fmt: skip


def write_register(views: list[RequestView], tz: Any, fmt: ExportFormat, out: TextIO) -> None:
    """The register with its audit trail: JSON objects, or one CSV row per audit event.

    Staff display names are whatever their owners typed, so the CSV is written
    with cells a spreadsheet would run made text (:mod:`workflows.csv_export`).
    """
    if fmt is ExportFormat.JSON:
        json.dump(
            [v.as_dict(tz, with_events=True) for v in views], out, ensure_ascii=False, indent=2
        )
        out.write("\n")
        return
    writer = SafeDictWriter(out, fieldnames=REGISTER_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for view in views:
        base = view.as_dict(tz)
        for event in view.events:
            writer.writerow(
                {
                    **base,
                    "event_id": event.id,
                    "event_at": event.at.astimezone(tz).isoformat(),
                    "actor": event.actor,
                    "actor_id": event.actor_id,
                    "actor_name": event.actor_name,
                    "event_channel": event.channel,
                    "action": event.action,
                    "from_status": event.from_status,
                    "to_status": event.to_status,
                    "prev_hash": event.prev_hash,
                    "hash": event.hash,
                }
            )


async def _export() -> tuple[list[RequestView], Any]:
    async with open_core(load_settings()) as core:
        return await core.service.list_requests(with_events=True), core.timezone


@requests_app.command("export")
def export_register(
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv or json.")] = ExportFormat.CSV,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """The whole register with every audit event, as evidence for the authorised body."""
    views, tz = asyncio.run(_export())
    if output is None:
        write_register(views, tz, fmt, sys.stdout)
        return
    with output.open("w", encoding="utf-8", newline="") as out:
        write_register(views, tz, fmt, out)
    typer.echo(f"{len(views)} request(s) written to {output}", err=True)
