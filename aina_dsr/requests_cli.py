"""``aina-dsr requests``: the register of requests, for the operator and the regulator."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from aina_dsr.runtime import desk_info
from aina_dsr.settings import load_settings
from aina_dsr.wiring import open_core
from workflows.csv_export import SafeDictWriter
from workflows.errors import RequestNotFound
from workflows.outbox.queue import Channel
from workflows.requests.post import LetterRefused, PostLetter, letter_kind
from workflows.requests.states import Status
from workflows.snapshots import RequestView

if TYPE_CHECKING:
    from rich.console import Console

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

    _print_list(Console(), views, tz, now)


LIST_COLUMNS = ("reference", "kind", "status", "channel", "lang", "received", "due", "verified")


def _print_list(console: Console, views: list[RequestView], tz: Any, now: datetime) -> None:
    """The register as a table (or blocks on a narrow screen); a reference is never cut."""
    from rich.measure import Measurement
    from rich.table import Table

    rows = []
    for v in views:
        due = v.due_at.astimezone(tz).date().isoformat() if v.due_at else "—"
        if v.is_overdue(now):
            due = f"[bold red]{due} overdue[/]"
        received = v.received_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        rows.append(
            (
                v.reference,
                v.kind,
                v.status,
                v.channel,
                v.language,
                received,
                due,
                v.verified_by or "—",
            )
        )
    table = Table(title=f"{len(views)} request(s)")
    # The reference is what a person copies: never wrapped nor cut.
    table.add_column(LIST_COLUMNS[0], no_wrap=True)
    for column in LIST_COLUMNS[1:]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    wide = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if wide <= console.width:
        console.print(table)
        return
    # Narrower than the table: one block per request, rather than columns folded to slivers.
    console.print(f"{len(views)} request(s)")
    for row in rows:
        block = Table.grid(padding=(0, 1))
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        for name, value in zip(LIST_COLUMNS, row, strict=True):
            block.add_row(name, value)
        console.print(block, "")
    return


async def _show(reference: str) -> tuple[RequestView, Any, list[dict[str, Any]]]:
    settings = load_settings()
    async with open_core(settings) as core:
        view = await core.service.get(reference, with_events=True)
        letters = await core.service.letters_to_post(reference)
        info = desk_info(settings)
        posted = [
            {
                "at": letter.at.astimezone(core.timezone).isoformat(),
                "template": letter.template,
                "status": letter.status,
                "handed_to_staff_at": letter.handed_at.astimezone(core.timezone).isoformat()
                if letter.handed_at is not None
                else None,
                "text": letter.text(info),
            }
            for letter in letters
        ]
        return view, core.timezone, posted


@requests_app.command("show")
def show_request(
    reference: Annotated[str, typer.Argument(help="DSR-YYYY-NNNNNN")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON for other programs.")] = False,
) -> None:
    """One request with its audit trail (and, for a letter by post, the letters to post)."""
    try:
        view, tz, letters = asyncio.run(_show(reference))
    except RequestNotFound:
        typer.echo(f"aina-dsr: no request {reference}", err=True)
        raise typer.Exit(1) from None
    data = view.as_dict(tz, with_events=True)
    if as_json:
        if view.channel == Channel.POST.value:
            data["letters_to_post"] = letters
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
    show_letters(console, letters)


def show_letters(console: Console, letters: list[dict[str, Any]]) -> None:
    """The notices of a request by post, each with its text, to print and send."""
    for number, letter in enumerate(letters, start=1):
        handed = letter["handed_to_staff_at"]
        where = f"in the staff group since {handed}" if handed else "waiting for the staff group"
        console.rule(f"letter to post {number}: {letter['template']}, {letter['at']} ({where})")
        console.print(letter["text"], markup=False, highlight=False)


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


class FilingChannel(StrEnum):
    POST = "post"


def _received_on(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        typer.echo(f"aina-dsr: --received {value!r}: give the date as YYYY-MM-DD", err=True)
        raise typer.Exit(2) from None


def _fields(pairs: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            typer.echo(f"aina-dsr: --field {pair!r}: give it as NAME=VALUE", err=True)
            raise typer.Exit(2)
        fields[name.strip()] = value.strip()
    return fields


async def _file(letter: PostLetter, by: str | None) -> tuple[RequestView, Any]:
    async with open_core(load_settings()) as core:
        return await core.service.file_by_post(letter, by), core.timezone


@requests_app.command("file")
def file_request(
    channel: Annotated[FilingChannel, typer.Option("--channel", help="post: a paper letter.")],
    kind: Annotated[str, typer.Option("--kind", help="The request's kind (access, rectify, ...).")],
    received: Annotated[
        str, typer.Option("--received", help="The date the letter arrived, YYYY-MM-DD.")
    ],
    name: Annotated[str, typer.Option("--name", help="The person's name, as signed.")],
    address: Annotated[str, typer.Option("--address", help="The postal address to answer to.")],
    language: Annotated[
        str, typer.Option("--language", help="The letter's language: kk, ru or en.")
    ],
    text: Annotated[str | None, typer.Option("--text", help="What the letter asks.")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="A phone, if given.")] = None,
    email: Annotated[str | None, typer.Option("--email", help="An e-mail, if given.")] = None,
    field: Annotated[
        list[str] | None,
        typer.Option("--field", help="Another field of the kind, NAME=VALUE (repeatable)."),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who registers the letter.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for other programs.")] = False,
) -> None:
    """Register a request received by post: its clock runs from the date of receipt.

    The letter is registered as checked (verified by post); its card goes to the
    staff group, and every answer to the person is a letter to post, handed to
    the staff group with the postal address and listed by `requests show`.
    """
    del channel  # post is the one channel filed by hand
    try:
        letter_kind(kind)
    except LetterRefused as exc:
        typer.echo(f"aina-dsr: {exc}", err=True)
        raise typer.Exit(2) from None
    letter = PostLetter(
        kind=kind,
        received_on=_received_on(received),
        full_name=name,
        postal_address=address,
        language=language,
        text=text,
        phone=phone,
        email=email,
        fields=_fields(field or []),
    )
    try:
        view, tz = asyncio.run(_file(letter, by))
    except LetterRefused as exc:
        typer.echo(f"aina-dsr: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(view.as_dict(tz), ensure_ascii=False, indent=2))
        return
    due = view.due_at.astimezone(tz).date().isoformat() if view.due_at else "—"
    typer.echo(f"{view.reference}: {view.kind}, received {letter.received_on}, due {due}")
