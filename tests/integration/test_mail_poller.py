"""The IMAP poller against a real Dovecot: each letter once, nothing lost, nothing deleted."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.imap import PROCESSED_KEYWORD
from mail.intake import MailIntake
from mail.outcomes import Outcome
from mail.poller import MailPoller
from tests.clocks import FrozenClock
from tests.mail_desk import make_letter, make_poller, settings_for  # noqa: F401
from tests.mailservers import Dovecot, dovecot  # noqa: F401
from workflows.persistence.tables import MailCursor
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService


async def test_new_letters_are_taken_once_flagged_and_left_unread(
    dovecot: Dovecot,  # noqa: F811
    make_poller: object,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for number in (1, 2, 3):
        dovecot.append(make_letter(number))
    poller = make_poller(dovecot)  # type: ignore[operator]

    first = await poller.poll_once()
    second = await poller.poll_once()

    assert [r.outcome for r in first] == [Outcome.OPENED] * 3
    assert second == []
    assert len(await service.list_requests()) == 3
    flags = dovecot.flags()
    assert sorted(flags) == [1, 2, 3]
    for uid_flags in flags.values():
        assert PROCESSED_KEYWORD in uid_flags
        assert "\\Seen" not in uid_flags
    async with sessions() as session:
        cursor = (await session.scalars(select(MailCursor))).one()
    assert (cursor.folder, cursor.last_uid) == ("INBOX", 3)


async def test_a_restart_mid_batch_loses_nothing_and_doubles_nothing(
    dovecot: Dovecot,  # noqa: F811
    make_poller: object,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    for number in range(1, 7):
        dovecot.append(make_letter(number))
    before = make_poller(dovecot)  # type: ignore[operator]
    assert len(await before.poll_once(limit=2)) == 2
    # The process dies: letter 3 was handled and committed, but neither the cursor
    # nor the flag were written.
    await MailIntake(service, sessions, vault, clock).handle(make_letter(3), uid=3)
    await before.close()

    after = make_poller(dovecot)  # type: ignore[operator]
    results = await after.poll_once()

    assert [r.outcome for r in results] == [Outcome.DUPLICATE] + [Outcome.OPENED] * 3
    assert len(await service.list_requests()) == 6
    assert all(PROCESSED_KEYWORD in f for f in dovecot.flags().values())


async def test_a_new_uidvalidity_rereads_the_folder_and_dedupe_decides(
    dovecot: Dovecot,  # noqa: F811
    make_poller: object,  # noqa: F811
    service: RequestService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for number in (1, 2):
        dovecot.append(make_letter(number), "Requests")
    poller = make_poller(dovecot, folder="Requests")  # type: ignore[operator]
    assert len(await poller.poll_once()) == 2
    await poller.close()

    # The mailbox is rebuilt (a server move): new UIDVALIDITY, the old letters again
    # under the same small UIDs, and one new letter.
    dovecot.recreate("Requests")
    for number in (1, 2, 3):
        dovecot.append(make_letter(number), "Requests")
    with caplog.at_level(logging.WARNING, logger="mail.poller"):
        results = await poller.poll_once()

    assert [r.outcome for r in results] == [Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.OPENED]
    assert len(await service.list_requests()) == 3
    assert "UIDVALIDITY" in caplog.text


async def test_a_processed_folder_receives_the_letters_and_nothing_is_deleted(
    dovecot: Dovecot,  # noqa: F811
    make_poller: object,  # noqa: F811
) -> None:
    dovecot.append(make_letter(1))
    dovecot.append(make_letter(2))
    poller = make_poller(dovecot, processed_folder="Processed")  # type: ignore[operator]

    await poller.poll_once()

    assert dovecot.uids("INBOX") == []
    assert len(dovecot.uids("Processed")) == 2


async def test_a_letter_that_cannot_be_read_does_not_block_the_inbox(
    dovecot: Dovecot,  # noqa: F811
    make_poller: object,  # noqa: F811
    service: RequestService,
) -> None:
    dovecot.append(b"Subject: no sender at all\r\n\r\n\xff\xfe broken\r\n")
    dovecot.append(make_letter(2))
    poller = make_poller(dovecot)  # type: ignore[operator]

    results = await poller.poll_once()

    assert [r.outcome for r in results] == [Outcome.QUARANTINED, Outcome.OPENED]
    assert len(await service.list_requests()) == 1
    assert all(PROCESSED_KEYWORD in f for f in dovecot.flags().values())


async def test_the_poller_waits_in_idle_reconnects_after_an_outage_and_stops_promptly(
    dovecot: Dovecot,  # noqa: F811
    make_poller: object,  # noqa: F811
    service: RequestService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    poller = make_poller(dovecot, idle_seconds=60.0)  # type: ignore[operator]
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="mail")
    task = asyncio.create_task(poller.run(stop))

    async def requests_become(count: int) -> None:
        for _ in range(400):  # bounded: 20 s at most
            if len(await service.list_requests()) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{count} requests never arrived")

    dovecot.append(make_letter(1))
    await requests_become(1)
    # The server dies (its connections reset at once). An orderly stop is covered by
    # tests/e2e/test_faults.py; Dovecot's BYE to an idling client comes 10 s after it.
    dovecot.discard()
    for _ in range(400):
        if "reconnecting" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "unavailable" in caplog.text and "reconnecting" in caplog.text
    dovecot.start()
    dovecot.append(make_letter(2))
    await requests_become(2)

    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert len(await service.list_requests()) == 2


async def test_a_crash_between_storing_and_moving_the_cursor_replays_without_doubles(
    dovecot: Dovecot,  # noqa: F811
    make_poller: object,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for number in range(1, 5):
        dovecot.append(make_letter(number))
    before: MailPoller = make_poller(dovecot)  # type: ignore[operator]

    async def dies(*_: object) -> None:
        raise ConnectionResetError("the process died here")

    # The batch is stored and committed; the process dies before the cursor moves.
    monkeypatch.setattr(before.cursors, "advance", dies)
    with pytest.raises(ConnectionResetError):
        await before.poll_once()
    assert len(await service.list_requests()) == 4
    assert not any(PROCESSED_KEYWORD in f for f in dovecot.flags().values())
    await before.close()

    after: MailPoller = make_poller(dovecot)  # type: ignore[operator]
    results = await after.poll_once()

    assert [r.outcome for r in results] == [Outcome.DUPLICATE] * 4
    assert len(await service.list_requests()) == 4
    assert all(PROCESSED_KEYWORD in f for f in dovecot.flags().values())
    async with sessions() as session:
        cursor = (await session.scalars(select(MailCursor))).one()
    assert cursor.last_uid == 4


async def test_a_mailbox_fuller_than_one_batch_is_read_without_waiting_in_between(
    dovecot: Dovecot,  # noqa: F811
    make_poller: object,  # noqa: F811
    service: RequestService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Regression: after a full batch the poller went into IDLE, and letters already in the
    # mailbox waited out the IDLE time (10 s a batch in the benchmark), as nothing new arrived.
    for number in range(1, 8):
        dovecot.append(make_letter(number))
    poller: MailPoller = make_poller(  # type: ignore[operator]
        dovecot, idle_seconds=600.0, max_batch=3
    )
    stop = asyncio.Event()
    waited_with: list[int] = []

    async def wait(_stop: asyncio.Event) -> None:
        waited_with.append(len(await service.list_requests()))
        stop.set()

    monkeypatch.setattr(poller, "wait_for_mail", wait)
    await asyncio.wait_for(poller.run(stop), timeout=20)

    assert waited_with == [7]
