"""One ``INSERT … ON CONFLICT`` for both databases: the dialect's own insert, picked once here.

SQLAlchemy's generic ``insert()`` has no ``ON CONFLICT``; PostgreSQL's and SQLite's inserts
both do, with the same ``on_conflict_do_nothing`` / ``on_conflict_do_update`` methods.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def upsert(session: AsyncSession, table: Any) -> Any:
    """An insert into ``table`` that can say what to do on conflict, for the session's database."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
