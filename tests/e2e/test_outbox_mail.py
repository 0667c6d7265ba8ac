"""The outbox against a real SMTP server (aiosmtpd): a slow server while two replicas send,
and a database error right after a letter went out. Nobody gets a letter twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mail.sender import SmtpSender
from tests.clocks import FrozenClock
from tests.mail_desk import sender_for
from tests.mailservers import RecordingHandler, SmtpServer, smtp_server
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.owners import ClaimOwners, claim_owners
from workflows.outbox.queue import Channel, OutboxStatus
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

__all__ = ["smtp_server"]

SECONDS_PER_LETTER = 3.0


@dataclass
class SlowHandler(RecordingHandler):
    """A server that takes ``seconds`` of the desk's time per letter, and says when one came."""

    clock: FrozenClock | None = None
    seconds: float = SECONDS_PER_LETTER
    on_letter: Callable[[], None] = field(default=lambda: None)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        assert self.clock is not None
        self.clock.advance(seconds=self.seconds)
        reply = await super().handle_DATA(server, session, envelope)
        self.on_letter()
        return reply


@pytest.fixture
async def slow_smtp(clock: FrozenClock) -> AsyncIterator[tuple[SmtpServer, asyncio.Queue[None]]]:
    """A slow server; the queue gets an item (in the test's loop) as each letter arrives."""
    from tests.desk_process import free_port

    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[None] = asyncio.Queue()
    handler = SlowHandler(
        clock=clock, on_letter=lambda: loop.call_soon_threadsafe(arrived.put_nowait, None)
    )
    server = SmtpServer("127.0.0.1", free_port(), handler)
    server.start()
    try:
        yield server, arrived
    finally:
        server.stop()


async def open_by_mail(service: RequestService, person: int) -> str:
    address = f"person{person}@example.kz"
    view = await service.open_request(
        kind="access",
        channel="email",
        language="en",
        fields={"full_name": f"Person {person}", "email": address},
        email=address,
        body="What data do you hold about me?",
        external_id=f"<letter-{person}@example.kz>",
        send_code_to_email=True,
    )
    return view.reference


def replica(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    sender: SmtpSender,
    owners: ClaimOwners,
    **options: Any,
) -> OutboxDispatcher:
    return OutboxDispatcher(
        sessions, vault, clock, {Channel.EMAIL: sender}, owners=owners, **options
    )


def letters_per_person(smtp: SmtpServer) -> Counter[str]:
    return Counter(address for letter in smtp.letters for address in letter.recipients)


async def test_a_slow_mail_server_and_two_replicas_send_each_letter_once(
    service: RequestService,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    slow_smtp: tuple[SmtpServer, asyncio.Queue[None]],
) -> None:
    server, arrived = slow_smtp
    people = 50  # one claimed batch; at 3 s a letter it takes 150 s, past a 2-minute lease
    for person in range(people):
        await open_by_mail(service, person)
    # Two replicas on PostgreSQL; on SQLite, where one process delivers, two dispatchers in it.
    first_owners = claim_owners(engine)
    second_owners = first_owners if engine.dialect.name == "sqlite" else claim_owners(engine)
    first = replica(sessions, vault, clock, sender_for(server, service, clock), first_owners)
    second = replica(sessions, vault, clock, sender_for(server, service, clock), second_owners)

    sending = asyncio.create_task(first.run_once())
    while not sending.done():
        # After each letter the other replica looks for work, as it does every few seconds.
        next_letter = asyncio.ensure_future(arrived.get())
        done, _ = await asyncio.wait(
            {next_letter, sending}, timeout=30, return_when="FIRST_COMPLETED"
        )
        next_letter.cancel()
        assert done, "no letter went out within 30 s"
        await second.run_once()
    assert await sending == people
    while await first.run_once() + await second.run_once():
        pass

    heard = letters_per_person(server)
    assert set(heard) == {f"person{n}@example.kz" for n in range(people)}
    assert [who for who, times in heard.items() if times > 1] == []
    async with sessions() as session:
        statuses = (await session.scalars(select(OutboxItem.status))).all()
    assert set(statuses) == {OutboxStatus.SENT.value}
    await first.close()
    await second.close()


