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


async def test_a_waiting_writer_goes_as_soon_as_the_writer_before_it_commits(
    tmp_path: Path,
) -> None:
    """A reply waits for its dialog's write: a writer queued behind another must not sleep on.

    Five times over, a writer holds the write lock for a while (long enough for
    SQLite's busy handler to be sleeping in its 100 ms steps) while the next
    one waits; the next begins within 40 ms of the first committing.
    """
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}")
    await upgrade_engine(engine)
    sessions = make_sessionmaker(engine)
    loop = asyncio.get_running_loop()
    handovers: list[float] = []

    async def hold(key: str, committed: list[float]) -> None:
        async with sessions.begin() as session:
            session.add(_row(key))
            await session.flush()
            await asyncio.sleep(0.4)  # a long write (what is measured is the next one's wait)
        committed.append(loop.time())

    async def follow(key: str) -> float:
        async with sessions.begin() as session:
            session.add(_row(key))
            await session.flush()  # BEGIN IMMEDIATE, then the row: this writer holds the lock
            began = loop.time()
        return began

    try:
        for n in range(5):
            committed: list[float] = []
            holding = asyncio.create_task(hold(f"first{n}", committed))
            await asyncio.sleep(0.05)  # the first writer holds the lock now
            began = await asyncio.wait_for(follow(f"next{n}"), timeout=30)
            await holding
            handovers.append(began - committed[0])
        assert max(handovers) < 0.04, handovers
    finally:
        await engine.dispose()


async def test_a_writer_cancelled_while_waiting_for_its_turn_leaves_no_turn_behind(
    tmp_path: Path,
) -> None:
    """A handler cancelled in the queue (a shutdown, a client gone) must not keep the turn:
    if it did, every later writer of the process would wait for ever."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}")
    await upgrade_engine(engine)
    sessions = make_sessionmaker(engine)
    release = asyncio.Event()
    holding_lock = asyncio.Event()

    async def hold(n: int) -> None:
        async with sessions.begin() as session:
            session.add(_row(f"first{n}"))
            await session.flush()
            holding_lock.set()
            await release.wait()

    async def write(key: str) -> None:
        async with sessions.begin() as session:
            session.add(_row(key))

    try:
        for n in range(20):  # at every moment of the hand-over, as far as a loop can aim
            release.clear()
            holding_lock.clear()
            holder = asyncio.create_task(hold(n))
            await asyncio.wait_for(holding_lock.wait(), timeout=10)
            waiting = asyncio.create_task(write(f"cancelled{n}"))
            await asyncio.sleep(0)
            release.set()
            for _ in range(n % 4):
                await asyncio.sleep(0)
            waiting.cancel()
            await asyncio.gather(holder, waiting, return_exceptions=True)
            async with sessions() as session:
                await session.execute(select(1))
            await asyncio.wait_for(write(f"after{n}"), timeout=10)
            async with sessions() as session:
                await session.execute(select(1))
            # The turn is free again: a plain write gets through at once.
            await asyncio.wait_for(write(f"again{n}"), timeout=10)
    finally:
        await engine.dispose()
