"""``aina-dsr customers``: import the shop's customer list and look a customer up."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from aina_dsr.failures import EXIT_FAILED, EXIT_WRONG_INPUT, CommandFailure, describe
from aina_dsr.settings import Settings, load_settings
from aina_dsr.wiring import Core, open_core
from workflows.directory.csv_file import ImportFileError, check_file, detect_codec
from workflows.directory.csv_import import (
    ImportReport,
    ImportStopped,
    Interrupted,
    import_customers,
    import_purchases,
)
from workflows.directory.store import CustomerRecord, find_customer
from workflows.identity import InvalidIdentifier
from workflows.privacy.masking import mask_email, mask_iin, mask_phone

if TYPE_CHECKING:
    # rich is imported where a command prints: the other commands start without it.
    from rich.console import Console

customers_app = typer.Typer(
    help="The customer directory: import the shop's list, find a customer.",
    no_args_is_help=True,
)

# The rest is in --json; a screen of reasons is enough to see what to fix.
SHOWN_REJECTS = 50
# The shell's code for a command stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


def _fail(message: str, *, code: int) -> NoReturn:
    typer.echo(f"aina-dsr: {message}", err=True)
    raise typer.Exit(code)


def _check(path: Path, *, purchases: bool) -> None:
    try:
        check_file(path, purchases=purchases)
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}", code=EXIT_WRONG_INPUT)
    except ImportFileError as exc:
        _fail(f"{path}: {exc}", code=EXIT_WRONG_INPUT)


@contextmanager
def _bar(console: Console, path: Path) -> Iterator[tuple[io.TextIOWrapper, Any]]:
    """The file opened for the import, and a progress callback that moves a bar by bytes read."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    size = path.stat().st_size
    with (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress,
        io.TextIOWrapper(path.open("rb"), encoding=detect_codec(path), newline="") as text,
    ):
        task = progress.add_task(path.name, total=size)

        def advance(rows: int) -> None:
            # The binary buffer's position: what the text layer has read so far.
            done = min(text.buffer.tell(), size)
            progress.update(task, completed=done, description=f"{path.name}: {rows} rows")

        yield text, advance
        progress.update(task, completed=size)


async def _import(
    customers: Path, purchases: Path | None, console: Console
) -> tuple[ImportReport, ImportReport | None]:
    settings = load_settings()
    async with open_core(settings) as core:
        people = await _import_one(core, settings, customers, console, purchases=False)
        bought = None
        if purchases is not None:
            bought = await _import_one(core, settings, purchases, console, purchases=True)
        return people, bought


def _stopped(path: Path, stop: ImportStopped, settings: Settings) -> CommandFailure:
    """``FILE: N rows committed, stopped at line L: reason`` with the exit code of the cause."""
    cause = stop.cause
    if isinstance(cause, Interrupted):
        reason, code = "interrupted (Ctrl-C)", EXIT_INTERRUPTED
    elif isinstance(cause, ImportFileError):
        reason, code = str(cause).removeprefix(f"line {stop.line}: "), EXIT_WRONG_INPUT
    else:
        reason, code = describe(cause, settings), EXIT_FAILED
    committed = stop.report.committed
    return CommandFailure(
        f"{path}: {committed} rows committed, stopped at line {stop.line}: {reason}", code=code
    )


async def _import_one(
    core: Core, settings: Settings, path: Path, console: Console, *, purchases: bool
) -> ImportReport:
    try:
        with _bar(console, path) as (text, advance):
            if purchases:
                return await import_purchases(
                    core.sessions, core.vault, text, tz=core.timezone, progress=advance
                )
            return await import_customers(
                core.sessions,
                core.vault,
                text,
                now=core.clock.now(),
                tz=core.timezone,
                progress=advance,
            )
    except ImportStopped as stop:
        # What was committed stays; a re-run after the fix finds it unchanged.
        raise _stopped(path, stop, settings) from None
    except ImportFileError as exc:
        raise CommandFailure(f"{path}: {exc}", code=EXIT_WRONG_INPUT) from None


