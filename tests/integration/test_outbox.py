"""The outbox: nothing lost across a crash, nothing sent twice for one key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.holds import HOLD, NoticeHolds
from workflows.outbox.owners import OutboxOwnedElsewhere, claim_owners
from workflows.outbox.queue import (
    Audience,
    Channel,
    DeliveryReceipt,
    OutgoingMessage,
    PermanentFailure,
    RecipientUnreachable,
    RetryLater,
    enqueue,
)
from workflows.persistence.tables import AuditEvent, OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.intake import SharedContact
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = 700100


class ProcessDied(BaseException):
    """Stands for the process being killed in the middle of a delivery."""


class RecordingPort:
    """A channel's way out that keeps what it was asked to deliver."""

    def __init__(self, channel: Channel, *failures: BaseException) -> None:
        self.channel = channel
        self.delivered: list[OutgoingMessage] = []
        self._failures = list(failures)

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
        if self._failures:
            raise self._failures.pop(0)
        self.delivered.append(message)
        return DeliveryReceipt(external_id=f"ext-{message.id}", body=f"rendered {message.template}")


def dispatcher(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    *ports: RecordingPort,
) -> OutboxDispatcher:
    return OutboxDispatcher(sessions, vault, clock, {p.channel: p for p in ports})


async def test_a_message_committed_before_a_crash_is_sent_once_after_restart(
    service: RequestService,
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    view = await service.open_request(
        kind="access", channel="telegram", language="ru", telegram_user_id=ALICE
    )
    # The process dies here: the request and its acknowledgement are committed, nothing sent.
    telegram = RecordingPort(Channel.TELEGRAM)
    restarted = dispatcher(sessions, vault, clock, telegram)

    assert await restarted.run_once() == 1
    assert await restarted.run_once() == 0
    [message] = telegram.delivered
    assert (message.template, message.address, message.language) == (
        "request_received",
        str(ALICE),
        "ru",
    )
    assert message.reference == view.reference
    assert await service.messages(view.reference) == [
        ("out", "telegram", "rendered request_received")
    ]


async def test_a_delivery_cut_short_by_a_crash_is_retried_after_its_lease(
    service: RequestService,
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE
    )
    dying = dispatcher(sessions, vault, clock, RecordingPort(Channel.TELEGRAM, ProcessDied()))
    with pytest.raises(ProcessDied):
        await dying.run_once()

    telegram = RecordingPort(Channel.TELEGRAM)
    successor = dispatcher(sessions, vault, clock, telegram)
    assert await successor.run_once() == 0, "the lease still protects the row"
    clock.advance(minutes=3)
    assert await successor.run_once() == 1
    clock.advance(minutes=3)
    assert await successor.run_once() == 0
    assert len(telegram.delivered) == 1


class DiesAt(RecordingPort):
    """Delivers until its ``n``-th message, where the process dies mid-batch."""

    def __init__(self, channel: Channel, n: int) -> None:
        super().__init__(channel)
        self._n = n

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
        if len(self.delivered) + 1 == self._n:
            raise ProcessDied()
        return await super().deliver(message)


async def test_a_batch_cut_short_by_a_crash_keeps_what_it_sent_and_resends_only_the_rest(
    service: RequestService,
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    # The batch is claimed (and read) in one transaction, each delivery recorded as it
    # goes: a crash at the third message leaves two sent and recorded, none sent again.
    for user in range(3):
        await service.open_request(
            kind="access", channel="telegram", language="en", telegram_user_id=ALICE + user
        )
    dying_port = DiesAt(Channel.TELEGRAM, 3)
    dying = dispatcher(sessions, vault, clock, dying_port)
    with pytest.raises(ProcessDied):
        await dying.run_once()
    assert len(dying_port.delivered) == 2
    async with sessions() as session:
        rows = (await session.scalars(select(OutboxItem).order_by(OutboxItem.id))).all()
    assert [r.status for r in rows] == ["sent", "sent", "sending"]

    telegram = RecordingPort(Channel.TELEGRAM)
    successor = dispatcher(sessions, vault, clock, telegram)
    clock.advance(minutes=3)  # past the dead one's lease
    assert await successor.run_once() == 1
    clock.advance(minutes=3)
    assert await successor.run_once() == 0
    assert [m.id for m in telegram.delivered] == [rows[2].id]
    assert {m.id for m in dying_port.delivered} == {rows[0].id, rows[1].id}


async def test_one_key_is_one_message(sessions, vault, clock) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        async with sessions.begin() as session:
            await enqueue(
                session,
                vault,
                clock.now(),
                key="DSR-2026-000001/7/subject/request_taken",
                channel=Channel.TELEGRAM,
                audience=Audience.SUBJECT,
                template="request_taken",
                language="kk",
                params={},
                address="1",
            )
    async with sessions() as session:
        assert len((await session.scalars(select(OutboxItem))).all()) == 1


async def test_a_rolled_back_change_sends_nothing(sessions, vault, clock) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError):  # noqa: PT012 (the raise is the point)
        async with sessions.begin() as session:
            await enqueue(
                session,
                vault,
                clock.now(),
                key="k",
                channel=Channel.EMAIL,
                audience=Audience.SUBJECT,
                template="t",
                language="en",
                params={},
                address="a@b.kz",
            )
            raise RuntimeError("the change failed")
    port = RecordingPort(Channel.EMAIL)
    assert await dispatcher(sessions, vault, clock, port).run_once() == 0


async def test_retry_after_is_honoured_and_errors_are_retried_not_dropped(
    service: RequestService,
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE
    )
    telegram = RecordingPort(
        Channel.TELEGRAM, RetryLater("429 Too Many Requests", delay=30), ConnectionError("reset")
    )
    outbox = dispatcher(sessions, vault, clock, telegram)

    await outbox.run_once()  # 429: wait 30 s
    clock.advance(seconds=29)
    await outbox.run_once()
    assert telegram.delivered == []
    clock.advance(seconds=1)
    await outbox.run_once()  # connection reset: back off
    assert telegram.delivered == []
    clock.advance(minutes=1)
    await outbox.run_once()
    assert len(telegram.delivered) == 1
    assert telegram.delivered[0].attempt == 3


async def test_a_permanent_failure_is_recorded_and_shown_to_staff(
    service: RequestService,
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    view = await service.open_request(
        kind="complaint", channel="email", language="en", email="nobody@example.kz"
    )
    mail = RecordingPort(Channel.EMAIL, PermanentFailure("550 no such user"))
    telegram = RecordingPort(Channel.TELEGRAM)
    outbox = dispatcher(sessions, vault, clock, mail, telegram)

    await outbox.run_once()
    await outbox.run_once()

    assert [m.template for m in telegram.delivered] == ["staff_delivery_failed"]
    assert telegram.delivered[0].audience is Audience.STAFF_GROUP
    async with sessions() as session:
        failed = await session.scalar(
            select(OutboxItem).where(OutboxItem.template == "request_received")
        )
        assert (
            failed is not None and failed.status == "failed" and "550" in (failed.last_error or "")
        )
        actions = (
            await session.scalars(select(AuditEvent.action).where(AuditEvent.request_id == view.id))
        ).all()
        assert "delivery_failed" in actions


async def test_a_person_who_blocked_the_bot_is_reached_by_email(
    service: RequestService,
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    view = await service.open_request(
        kind="access", channel="telegram", language="kk", telegram_user_id=ALICE
    )
    person = Actor.person_telegram(ALICE)
    await service.send_email_code(view.reference, person, "aigerim@mail.kz")
    mail = RecordingPort(Channel.EMAIL)
    code = None
    telegram = RecordingPort(
        Channel.TELEGRAM, RecipientUnreachable("Forbidden: bot was blocked by the user")
    )
    outbox = dispatcher(sessions, vault, clock, telegram, mail)
    await outbox.run_once()
    code = next(m.params["code"] for m in mail.delivered if m.template == "verification_code")
    await service.verify_by_code(view.reference, code, person)

    # The acknowledgement that bounced off Telegram went by e-mail instead...
    await outbox.run_once()
    assert "request_received" in [m.template for m in mail.delivered]
    # ...and from now on the person hears from us by e-mail.
    await service.take(view.reference, Actor.staff(STAFF_ID, "Dana"))
    await outbox.run_once()
    taken = [m for m in mail.delivered if m.template == "request_taken"]
    assert [(m.address, m.language) for m in taken] == [("aigerim@mail.kz", "kk")]
    assert not [m for m in telegram.delivered if m.audience is Audience.SUBJECT]


async def test_two_dispatchers_never_deliver_the_same_row(
    service: RequestService,
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    for i in range(20):
        await service.open_request(
            kind="complaint", channel="telegram", language="en", telegram_user_id=i + 1
        )
    first, second = RecordingPort(Channel.TELEGRAM), RecordingPort(Channel.TELEGRAM)
    a, b = dispatcher(sessions, vault, clock, first), dispatcher(sessions, vault, clock, second)

    for _ in range(3):
        await asyncio.gather(a.run_once(), b.run_once())

    ids = [m.id for m in first.delivered + second.delivered]
    assert len(ids) == 20 and len(set(ids)) == 20


async def test_backoff_grows_and_is_capped() -> None:
    from workflows.running import backoff

    waits = [backoff(n) for n in range(1, 15)]
    assert waits == sorted(waits)
    assert waits[0] == 5 and waits[-1] == 3600
    assert timedelta(seconds=waits[-1]) == timedelta(hours=1)


class SlowPort(RecordingPort):
    """Delivers only after ``meanwhile`` has run: what happens elsewhere while a letter travels."""

    def __init__(self, channel: Channel, meanwhile: Callable[[], Awaitable[None]]) -> None:
        super().__init__(channel)
        self._meanwhile = meanwhile

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
        await self._meanwhile()
        return await super().deliver(message)


async def test_a_delivery_whose_claim_was_taken_meanwhile_is_recorded_once_and_reported(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE
    )
    quick = RecordingPort(Channel.TELEGRAM)
    other = dispatcher(sessions, vault, clock, quick)

    async def stuck_past_the_lease() -> None:
        # One delivery hangs longer than the lease: the other dispatcher takes the row.
        clock.advance(minutes=3)
        assert await other.run_once() == 1

    slow = SlowPort(Channel.TELEGRAM, stuck_past_the_lease)
    with caplog.at_level(logging.ERROR, logger="workflows.outbox.dispatcher"):
        assert await dispatcher(sessions, vault, clock, slow).run_once() == 1

    # The person got it twice (it cannot be helped after a hang); the desk records it once,
    # as the other dispatcher sent it, and says loudly what happened.
    assert len(slow.delivered) == len(quick.delivered) == 1
    assert await service.messages(view.reference) == [
        ("out", "telegram", "rendered request_received")
    ]
    async with sessions() as session:
        item = (await session.scalars(select(OutboxItem))).one()
    assert (item.status, item.external_id) == ("sent", f"ext-{item.id}")
    [report] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "twice" in report.getMessage()


async def test_a_restarted_desk_sends_at_once_what_its_dead_predecessor_had_claimed(
    service: RequestService,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    for person in range(3):
        await service.open_request(
            kind="access", channel="telegram", language="en", telegram_user_id=ALICE + person
        )
    dead = claim_owners(engine)
    dying = OutboxDispatcher(
        sessions,
        vault,
        clock,
        {Channel.TELEGRAM: RecordingPort(Channel.TELEGRAM, ProcessDied())},
        owners=dead,
    )
    with pytest.raises(ProcessDied):
        await dying.run_once()  # all three claimed, none sent
    # The process is gone: the kernel drops its file lock (SQLite), PostgreSQL the
    # locks of its connection.
    await dead.release(dying.token)

    telegram = RecordingPort(Channel.TELEGRAM)
    restarted = OutboxDispatcher(
        sessions, vault, clock, {Channel.TELEGRAM: telegram}, owners=claim_owners(engine)
    )
    assert await restarted.run_once() == 3, "no lease waited out"
    assert await restarted.run_once() == 0
    assert sorted(m.address for m in telegram.delivered) == [
        str(ALICE + person) for person in range(3)
    ]
    await restarted.close()


async def test_a_live_owners_claims_are_left_alone(
    service: RequestService,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE
    )
    # Two dispatchers of one process (SQLite), or of two live replicas (PostgreSQL).
    shared = claim_owners(engine)
    owners = (shared, shared) if engine.dialect.name == "sqlite" else (shared, claim_owners(engine))
    telegram = RecordingPort(Channel.TELEGRAM)
    busy = OutboxDispatcher(
        sessions,
        vault,
        clock,
        {Channel.TELEGRAM: RecordingPort(Channel.TELEGRAM, ProcessDied())},
        owners=owners[0],
    )
    with pytest.raises(ProcessDied):  # stands for "still delivering": the claim stays
        await busy.run_once()
    other = OutboxDispatcher(sessions, vault, clock, {Channel.TELEGRAM: telegram}, owners=owners[1])
    assert await other.run_once() == 0, "a live owner's claim is not taken"
    clock.advance(minutes=3)
    assert await other.run_once() == 1, "but its lease still runs out"
    await busy.close()
    await other.close()


async def test_on_sqlite_one_process_delivers_the_outbox(
    service: RequestService,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL lets several processes deliver")
    await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE
    )
    first, second = RecordingPort(Channel.TELEGRAM), RecordingPort(Channel.TELEGRAM)
    # Two owners on one file stand for two processes: the file lock tells them apart.
    running = OutboxDispatcher(
        sessions, vault, clock, {Channel.TELEGRAM: first}, owners=claim_owners(engine)
    )
    intruder = OutboxDispatcher(
        sessions, vault, clock, {Channel.TELEGRAM: second}, owners=claim_owners(engine)
    )
    assert await running.run_once() == 1
    with pytest.raises(OutboxOwnedElsewhere):
        await intruder.run_once()
    await running.close()  # the process stops: the next one may deliver
    assert await intruder.run_once() == 0
    await intruder.close()
    assert (len(first.delivered), len(second.delivered)) == (1, 0)


# A person's notice held by an update (workflows.outbox.holds) waits for its release.


async def test_a_held_notice_whose_release_never_comes_goes_once_the_hold_runs_out(
    service: RequestService,
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    holds = NoticeHolds({Channel.TELEGRAM})
    with holds.hold():
        await service.open_request(
            kind="access",
            channel="telegram",
            language="en",
            telegram_user_id=ALICE,
            contact=SharedContact(user_id=ALICE, phone="77011234567"),
        )
    # The process dies here, before the update's dialog write: nothing is released.
    telegram = RecordingPort(Channel.TELEGRAM)
    successor = dispatcher(sessions, vault, clock, telegram)
    assert await successor.run_once() == 1
    assert [m.template for m in telegram.delivered] == ["staff_card"]  # never held
    clock.advance(seconds=HOLD.total_seconds() - 1)
    assert await successor.run_once() == 0
    clock.advance(seconds=1)
    assert await successor.run_once() == 1
    assert [m.template for m in telegram.delivered] == ["staff_card", "request_verified"]


async def test_only_committed_notices_to_the_person_on_the_dispatchers_channels_are_held(
    sessions,
    vault,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    woken: list[int] = []
    holds = NoticeHolds({Channel.TELEGRAM}, wake=lambda: woken.append(1))

    async def notice(key: str, channel: Channel, audience: Audience) -> None:
        async with sessions.begin() as session:
            await enqueue(
                session,
                vault,
                clock.now(),
                key=key,
                channel=channel,
                audience=audience,
                template="request_taken",
                language="en",
                params={},
                address="1",
            )

    with holds.hold() as held:
        with pytest.raises(RuntimeError):  # noqa: PT012 (the raise is the point)
            async with sessions.begin() as session:
                await enqueue(
                    session,
                    vault,
                    clock.now(),
                    key="rolled back",
                    channel=Channel.TELEGRAM,
                    audience=Audience.SUBJECT,
                    template="request_taken",
                    language="en",
                    params={},
                    address="1",
                )
                raise RuntimeError("the filing failed")
        await notice("to the person", Channel.TELEGRAM, Audience.SUBJECT)
        await notice("to staff", Channel.TELEGRAM, Audience.STAFF_GROUP)
        await notice("by e-mail", Channel.EMAIL, Audience.SUBJECT)  # another dispatcher's
        holds.release(held)
    await notice("after the update", Channel.TELEGRAM, Audience.SUBJECT)
    async with sessions() as session:
        rows = {r.idempotency_key: r for r in await session.scalars(select(OutboxItem))}
    assert set(rows) == {"to the person", "to staff", "by e-mail", "after the update"}
    assert holds.released() == {rows["to the person"].id}
    assert woken == [1]
    due = {key: row.next_attempt_at - clock.now() for key, row in rows.items()}
    assert due == {
        "to the person": HOLD,
        "to staff": timedelta(0),
        "by e-mail": timedelta(0),
        "after the update": timedelta(0),
    }
    # Released, it goes at once; claimed, it is forgotten.
    telegram = RecordingPort(Channel.TELEGRAM)
    assert await dispatcher(sessions, vault, clock, telegram).run_once() == 2  # not it
    assert (
        await OutboxDispatcher(
            sessions, vault, clock, {Channel.TELEGRAM: telegram}, holds=holds
        ).run_once()
        == 1
    )
    assert holds.released() == frozenset()
    assert [m.idempotency_key for m in telegram.delivered] == [
        "to staff",
        "after the update",
        "to the person",
    ]
