"""The ``aina-dsr`` command: run the desk, migrate, check, make keys."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer

from aina_dsr.audit_cli import audit_app
from aina_dsr.customers_cli import customers_app
from aina_dsr.directory_cli import directory_app
from aina_dsr.failures import (
    EXIT_FAILED,
    EXIT_WRONG_INPUT,
    PROG,
    OneLineFailures,
    describe,
    safe_url,
    say,
)
from aina_dsr.health import PartHealth
from aina_dsr.keys_cli import keys_app
from aina_dsr.logs import log_handler
from aina_dsr.preflight import sqlite_file_opens
from aina_dsr.probes import check_all
from aina_dsr.report_cli import report
from aina_dsr.requests_cli import requests_app
from aina_dsr.retention_cli import retention_app
from aina_dsr.settings import (
    Settings,
    SettingsError,
    encryption_key_or_dev,
    load_settings,
)
from aina_dsr.wiring import open_core
from workflows.privacy.masking import PersonalDataFilter

app = typer.Typer(
    name=PROG,
    help="AINA Privacy Desk: data-subject requests by Telegram and e-mail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Every command's failure is one line and exit code 1 or 2 (aina_dsr.failures).
    cls=OneLineFailures,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)

app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(requests_app, name="requests")
app.add_typer(customers_app, name="customers")
app.add_typer(audit_app, name="audit")
app.add_typer(retention_app, name="retention")
app.add_typer(directory_app, name="directory")
app.command("report")(report)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"{PROG} {version('aina-privacy-desk')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """AINA Privacy Desk: data-subject requests by Telegram and e-mail."""


def main() -> None:
    """Console script: a failure is one line on stderr and exit code 1 or 2 (see failures)."""
    app(prog_name=PROG)


def _fail(message: str, *, code: int) -> NoReturn:
    say(message)
    raise SystemExit(code)


def _warn_unknown_variables() -> None:
    # Before the settings are read: a mistyped name often explains what they then miss.
    from aina_dsr.setting_names import unknown_variables

    for warning in unknown_variables():
        say(warning)


def _configure_logging(settings: Settings) -> None:
    # DSR_LOG_FORMAT=json: one object per line with the request's reference as a field.
    logging.basicConfig(
        level=settings.log_level, handlers=[log_handler(sys.stderr, settings.log_format)]
    )
    # Whatever slips into a log line, no phone, e-mail or IIN leaves in clear.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, PersonalDataFilter) for f in handler.filters):
            handler.addFilter(PersonalDataFilter())


@contextmanager
def _sqlite_single_process(settings: Settings) -> Iterator[None]:
    """Hold ``<db file>.lock`` so that a second process cannot use the SQLite file at once."""
    path = settings.sqlite_path
    if path is None:
        yield
        return
    path = path.absolute()
    if not path.parent.is_dir():
        raise SettingsError("DSR_DATABASE_URL", f"directory {path.parent} does not exist")
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _fail(
                f"another aina-dsr run is already using {path}; "
                "SQLite means one process (use PostgreSQL to run several)",
                code=2,
            )
        yield


# db


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to this version (Alembic migrations)."""
    from workflows.persistence.engines import head_revision, upgrade_database

    settings = load_settings()
    _configure_logging(settings)
    with _sqlite_single_process(settings):
        sqlite_file_opens(settings)
        try:
            upgrade_database(settings.database_url)
        except Exception as exc:
            logging.getLogger(__name__).debug("upgrade failed", exc_info=True)
            _fail(f"database upgrade failed: {describe(exc, settings)}", code=EXIT_FAILED)
    print(f"{safe_url(settings.database_url)}: schema at revision {head_revision()}")


# run


@app.command()
def run() -> None:
    """Run the desk: each configured channel and the scheduler, until SIGTERM or SIGINT."""
    _warn_unknown_variables()
    settings = load_settings()
    _configure_logging(settings)
    encryption_key_or_dev(settings)
    with _sqlite_single_process(settings):
        code = asyncio.run(_run_desk(settings))
    raise typer.Exit(code)


async def _run_desk(settings: Settings) -> int:
    # Only `run` needs the channels (aiogram alone takes seconds to import): every other
    # command answers without loading them.
    from aina_dsr.heap import settle_heap
    from aina_dsr.runtime import build_components, serve

    # Opening the core checks the database, its schema and that the key reads the stored
    # data: a desk that cannot work stops here in one line, before any part starts.
    async with open_core(settings) as core:
        if not settings.telegram_configured and not settings.mail_configured:
            say("no channel is configured, so there is nothing to run. Set either")
            print("  Telegram: DSR_TELEGRAM_BOT_TOKEN and DSR_STAFF_CHAT_ID, or", file=sys.stderr)
            print(
                "  e-mail:   DSR_IMAP_HOST, DSR_IMAP_USER, DSR_IMAP_PASSWORD and DSR_SMTP_HOST",
                file=sys.stderr,
            )
            return EXIT_WRONG_INPUT
        health = PartHealth()
        components = build_components(settings, core, health)
        settle_heap()  # what start-up built lives as long as the desk
        try:
            return await serve(components, health=health)
        finally:
            for component in components:
                close = getattr(component, "close", None)
                if close is not None:
                    await close()


# demo


@app.command()
def demo(
    port: int = typer.Option(
        0, min=0, max=65535, help="The page's port on 127.0.0.1 (0: a free one)."
    ),
) -> None:
    """Try the whole desk in a browser: no accounts, a throw-away database, stopped by Ctrl-C."""
    # The channels and the stand-ins load only for this command (as for `run`).
    from aina_dsr.demo.desk import configure_logging, run_demo
    from aina_dsr.demo.page import PortInUse

    configure_logging("WARNING")
    try:
        code = asyncio.run(run_demo(port=port))
    except PortInUse as exc:
        _fail(str(exc), code=EXIT_WRONG_INPUT)
    except KeyboardInterrupt:  # Ctrl-C while it was still starting: nothing to keep
        code = 130
    raise typer.Exit(code)


# check


@app.command()
def check() -> None:
    """Check the settings and reach every configured service."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    _warn_unknown_variables()
    settings = load_settings()
    probes = asyncio.run(check_all(settings))
    table = Table(title="AINA Privacy Desk", title_justify="left")
    table.add_column("component")
    table.add_column("state")
    table.add_column("detail", overflow="fold")
    state = {True: "[green]ok[/]", False: "[red]FAILED[/]", None: "[dim]not configured[/]"}
    for probe in probes:
        table.add_row(probe.component, state[probe.ok], escape(probe.detail))
    Console().print(table)
    failed = [probe for probe in probes if probe.ok is False]
    if failed:
        # The table is for eyes; a script or a log gets the first failure in one line.
        first, rest = failed[0], [probe.component for probe in failed[1:]]
        more = f" (and {len(rest)} more: {', '.join(rest)})" if rest else ""
        say(f"check failed: {first.component}: {first.detail}{more}")
    raise typer.Exit(EXIT_FAILED if failed else 0)
