"""``aina-dsr run`` under faults: killed mid-intake, the database gone for a while, the
mail servers restarted under it. Nothing is lost and the process recovers on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mail.channel import POLLER_LOCK, MailChannel
from mail.poller import _CHUNK
from tests.conftest import postgres_url
from tests.desk_process import (
    DeskProcess,
    access_letter,
    aina_dsr,
    append_all,
    base_env,
    eventually,
    free_port,
    lock_holders,
    mail_env,
    postgres_schema,
    processes,
)
from tests.mailservers import Dovecot, RecordingHandler, SmtpServer, dovecot, smtp_server
from workflows.deadlines.leader_lock import SCHEDULER_LOCK, advisory_key
from workflows.persistence.engines import make_engine, make_sessionmaker

__all__ = ["dovecot", "smtp_server"]

# The poller stores letters a chunk at a time (one transaction each): with more than
# two chunks in the mailbox, a kill can land after some chunks and before the rest.
BATCH = 2 * _CHUNK + 20
# What OutboxDispatcher claims a row for: what a dead process had claimed is sent
# again by its successor at once, never after this.
OUTBOX_LEASE = timedelta(minutes=2)
# E-mail waiting to go out. (With no Telegram configured, the staff digest the
# scheduler queues for the staff group stays pending: nobody here delivers it.)
EMAIL_WAITING = "SELECT count(*) FROM outbox WHERE channel = 'email' AND status <> 'sent'"
EMAIL_SENDING = "SELECT count(*) FROM outbox WHERE channel = 'email' AND status = 'sending'"


async def count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    # A reader's session: on SQLite it takes no lock, so it counts while the desk writes.
    async with make_sessionmaker(engine)() as session:
        return int((await session.execute(text(sql), params)).scalar_one())


def senders(smtp: SmtpServer) -> Counter[str]:
    """How many letters the desk sent to each address."""
    return Counter(address for letter in smtp.letters for address in letter.recipients)


async def test_a_kill_mid_intake_loses_no_letter_and_doubles_no_request(
    database_url: str,
    dovecot: Dovecot,
    smtp_server: SmtpServer,
    tmp_path: Path,
    encryption_key: str,
) -> None:
    env = {**base_env(tmp_path, database_url, encryption_key), **mail_env(dovecot, smtp_server)}
    await aina_dsr(env, tmp_path, "db", "upgrade")
    append_all(dovecot, [access_letter(number) for number in range(BATCH)])
    engine = make_engine(database_url)
    first, second = DeskProcess("first", env, tmp_path), DeskProcess("second", env, tmp_path)
    try:
        async with processes(first, second):
            await first.start()

            async def some_taken() -> int:
                return await count(engine, "SELECT count(*) FROM inbound_mail")

            await eventually(some_taken, timeout=60, every=0.02, what="the first letters taken")
            await first.kill()
            taken_before = await some_taken()
            assert 0 < taken_before < BATCH, "the kill came too late to be mid-intake"

            # What the dead process had claimed (one letter of it perhaps on its way).
            in_flight = await count(engine, EMAIL_SENDING)
            await second.start()

            async def all_taken() -> bool:
                return await count(engine, "SELECT count(*) FROM inbound_mail") == BATCH

            await eventually(all_taken, timeout=60, what=f"all {BATCH} letters taken")

            async def all_acknowledged() -> bool:
                waiting = await count(engine, EMAIL_WAITING)
                return waiting == 0 and len(senders(smtp_server)) == BATCH

            await eventually(all_acknowledged, timeout=60, what="every letter acknowledged")
            assert await second.stop() == 0, second.log()

        assert await count(engine, "SELECT count(*) FROM request") == BATCH
        assert await count(engine, "SELECT count(DISTINCT request_id) FROM inbound_mail") == BATCH
        assert (
            await count(engine, "SELECT count(*) FROM inbound_mail WHERE request_id IS NULL") == 0
        )
        # Every person heard back; a second copy only of what was in flight at the kill.
        heard = senders(smtp_server)
        assert set(heard) == {f"person{n}@example.kz" for n in range(BATCH)}
        assert sum(times - 1 for times in heard.values()) <= min(in_flight, 1)
        # Every letter is flagged as handled in the mailbox and none was deleted.
        assert len(dovecot.uids()) == BATCH
    finally:
        await engine.dispose()


@dataclass
class SlowHandler(RecordingHandler):
    """A slow SMTP server: each letter waits ``delay`` seconds for its 250.

    A letter whose client is gone before then is not taken: aiosmtpd cancels the
    handler when the connection is lost, as a real server drops an unfinished letter.
    """

    delay: float = 0.1
    entered: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.entered += 1
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer("127.0.0.1", free_port(), SlowHandler())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_kill_mid_batch_is_made_good_within_seconds_of_the_restart(
    database_url: str,
    dovecot: Dovecot,
    slow_smtp_server: SmtpServer,
    tmp_path: Path,
    encryption_key: str,
) -> None:
    smtp, people = slow_smtp_server, 24
    handler = smtp.handler
    assert isinstance(handler, SlowHandler)
    env = {**base_env(tmp_path, database_url, encryption_key), **mail_env(dovecot, smtp)}
    await aina_dsr(env, tmp_path, "db", "upgrade")
    append_all(dovecot, [access_letter(number) for number in range(people)])
    engine = make_engine(database_url)
    first, second = DeskProcess("first", env, tmp_path), DeskProcess("second", env, tmp_path)
    try:
        async with processes(first, second):
            await first.start()
            # Killed while the fourth acknowledgement is on its way, the rest claimed.
            await eventually(
                _async(lambda: handler.entered >= 4), timeout=60, every=0.01, what="3 letters sent"
            )
            await first.kill()
            stranded = await count(engine, EMAIL_SENDING)
            assert stranded > 1, "the kill came after the batch"

            restarted = time.monotonic()
            await second.start()

            async def all_acknowledged() -> bool:
                waiting = await count(engine, EMAIL_WAITING)
                return waiting == 0 and len(senders(smtp)) == people

            # Well within the two-minute lease that used to hold these letters back.
            await eventually(all_acknowledged, timeout=60, what="every letter acknowledged")
            took = time.monotonic() - restarted
            assert await second.stop() == 0, second.log()
        heard = senders(smtp)
        assert set(heard) == {f"person{n}@example.kz" for n in range(people)}
        assert [who for who, times in heard.items() if times > 1] == []
        assert took < OUTBOX_LEASE.total_seconds() / 2, took
    finally:
        await engine.dispose()


@pytest.mark.skipif(postgres_url() is None, reason="needs PostgreSQL (DSR_TEST_DATABASE_URL)")
async def test_the_database_going_away_for_a_while_is_waited_out(
    dovecot: Dovecot, smtp_server: SmtpServer, tmp_path: Path, encryption_key: str
) -> None:
    async with postgres_schema() as pg:
        env = {**base_env(tmp_path, pg.url, encryption_key), **mail_env(dovecot, smtp_server)}
        await aina_dsr(env, tmp_path, "db", "upgrade")
        engine = make_engine(pg.query_url)
        keys = [advisory_key(SCHEDULER_LOCK, pg.schema), advisory_key(POLLER_LOCK, pg.schema)]
        desk = DeskProcess("desk", env, tmp_path)
        try:
            async with processes(desk):
                await desk.start()
                dovecot.append(access_letter(1))
                await _acknowledged(engine, smtp_server, 1)

                # The database goes away: every connection of the desk is cut and new
                # ones are refused, as while a server restarts or fails over.
                crashes = desk.log().count("mail poller crashed")
                await pg.refuse_logins(True)
                assert await pg.terminate_connections() > 0
                dovecot.append(access_letter(2))  # arrives while the database is away

                async def letter_met_the_outage() -> bool:
                    # The poller read the letter, could not store it, and is started again.
                    return desk.log().count("mail poller crashed") > crashes

                await eventually(letter_met_the_outage, timeout=60, what="the poller failing")
                assert desk.running, desk.log()
                assert await count(engine, "SELECT count(*) FROM request") == 1
                for key in keys:
                    assert await lock_holders(engine, key) == 0

                # It comes back: the letter that waited is taken, the scheduler and the
                # mailbox reader lead again, and the next letter is taken too.
                await pg.refuse_logins(False)
                await _acknowledged(engine, smtp_server, 2, timeout=60)
                dovecot.append(access_letter(3))
                await _acknowledged(engine, smtp_server, 3, timeout=60)

                async def leading_again() -> bool:
                    return all([await lock_holders(engine, key) == 1 for key in keys])

                await eventually(leading_again, timeout=60, what="both locks taken again")
                assert desk.running
                assert await desk.stop() == 0, desk.log()
            assert await count(engine, "SELECT count(*) FROM request") == 3
            assert all(times == 1 for times in senders(smtp_server).values())
        finally:
            await engine.dispose()


async def test_imap_and_smtp_restarted_under_it_are_reconnected(
    dovecot: Dovecot, smtp_server: SmtpServer, tmp_path: Path, encryption_key: str
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/desk.db"
    env = {**base_env(tmp_path, database_url, encryption_key), **mail_env(dovecot, smtp_server)}
    await aina_dsr(env, tmp_path, "db", "upgrade")
    desk = DeskProcess("desk", env, tmp_path)
    engine = make_engine(database_url)
    try:
        async with processes(desk):
            await desk.start()
            dovecot.append(access_letter(1))
            await _acknowledged(engine, smtp_server, 1)

            # Both servers go down together, and come back one after the other.
            outages_seen = desk.log().count("unavailable")
            dovecot.stop()
            smtp_server.stop()

            async def imap_outage_seen() -> bool:
                return desk.log().count("unavailable") > outages_seen

            await eventually(imap_outage_seen, timeout=60, what="the desk seeing IMAP down")
            assert desk.running, desk.log()
            dovecot.start()
            dovecot.append(access_letter(2))  # taken while SMTP is still down

            async def taken() -> bool:
                return await count(engine, "SELECT count(*) FROM request") == 2

            await eventually(taken, timeout=60, what="the letter after the IMAP restart taken")

            async def acknowledgement_refused() -> bool:
                # Its acknowledgement failed once and waits to be retried.
                sql = (
                    "SELECT count(*) FROM outbox WHERE channel = 'email' AND status = 'pending' "
                    "AND last_error IS NOT NULL"
                )
                return bool(await count(engine, sql))

            await eventually(acknowledgement_refused, timeout=60, what="a refused acknowledgement")
            smtp_server.start()
            await _acknowledged(engine, smtp_server, 2, timeout=60)
            assert await desk.stop() == 0, desk.log()
        assert all(times == 1 for times in senders(smtp_server).values())
    finally:
        await engine.dispose()


async def _acknowledged(
    engine: AsyncEngine,
    smtp: SmtpServer,
    number: int,
    *,
    timeout: float = 60,  # noqa: ASYNC109 (a test's bound)
) -> None:
    """Until person ``number``'s letter is a request and its acknowledgement reached SMTP."""

    async def done() -> bool:
        heard = f"person{number}@example.kz" in senders(smtp)
        waiting = await count(engine, EMAIL_WAITING)
        return heard and waiting == 0

    await eventually(done, timeout=timeout, what=f"letter {number} acknowledged")


