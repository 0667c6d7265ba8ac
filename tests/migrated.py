"""A database migrated to head once per test process and copied for each test, not migrated again.

Running Alembic's eleven revisions took about a second per test (PostgreSQL more than
SQLite), for hundreds of tests. SQLite: the migrated file is copied. PostgreSQL: the
migrated template schema is dumped once (``pg_dump``, schema and rows such as
``alembic_version``) and the dump is replayed into each test's own schema. Where
``pg_dump`` is missing, each test runs Alembic as before. Tests of the migrations
themselves (tests/integration/test_migrations.py) start from an empty database and run
Alembic; so does everything that uses ``database_url`` without the ``engine`` fixture.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from workflows.persistence.engines import make_engine, upgrade_engine


class MigratedTemplate:
    """Makes an empty database a copy of one migrated to head; migrates only the first time."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._sqlite: Path | None = None
        self._postgres_dump: tuple[str, str] | None = None  # (template schema, its dump)
        self._postgres_without_dump = False

    async def fill(self, url: str) -> None:
        """Bring the empty database at ``url`` to head: a copy of the template, or Alembic."""
        if url.startswith("sqlite"):
            await self._fill_sqlite(url)
        else:
            await self._fill_postgres(url)

    async def _fill_sqlite(self, url: str) -> None:
        target = make_url(url).database
        assert target, url
        if self._sqlite is None:
            template = self._directory / "migrated.db"
            engine = make_engine(f"sqlite+aiosqlite:///{template}")
            try:
                await upgrade_engine(engine)
            finally:
                await engine.dispose()
            self._sqlite = template
        _copy_sqlite(self._sqlite, Path(target))

    async def _fill_postgres(self, url: str) -> None:
        schema = make_url(url).query.get("search_path")
        assert isinstance(schema, str), url
        if self._postgres_dump is None and not self._postgres_without_dump:
            await self._dump_postgres(url)
        if self._postgres_dump is None:
            engine = make_engine(url)
            try:
                await upgrade_engine(engine)
            finally:
                await engine.dispose()
            return
        template, dump = self._postgres_dump
        script = dump.replace(template, schema)
        connection = await asyncpg.connect(_libpq_url(url))
        try:
            await connection.execute(script)
        finally:
            await connection.close()

    async def _dump_postgres(self, url: str) -> None:
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            self._postgres_without_dump = True
            return
        template = f"dsr_template_{uuid.uuid4().hex[:12]}"
        base = make_url(url).difference_update_query(["search_path"])
        admin = make_engine(base.render_as_string(hide_password=False))
        try:
            async with admin.begin() as connection:
                await connection.execute(text(f'CREATE SCHEMA "{template}"'))
            try:
                engine = make_engine(f"{_with_query(url, 'search_path', template)}")
                try:
                    await upgrade_engine(engine)
                finally:
                    await engine.dispose()
                dump = await _pg_dump(pg_dump, url, template)
            finally:
                async with admin.begin() as connection:
                    await connection.execute(text(f'DROP SCHEMA "{template}" CASCADE'))
        finally:
            await admin.dispose()
        self._postgres_dump = (template, _replayable(dump, template))


def _copy_sqlite(template: Path, target: Path) -> None:
    # The template engine's last close checkpointed its WAL into the file itself.
    assert not template.with_name(f"{template.name}-wal").exists(), "WAL not checkpointed"
    shutil.copyfile(template, target)


async def _pg_dump(pg_dump: str, url: str, schema: str) -> str:
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    command = [pg_dump, "--schema", schema, "--no-owner", "--no-privileges", "--inserts"]
    if parsed.host:
        command += ["--host", parsed.host]
    if parsed.port:
        command += ["--port", str(parsed.port)]
    if parsed.username:
        command += ["--username", parsed.username]
    command.append(parsed.database or "postgres")
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {err.decode(errors='replace')}")
    return out.decode()


def _replayable(dump: str, schema: str) -> str:
    """The dump as one script for a schema that exists: no psql commands, no CREATE SCHEMA."""
    lines = []
    for line in dump.splitlines():
        if line.startswith("\\"):  # psql meta-commands (\restrict) are not SQL
            continue
        if re.fullmatch(rf"CREATE SCHEMA {re.escape(schema)};", line):
            continue
        lines.append(line)
    return "\n".join(lines)


def _libpq_url(url: str) -> str:
    parsed = make_url(url).difference_update_query(["search_path"]).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def _with_query(url: str, key: str, value: str) -> str:
    parsed = make_url(url).difference_update_query([key]).update_query_dict({key: value})
    return parsed.render_as_string(hide_password=False)
