"""What a test database holds as stored: for the tests that look for a value in clear."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from workflows.persistence.tables import Base


async def everything_stored(engine: AsyncEngine, database_url: str) -> bytes:
    """The raw bytes of the SQLite files, or every row of every table as text on PostgreSQL."""
    if database_url.startswith("sqlite"):
        path = Path(database_url.split("///", 1)[1])
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    dump = []
    async with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = await connection.execute(
                text(f"SELECT row_to_json(t)::text FROM {table.name} t")
            )
            dump.extend(r[0] for r in rows)
    return "\n".join(dump).encode()
