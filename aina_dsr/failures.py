"""A command that fails says why in one line on stderr, never with a traceback.

The exit code tells a script what to do next:

- **2**: the command cannot work as it was given: a setting (``DSR_*``, the
  encryption key among them: a key that cannot read the stored data is a wrong
  setting), an option, or a file that cannot be read or written. Fix that and
  run it again.
- **1**: it was given right, and the world said no: the database does not
  answer or its schema is not at this version; or the command's own answer
  is "no" (a check failed, the audit chain is broken, rows were rejected,
  nothing was found).

The rule is kept here once: the ``aina-dsr`` app is a :class:`OneLineFailures`
group, which turns these errors into that line for every command, so no
command catches them itself. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import typer
import typer.core
from sqlalchemy.engine import make_url

from aina_dsr.settings import Settings, SettingsError, load_settings
from workflows.privacy.vault import VaultError

PROG = "aina-dsr"
EXIT_FAILED = 1
EXIT_WRONG_INPUT = 2
# Every probe of a service gives up after this long.
PROBE_TIMEOUT = 15.0
# SQLAlchemy wraps driver errors in a class name and a link; the operator needs the middle.
_SQLALCHEMY_NOISE = re.compile(r"^\([\w.]+\) |\s*\(Background on this error at: \S+\)")
KEY_VARIABLE = "DSR_ENCRYPTION_KEY"


class CommandFailure(Exception):
    """A failure already put in words for the operator, with its exit code."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class DatabaseUnavailable(CommandFailure):
    """The database does not answer, cannot be opened, or its schema is not this version's."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=EXIT_FAILED)


def wrong_key(where: str | None = None) -> SettingsError:
    """The stored data does not read with any configured key: the setting is wrong."""
    what = f"stored data ({where})" if where else "stored data"
    return SettingsError(
        KEY_VARIABLE,
        f"{what} cannot be read with the configured key(s); set the key it was written "
        "with (while replacing a key: NEW,OLD)",
    )


def safe_url(url: str) -> str:
    """A database or Redis URL without its password."""
    return make_url(url).render_as_string(hide_password=True)


def secrets_of(settings: Settings | None) -> list[str]:
    """Every secret value a message might carry, to be blanked out of it."""
    if settings is None:
        return []
    values = [
        secret.get_secret_value()
        for secret in (
            settings.encryption_key,
            settings.telegram_bot_token,
            settings.imap_password,
            settings.smtp_password,
        )
        if secret is not None
    ]
    if settings.encryption_key is not None:
        values += settings.encryption_key.get_secret_value().split(",")
    password = make_url(settings.database_url).password
    if password:
        values.append(str(password))
    return [value for value in values if value]


def describe(exc: BaseException, settings: Settings | None) -> str:
    """An error for the operator's eyes: no secret in it, one line, not too long."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        text = f"no answer within {PROBE_TIMEOUT:g} s"
    for secret in secrets_of(settings):
        text = text.replace(secret, "***")
    text = _SQLALCHEMY_NOISE.sub("", text)
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def database_unavailable(exc: BaseException, settings: Settings) -> DatabaseUnavailable:
    """The database of ``settings`` could not be used, for the reason ``exc`` gives."""
    where = safe_url(settings.database_url)
    return DatabaseUnavailable(f"cannot use the database {where}: {describe(exc, settings)}")


def _is_database_error(exc: BaseException) -> bool:
    # SQLAlchemy wraps the drivers' own errors (asyncpg's, sqlite3's) in its classes.
    import sqlite3

    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError | CommandError | sqlite3.Error)


def explain(exc: BaseException) -> CommandFailure | None:
    """The one line and the exit code for ``exc``; ``None`` for a bug, which keeps its trace."""
    if isinstance(exc, CommandFailure):
        return exc
    if isinstance(exc, BrokenPipeError):
        return None  # stdout closed by a reader such as `head`: typer ends quietly
    if isinstance(exc, SettingsError):
        return CommandFailure(f"{exc.variable}: {exc.problem}", code=EXIT_WRONG_INPUT)
    if isinstance(exc, VaultError):
        return explain(wrong_key())
    if isinstance(exc, OSError) and exc.filename is not None:
        # A file of the command line (the database's own file fails inside SQLite, not here).
        reason = exc.strerror or describe(exc, None)
        return CommandFailure(f"{exc.filename}: {reason}", code=EXIT_WRONG_INPUT)
    if _is_database_error(exc) or isinstance(exc, OSError):
        # Past start-up the only service a command talks to is the database: a refused or
        # broken connection (an OSError without a file) is the database going away.
        settings = _settings_or_none()
        where = f" {safe_url(settings.database_url)}" if settings else ""
        return DatabaseUnavailable(f"the database{where} failed: {describe(exc, settings)}")
    return None


def _settings_or_none() -> Settings | None:
    try:
        return load_settings()
    except SettingsError:
        return None


def say(message: str) -> None:
    """One line on stderr, as every command speaks of itself."""
    print(f"{PROG}: {message}", file=sys.stderr)


class OneLineFailures(typer.core.TyperGroup):
    """The ``aina-dsr`` app: whichever command runs, a failure is one line and exit 1 or 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            failure = explain(exc)
            if failure is None:
                raise
            say(failure.message)
            raise typer.Exit(failure.code) from None