# -- the mailbox lock, without servers ------------------------------------------------


class FlakyLock:
    """A leader lock that is refused ``refusals`` times, then held until ``lose()``."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.held = False
        self.released = 0

    async def acquire(self) -> bool:
        if self.refusals > 0:
            self.refusals -= 1
            return False
        self.held = True
        return True

    async def alive(self) -> bool:
        return self.held

    async def release(self) -> None:
        self.held = False
        self.released += 1

    def lose(self) -> None:
        self.held = False  # its connection broke: the server dropped the lock


class RecordingPoller:
    def __init__(self) -> None:
        self.runs = 0
        self.running = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1
        self.running.set()
        try:
            await stop.wait()
        finally:
            self.running.clear()

    def shutdown(self) -> None:
        return None


class IdleOutbox:
    async def run_once(self) -> int:
        return 0

    async def close(self) -> None:
        return None


async def test_the_mailbox_is_read_only_while_the_lock_is_held() -> None:
    lock, poller = FlakyLock(refusals=2), RecordingPoller()
    channel = MailChannel(
        poller,  # type: ignore[arg-type]
        IdleOutbox(),  # type: ignore[arg-type]
        lock=lock,
        lock_retry_seconds=0.05,
        lock_check_seconds=0.05,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(channel.run(stop))
    try:
        await asyncio.wait_for(poller.running.wait(), timeout=5)
        assert (lock.refusals, poller.runs) == (0, 1)  # polled only once the lock was ours

        lock.lose()
        # It stops polling, lets go, and tries again: here the lock is free, so it leads again.
        await eventually(_async(lambda: poller.runs == 2), timeout=5, every=0.01)
        assert lock.released == 1 and lock.held
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)
    assert not lock.held  # released on the way out


def _async(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return condition()

    return probe
