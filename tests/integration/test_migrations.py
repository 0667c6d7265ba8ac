"""Migrations: each revision goes up, down and up again, and they match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from workflows.persistence.engines import (
    alembic_config,
    downgrade_engine,
    engine_revision,
    head_revision,
    make_engine,
    upgrade_engine,
)
from workflows.persistence.tables import Base


async def test_stairway_up_down_up_for_every_revision(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        script = ScriptDirectory.from_config(alembic_config())
        revisions = list(reversed(list(script.walk_revisions())))
        for revision in revisions:
            await upgrade_engine(engine, revision.revision)
            await downgrade_engine(engine, revision.down_revision or "base")
            await upgrade_engine(engine, revision.revision)
        assert await engine_revision(engine) == head_revision()
    finally:
        await engine.dispose()


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": False})
    return [d for d in compare_metadata(context, Base.metadata) if "apscheduler" not in str(d)]


async def test_the_migrations_build_exactly_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await upgrade_engine(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_the_copy_every_test_starts_from_is_at_head_and_matches_the_models(
    engine: AsyncEngine,
) -> None:
    # tests/migrated.py copies a database migrated once instead of migrating per test.
    assert await engine_revision(engine) == head_revision()
    async with engine.connect() as connection:
        assert await connection.run_sync(_diff) == []
