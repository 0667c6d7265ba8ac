"""SQLite: writers queue on the write lock; readers never wait behind a writer."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.persistence import sqlite_in_loop
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


# Another program on the same database (a command of the CLI, another replica): it takes
# SQLite's write lock, says so, and lets go when told to (or at once when its input ends).
_OTHER_PROGRAM = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
connection.execute(
    "INSERT INTO conversation_state (key, state, updated_at) VALUES (?, ?, ?)",
    ("other", "s", "2026-11-25 00:00:00"),
)
print("holding", flush=True)
sys.stdin.readline()
connection.execute("COMMIT")
print("done", flush=True)
"""


async def _other_program_holding_the_lock(database: Path) -> asyncio.subprocess.Process:
    program = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OTHER_PROGRAM,
        str(database),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert program.stdout is not None
    assert await asyncio.wait_for(program.stdout.readline(), timeout=30) == b"holding\n"
    return program


async def _let_go(program: asyncio.subprocess.Process) -> None:
    assert program.stdin is not None and program.stdout is not None
    program.stdin.write(b"go\n")
    await program.stdin.drain()
    assert await asyncio.wait_for(program.stdout.readline(), timeout=30) == b"done\n"
    await asyncio.wait_for(program.wait(), timeout=30)


@dataclass
class _Beside:
    """The desk's sessions on a database, and another program holding its write lock."""

    sessions: async_sessionmaker[AsyncSession]
    other: asyncio.subprocess.Process

    async def keys(self) -> set[str]:
        async with self.sessions() as reader:
            return set(await reader.scalars(select(ConversationState.key)))


@pytest.fixture
async def beside_another_program(tmp_path: Path) -> AsyncIterator[_Beside]:
    database = tmp_path / "desk.db"
    engine = make_engine(f"sqlite+aiosqlite:///{database}")
    await upgrade_engine(engine)
    other = await _other_program_holding_the_lock(database)
    try:
        yield _Beside(make_sessionmaker(engine), other)
    finally:
        if other.returncode is None:
            other.kill()
            await other.wait()
        await engine.dispose()


async def test_a_writer_waiting_for_another_programs_lock_leaves_the_desk_answering(
    beside_another_program: _Beside,
) -> None:
    """Statements run on the loop's thread, but a writer never waits there for a lock.

    While another program holds the write lock, the desk's writer waits without
    holding up the loop (other work goes on, a read is answered), and its write
    lands as soon as the other program commits, with nothing lost on either side.
    """
    desk = beside_another_program
    loop = asyncio.get_running_loop()

    async def write() -> None:
        async with desk.sessions.begin() as session:
            session.add(_row("desk"))

    writing = asyncio.create_task(write())
    gaps: list[float] = []
    last = loop.time()
    for _ in range(40):  # 40 turns of the loop of about 5 ms while the writer waits
        await asyncio.sleep(0.005)
        gaps.append(loop.time() - last)
        last = loop.time()
    assert not writing.done()  # it waits for the other program's lock...
    assert max(gaps) < 0.2, gaps  # ...without holding the loop (SQLite's wait would)
    assert await desk.keys() == set()  # and a read is answered meanwhile
    await _let_go(desk.other)
    await asyncio.wait_for(writing, timeout=10)
    assert await desk.keys() == {"other", "desk"}


async def test_a_writer_that_waits_too_long_for_another_program_fails_and_frees_its_turn(
    beside_another_program: _Beside, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the busy timeout (30 s; here shortened) the write fails as SQLite's did: "locked".

    The process's next writer is not stuck behind it: once the other program
    lets go, it writes at once.
    """
    monkeypatch.setattr(sqlite_in_loop, "WRITE_WAIT_SECONDS", 0.3)
    desk = beside_another_program
    with pytest.raises(OperationalError, match="locked"):
        async with desk.sessions.begin() as session:
            session.add(_row("too-late"))
    await _let_go(desk.other)
    async with desk.sessions.begin() as session:
        session.add(_row("after"))
    assert await desk.keys() == {"other", "after"}


async def test_a_writer_cancelled_while_its_commit_waits_for_the_disk_leaves_a_usable_desk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit runs on another thread; cancelled meanwhile, the writer waits for it to end.

    What it wrote is kept (the database had it), nothing runs beside the commit on
    the same connection, and the process's next writers and readers go on as usual.
    """
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    committing = asyncio.Event()
    threads = ThreadPoolExecutor(max_workers=1)

    class SlowDisk:
        def submit(self, fn: Any, *args: Any) -> Any:
            def slow() -> Any:
                loop.call_soon_threadsafe(committing.set)
                time.sleep(0.3)  # a disk slow to sync, on the commit's own thread
                return fn(*args)

            return threads.submit(slow)

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}")
    await upgrade_engine(engine)
    sessions = make_sessionmaker(engine)
    try:
        monkeypatch.setattr(sqlite_in_loop, "_committer", lambda: SlowDisk())

        async def write(key: str) -> None:
            async with sessions.begin() as session:
                session.add(_row(key))

        writing = asyncio.create_task(write("cancelled"))
        await asyncio.wait_for(committing.wait(), timeout=10)
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(writing, timeout=10)
        await asyncio.wait_for(write("next"), timeout=10)
        async with sessions() as reader:
            keys = set(await reader.scalars(select(ConversationState.key)))
        assert keys == {"cancelled", "next"}
    finally:
        await engine.dispose()
        threads.shutdown()
