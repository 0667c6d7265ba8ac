"""Letters fetched by size (issue 12, item 2), through Dovecot, aiosmtpd and the Bot API stand-in.

The poller reads every new letter's size first. A chunk is capped in bytes as
well as in letters, so a few large letters cannot make one FETCH and one
transaction hold hundreds of megabytes; a letter over the size limit is never
fetched whole: it is recorded by its headers, staff are told, and the person
is asked to send it again in smaller parts.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.imap import PROCESSED_KEYWORD, ImapSettings
from mail.intake import MailIntake
from mail.outcomes import IntakeResult, Outcome
from mail.poller import MailPoller
from mail.sender import SmtpSender
from tests.clocks import FrozenClock
from tests.mailservers import Dovecot, SmtpServer, dovecot, smtp_server  # noqa: F401
from tests.telegram_desk import STAFF_CHAT, Desk
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import Audience, Channel
from workflows.persistence.tables import InboundMail, OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

MB = 1024 * 1024
BODY_MARK = b"THE-BIG-BODY-"


class RecordingIntake(MailIntake):
    """The real intake, noting what each batch it was handed held (through its public method)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[tuple[int, int]]] = []  # (uid, bytes handed over) per batch
        self.too_large: dict[int, int] = {}

    async def handle_batch(
        self, letters: Sequence[tuple[int, bytes]], **where: Any
    ) -> list[IntakeResult]:
        self.batches.append([(uid, len(raw)) for uid, raw in letters])
        sizes: Mapping[int, int] = where.get("too_large") or {}
        self.too_large.update(sizes)
        return await super().handle_batch(letters, **where)


