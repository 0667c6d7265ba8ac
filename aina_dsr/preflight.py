"""What every command makes sure of before it works: the database, its schema, the key.

A command that starts on a database it cannot use, or with a key that cannot
read what is stored, fails later and worse: the mail sender crash-loops, a
lookup finds nobody, an import writes rows no right key can read. So the
core is opened only after three checks, each failing in one line
(:mod:`aina_dsr.failures`):

- the database answers (within :data:`~aina_dsr.failures.PROBE_TIMEOUT`);
- its schema is at this version's revision (SQLite is first brought there);
- the newest row of each table with encrypted columns reads with one of the
  configured keys (:func:`workflows.privacy.key_rotation.unreadable_value`).
  An empty database has nothing to doubt.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from aina_dsr.failures import (
    PROBE_TIMEOUT,
    DatabaseUnavailable,
    database_unavailable,
    wrong_key,
)
from aina_dsr.settings import Settings
from workflows.persistence.engines import engine_revision, head_revision, upgrade_engine
from workflows.privacy.key_rotation import unreadable_value
from workflows.privacy.vault import Vault


def open_sqlite_file(path: Path) -> None:
    """The SQLite file opens and is a database (or is made, when missing); else sqlite3.Error.

    Tried with :mod:`sqlite3` in this thread: when aiosqlite fails to connect, its
    worker thread may outlive the command's event loop and print a traceback.
    """
    with closing(sqlite3.connect(path)) as database:
        database.execute("PRAGMA schema_version")


def sqlite_file_opens(settings: Settings) -> None:
    """On SQLite, :func:`open_sqlite_file`, failing in one line."""
    path = settings.sqlite_path
    if path is None:
        return
    try:
        open_sqlite_file(path)
    except sqlite3.Error as exc:
        raise database_unavailable(exc, settings) from exc


async def database_ready(engine: AsyncEngine, settings: Settings, *, upgrade_sqlite: bool) -> None:
    """The database answers and its schema is this version's; SQLite is upgraded first."""
    sqlite_file_opens(settings)
    try:
        if upgrade_sqlite and settings.is_sqlite:
            # The embedded database belongs to this process alone, so it migrates itself.
            await upgrade_engine(engine)
        current = await asyncio.wait_for(engine_revision(engine), PROBE_TIMEOUT)
    except Exception as exc:
        raise database_unavailable(exc, settings) from exc
    head = head_revision()
    if current != head:
        # Several processes share PostgreSQL; migrating is the operator's deliberate step.
        raise DatabaseUnavailable(
            f"the database schema is at revision {current or 'none'}, this version needs "
            f"{head}: run `aina-dsr db upgrade` first"
        )


async def key_reads_stored_data(engine: AsyncEngine, vault: Vault) -> None:
    """Raise the one-line ``DSR_ENCRYPTION_KEY`` error when stored data does not read."""
    where = await unreadable_value(engine, vault)
    if where is not None:
        raise wrong_key(where)