@customers_app.command("import")
def import_command(
    file: Annotated[
        Path,
        typer.Argument(help="The customers CSV (header row; UTF-8, UTF-16 or windows-1251)."),
    ],
    purchases: Annotated[
        Path | None,
        typer.Option("--purchases", help="A purchases CSV, imported after the customers."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for other programs.")] = False,
) -> None:
    """Create or update customers (and purchases) from CSV; a re-run changes nothing.

    Exit code 0 when every row was taken, 1 when some were rejected or lost
    letters to windows-1251, 2 when a file cannot be read. A stop part-way
    says how many rows were committed and the line it stopped at (exit 1 for
    the database, 2 for the file, 130 for Ctrl-C).
    """
    # Both headers are checked before anything is written.
    _check(file, purchases=False)
    if purchases is not None:
        _check(purchases, purchases=True)
    from rich.console import Console

    people, bought = asyncio.run(_import(file, purchases, Console(stderr=True)))
    reports = [people] + ([bought] if bought is not None else [])
    code = 1 if any(r.rejected or r.letters_lost for r in reports) else 0
    if as_json:
        data = {**people.as_dict(), "purchases": bought.as_dict() if bought else None}
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        raise typer.Exit(code)
    _print_reports(file, people, purchases, bought)
    raise typer.Exit(code)


def _print_reports(
    file: Path, people: ImportReport, purchases: Path | None, bought: ImportReport | None
) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for path, report in ((file, people), (purchases, bought)):
        if path is None or report is None:
            continue
        if report.charset:
            console.print(f"{escape(path.name)}: read as {report.charset}")
        if report.letters_lost:
            lines = ", ".join(str(n) for n in report.letters_lost[:SHOWN_REJECTS])
            console.print(
                f'[bold red]{escape(path.name)}: "?" where a letter was, lines {lines}[/]: '
                'windows-1251 has no Kazakh ә, ғ, қ, ң, ө, ұ, ү, һ and Excel wrote "?" '
                'for them. Save the file as "CSV UTF-8" and import it again.',
                soft_wrap=True,
            )
    summary = Table(title="import")
    summary.add_column("")
    summary.add_column("customers", justify="right")
    if bought is not None:
        summary.add_column("purchases", justify="right")
    for label in ("created", "updated", "unchanged", "rejected"):
        counts = [_count(people, label)] + ([_count(bought, label)] if bought else [])
        loud = label == "rejected"
        summary.add_row(label, *(f"[bold red]{c}[/]" if loud and c else str(c) for c in counts))
    # Rows also counted above, part of which the person's requests kept out (never restored).
    summary.add_row("withheld", str(len(people.withheld)), *(["—"] if bought else []))
    console.print(summary)
    if people.withheld:
        held = Table(
            title=f"{len(people.withheld)} row(s) withheld: erased or withdrawn by request"
        )
        for column in ("file", "line", "what stayed as the person asked"):
            held.add_column(column)
        for row in people.withheld[:SHOWN_REJECTS]:
            held.add_row(escape(file.name), str(row.line), escape(row.reason))
        console.print(held)
        if len(people.withheld) > SHOWN_REJECTS:
            console.print(
                f"… and {len(people.withheld) - SHOWN_REJECTS} more; --json lists them all"
            )
    rejects = [(file, r) for r in people.rejected]
    if bought is not None and purchases is not None:
        rejects += [(purchases, r) for r in bought.rejected]
    if not rejects:
        return
    table = Table(title=f"{len(rejects)} rejected row(s)")
    for column in ("file", "line", "reason"):
        table.add_column(column)
    for path, rejected in rejects[:SHOWN_REJECTS]:
        table.add_row(escape(path.name), str(rejected.line), escape(rejected.reason))
    console.print(table)
    if len(rejects) > SHOWN_REJECTS:
        console.print(f"… and {len(rejects) - SHOWN_REJECTS} more; --json lists them all")


def _count(report: ImportReport, label: str) -> int:
    return len(report.rejected) if label == "rejected" else int(getattr(report, label))


async def _find(
    phone: str | None, email: str | None, iin: str | None
) -> tuple[CustomerRecord | None, tzinfo]:
    async with open_core(load_settings()) as core:
        record = await find_customer(core.sessions, core.vault, phone=phone, email=email, iin=iin)
        return record, core.timezone


def _masked(record: CustomerRecord, tz: tzinfo) -> dict[str, Any]:
    registered = record.registered_at
    return {
        "id": record.id,
        "phone": mask_phone(record.phone) or None,
        "email": mask_email(record.email) or None,
        "iin": mask_iin(record.iin) or None,
        "language": record.language,
        "marketing_consent": record.marketing_consent,
        "registered_at": registered.astimezone(tz).isoformat() if registered else None,
        "purchases": len(record.purchases),
    }


@customers_app.command("find")
def find_command(
    phone: Annotated[str | None, typer.Option("--phone", help="In any usual format.")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Any letter case.")] = None,
    iin: Annotated[str | None, typer.Option("--iin", help="12 digits.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for other programs.")] = False,
) -> None:
    """The customer with every identifier given, shown masked, with the purchase count."""
    if phone is None and email is None and iin is None:
        _fail("give --phone, --email or --iin", code=2)
    try:
        record, tz = asyncio.run(_find(phone, email, iin))
    except InvalidIdentifier as exc:
        option = {"InvalidPhone": "--phone", "InvalidEmail": "--email", "InvalidIIN": "--iin"}
        _fail(f"{option.get(type(exc).__name__, 'identifier')}: {exc}", code=2)
    if record is None:
        if as_json:
            typer.echo("null")
        else:
            typer.echo("aina-dsr: no customer matches", err=True)
        raise typer.Exit(1)
    data = _masked(record, tz)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=False, title=f"customer {escape(record.id)}")
    for key, value in data.items():
        table.add_row(key, "—" if value is None else escape(str(value)))
    Console().print(table)