def small_letter(number: int, attachment: int = 0) -> bytes:
    message = EmailMessage()
    message["From"] = f"Клиент {number} <client{number}@example.kz>"
    message["To"] = "aina.app@mercury.kz"
    message["Subject"] = "Удаление аккаунта"
    message["Message-ID"] = f"<size-{number}@example.kz>"
    message.set_content("Прошу удалить мой аккаунт.")
    if attachment:
        message.add_attachment(
            bytes(range(256)) * (attachment // 256), "application", "pdf", filename="scan.pdf"
        )
    return bytes(message)


def huge_letter(megabytes: int) -> bytes:
    """A letter of ``megabytes`` MB whose attachment lines all carry ``BODY_MARK``."""
    head = (
        "From: Big Sender <big@example.kz>\r\n"
        "To: aina.app@mercury.kz\r\n"
        "Subject: =?utf-8?b?"
        + base64.b64encode("<b>Скан паспорта</b> & выписка".encode()).decode()
        + "?=\r\n"
        "Message-ID: <huge-1@example.kz>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="cut"\r\n'
        "\r\n"
        "--cut\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Прошу удалить мой аккаунт, скан паспорта во вложении.\r\n"
        "--cut\r\n"
        'Content-Type: application/pdf; name="passport.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
    ).encode()
    line = BODY_MARK + b"A" * (76 - len(BODY_MARK)) + b"\r\n"
    lines = line * (megabytes * MB // len(line))
    return head + lines + b"--cut--\r\n"


@pytest.fixture
async def parts(
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> AsyncIterator[Callable[..., tuple[MailPoller, RecordingIntake, OutboxDispatcher]]]:
    """The mail channel's parts as ``build_mail_channel`` wires them, with the recording intake."""
    made: list[MailPoller] = []

    def build(
        server: Dovecot, **sizes: int
    ) -> tuple[MailPoller, RecordingIntake, OutboxDispatcher]:
        max_letter = sizes.get("max_letter_bytes", 25 * MB)
        intake = RecordingIntake(service, sessions, vault, clock, max_letter_bytes=max_letter)
        settings = ImapSettings(
            host=server.host,
            port=server.port,
            username=server.user,
            password=server.password,
            security="none",
            timeout=30.0,
            **sizes,
        )
        poller = MailPoller(settings, intake, sessions, clock)
        sender = SmtpSender(
            host=smtp_server.host,
            port=smtp_server.port,
            security="none",
            from_address="aina.app@mercury.kz",
            service=service,
            clock=clock,
            timeout=10.0,
        )
        made.append(poller)
        return poller, intake, OutboxDispatcher(sessions, vault, clock, {Channel.EMAIL: sender})

    yield build
    for poller in made:
        await poller.close()
        poller.shutdown()


def imap_bytes_sent(server: Dovecot) -> int:
    """What Dovecot says it sent over all finished IMAP sessions ("Logged out in=.. out=..")."""
    log = (server.root / "dovecot.log").read_text(encoding="utf-8", errors="replace")
    return sum(int(found) for found in re.findall(r"Logged out in=\d+ out=(\d+)", log))


async def test_a_60_mb_letter_is_recorded_by_its_headers_and_the_small_ones_are_answered(
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    parts: Callable[..., tuple[MailPoller, RecordingIntake, OutboxDispatcher]],
    desk: Desk,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    huge = huge_letter(60)
    assert len(huge) > 59 * MB
    with dovecot.client() as box:
        box.append(small_letter(1), "INBOX")
        box.append(small_letter(2), "INBOX")
        box.append(huge, "INBOX")
        box.append(small_letter(4), "INBOX")
    poller, intake, dispatcher = parts(dovecot)

    results = await poller.poll_once()
    await poller.close()  # Dovecot writes the session's byte count when it ends
    while await dispatcher.run_once():
        pass

    assert [r.outcome for r in results] == [
        Outcome.OPENED,
        Outcome.OPENED,
        Outcome.TOO_LARGE,
        Outcome.OPENED,
    ]
    # The big body never left the server: the intake saw its headers only, and the
    # poller's whole IMAP session carried less than a megabyte.
    assert intake.too_large.keys() == {3} and intake.too_large[3] >= len(huge)
    assert max(size for batch in intake.batches for _, size in batch) < 64 * 1024
    assert 0 < imap_bytes_sent(dovecot) < MB
    async with sessions() as session:
        row = await session.scalar(select(InboundMail).where(InboundMail.uid == 3))
    assert row is not None and row.outcome == "too_large" and row.request_id is None
    assert row.raw_enc is not None
    kept = vault.decrypt_bytes(row.raw_enc)
    assert b"Message-ID: <huge-1@example.kz>" in kept and BODY_MARK not in kept
    assert all(PROCESSED_KEYWORD in flags for flags in dovecot.flags().values())

    # The small ones are acknowledged; the big one's writer is told, in Russian, what to do.
    by_address = {letter.recipients[0]: letter.message for letter in smtp_server.letters}
    assert sorted(by_address) == [
        "big@example.kz",
        "client1@example.kz",
        "client2@example.kz",
        "client4@example.kz",
    ]
    note = by_address["big@example.kz"]
    text = note.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "25 МБ" in text and "60" in text
    assert note["In-Reply-To"] == "<huge-1@example.kz>"
    assert note["Auto-Submitted"] == "auto-replied"

    # Staff read it in the group: masked sender, size, the subject escaped.
    notice = await desk.expect(STAFF_CHAT, 0, lambda c: "b***@example.kz" in str(c.params))
    shown = str(notice.params["text"])
    assert "&lt;b&gt;Скан паспорта&lt;/b&gt; &amp; выписка" in shown
    assert "60" in shown and "big@example.kz" not in shown

    # Read again from the start (a crash before the cursor moved): nothing doubles.
    again, _, _ = parts(dovecot)
    async with sessions() as session:
        before = len(list(await session.scalars(select(OutboxItem))))
    assert await again.poll_once() == []
    await again.close()
    async with sessions() as session:
        assert len(list(await session.scalars(select(OutboxItem)))) == before


async def test_a_chunk_is_cut_by_bytes_as_well_as_by_count(
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    parts: Callable[..., tuple[MailPoller, RecordingIntake, OutboxDispatcher]],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Five letters of about 400 KB and, third, one of 1.5 MB; chunks of at most 1 MB.
    sizes = {1: 300_000, 2: 300_000, 3: 1_100_000, 4: 300_000, 5: 300_000, 6: 300_000}
    with dovecot.client() as box:
        for number, attachment in sizes.items():
            box.append(small_letter(number, attachment), "INBOX")
    poller, intake, dispatcher = parts(dovecot, chunk_bytes=MB, max_letter_bytes=5 * MB)

    results = await poller.poll_once()

    assert [r.outcome for r in results] == [Outcome.OPENED] * 6
    assert [[uid for uid, _ in batch] for batch in intake.batches] == [[1, 2], [3], [4, 5], [6]]
    assert all(sum(size for _, size in batch) <= MB for batch in intake.batches if len(batch) > 1)
    assert intake.too_large == {}
    async with sessions() as session:
        stored = list(await session.scalars(select(InboundMail.outcome)))
    assert stored == ["opened"] * 6
    while await dispatcher.run_once():
        pass
    assert len(smtp_server.letters) == 6
    assert not any(item.audience == Audience.STAFF_GROUP.value for item in await _outbox(sessions))


async def _outbox(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxItem]:
    async with sessions() as session:
        return list(await session.scalars(select(OutboxItem)))
