"""SQLite: writers queue on the write lock; readers never wait behind a writer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from workflows.persistence.engines import make_engine, make_sessionmaker, upgrade_engine
from workflows.persistence.tables import ConversationState


def _row(key: str) -> ConversationState:
    return ConversationState(key=key, state="s", updated_at=datetime(2026, 11, 25, tzinfo=UTC))


async def test_a_read_is_answered_while_a_long_write_is_open(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}")
    await upgrade_engine(engine)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions.begin() as writer:
            writer.add(_row("first"))
            await writer.flush()  # the write lock is held until this block ends

            async def read() -> int:
                async with sessions() as reader:
                    return int(await reader.scalar(select(func.count(ConversationState.key))) or 0)

            # The reader sees the last committed state at once (no wait for the lock).
            assert await asyncio.wait_for(read(), timeout=5) == 0
        assert await asyncio.wait_for(read(), timeout=5) == 1
    finally:
        await engine.dispose()


async def test_writers_take_turns_and_none_fails(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}")
    await upgrade_engine(engine)
    sessions = make_sessionmaker(engine)

    async def write(n: int) -> None:
        async with sessions.begin() as session:
            # Read, then write: safe only because the writer holds the lock from its start.
            seen = int(await session.scalar(select(func.count(ConversationState.key))) or 0)
            session.add(_row(f"k{n}-{seen}"))

    try:
        await asyncio.wait_for(asyncio.gather(*(write(n) for n in range(20))), timeout=60)
        async with sessions() as session:
            keys = list(await session.scalars(select(ConversationState.key)))
        # Each writer saw every write before its own: the counts run 0..19 with no repeat.
        assert sorted(int(k.split("-")[1]) for k in keys) == list(range(20))
    finally:
        await engine.dispose()