async def fail_recording_sends(engine: AsyncEngine, only: int | None = None) -> None:
    """From now on the database refuses to record a letter as sent (a real error, raised by
    it): every letter, or ``only`` the outbox row of that id."""
    which = "" if only is None else f" AND NEW.id = {int(only)}"
    async with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            await connection.execute(
                text(
                    "CREATE TRIGGER outbox_fault BEFORE UPDATE OF status ON outbox "
                    f"WHEN NEW.status = 'sent'{which} "
                    "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
                )
            )
            return
        await connection.execute(
            text(
                "CREATE FUNCTION outbox_fault() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'could not write: No space left on device'; END $$"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER outbox_fault BEFORE UPDATE ON outbox FOR EACH ROW "
                f"WHEN (NEW.status = 'sent'{which}) EXECUTE FUNCTION outbox_fault()"
            )
        )


async def record_sends_again(engine: AsyncEngine) -> None:
    """The database is well again."""
    async with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            await connection.execute(text("DROP TRIGGER outbox_fault"))
        else:
            await connection.execute(text("DROP TRIGGER outbox_fault ON outbox"))


async def test_a_letter_sent_just_before_a_database_error_is_recorded_when_it_passes(
    service: RequestService,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,
) -> None:
    reference = await open_by_mail(service, 1)
    await fail_recording_sends(engine)
    waits: list[float] = []

    async def pause(seconds: float) -> None:
        waits.append(seconds)
        await record_sends_again(engine)  # the error passes while the dispatcher waits

    outbox = replica(
        sessions,
        vault,
        clock,
        sender_for(smtp_server, service, clock),
        claim_owners(engine),
        pause=pause,
    )
    assert await outbox.run_once() == 1

    assert len(waits) == 1 and letters_per_person(smtp_server) == {"person1@example.kz": 1}
    async with sessions() as session:
        item = (await session.scalars(select(OutboxItem))).one()
    assert item.status == OutboxStatus.SENT.value
    assert [m[:2] for m in await service.messages(reference)][-1] == ("out", "email")
    clock.advance(minutes=10)
    assert await outbox.run_once() == 0
    assert letters_per_person(smtp_server) == {"person1@example.kz": 1}
    await outbox.close()


async def test_a_letter_sent_before_a_long_database_error_is_never_sent_again(
    service: RequestService,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,
) -> None:
    reference = await open_by_mail(service, 1)
    await fail_recording_sends(engine)
    waits: list[float] = []

    async def pause(seconds: float) -> None:
        waits.append(seconds)

    outbox = replica(
        sessions,
        vault,
        clock,
        sender_for(smtp_server, service, clock),
        claim_owners(engine),
        pause=pause,
    )
    with pytest.raises(Exception, match=r"disk I/O|No space left"):
        await outbox.run_once()  # sent, and every try to record it failed
    assert len(waits) >= 1, "the recording was tried again before giving up"
    assert letters_per_person(smtp_server) == {"person1@example.kz": 1}

    await record_sends_again(engine)
    clock.advance(minutes=10)  # long past the claim's lease
    await outbox.run_once()
    clock.advance(minutes=10)
    await outbox.run_once()

    assert letters_per_person(smtp_server) == {"person1@example.kz": 1}
    async with sessions() as session:
        item = (await session.scalars(select(OutboxItem))).one()
    assert item.status == OutboxStatus.SENT.value
    assert [m[:2] for m in await service.messages(reference)].count(("out", "email")) == 1
    await outbox.close()


async def test_a_letter_the_database_will_not_record_holds_back_no_other(
    service: RequestService,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,
) -> None:
    for person in range(3):
        await open_by_mail(service, person)
    async with sessions() as session:
        first = min((await session.scalars(select(OutboxItem.id))).all())
    await fail_recording_sends(engine, only=first)

    async def pause(seconds: float) -> None:
        return None

    outbox = replica(
        sessions,
        vault,
        clock,
        sender_for(smtp_server, service, clock),
        claim_owners(engine),
        pause=pause,
    )
    with pytest.raises(Exception, match=r"disk I/O|No space left"):
        await outbox.run_once()  # the first letter went; the batch stops there
    for _ in range(3):
        clock.advance(minutes=10)
        await outbox.run_once()

    assert letters_per_person(smtp_server) == {f"person{n}@example.kz": 1 for n in range(3)}
    async with sessions() as session:
        statuses = dict((await session.execute(select(OutboxItem.id, OutboxItem.status))).all())
    assert statuses.pop(first) == OutboxStatus.SENDING.value  # never recorded, never resent
    assert set(statuses.values()) == {OutboxStatus.SENT.value}
    await outbox.close()
