"""Caps that protect other people (issue 12, item 1), through Dovecot and aiosmtpd.

A From address proves nothing: anyone can write "from" a stranger's mailbox,
under as many plus-tagged spellings as they like, and each letter would make
the desk mail that stranger a confirmation code. So acknowledgements to
addresses nobody has verified are capped per mailbox (plus-tags and case
folded) and per hour over all senders; a letter held back is kept, never
answered, and staff hear of it once per cap and hour.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.channel import MailChannel
from mail.outcomes import Outcome
from tests.clocks import FrozenClock
from tests.mail_desk import mail_channel
from tests.mailservers import Dovecot, SmtpServer, dovecot, smtp_server  # noqa: F401
from workflows.identity import mailbox_of
from workflows.outbox.queue import Audience
from workflows.persistence.tables import InboundMail, OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

Build = Callable[..., MailChannel]


def request_letter(
    sender: str,
    number: int,
    subject: str = "Удаление аккаунта",
    text: str = "Прошу удалить мой аккаунт.",
    **headers: str,
) -> bytes:
    message = EmailMessage()
    message["From"] = f"Someone <{sender}>"
    message["To"] = "aina.app@mercury.kz"
    message["Subject"] = subject
    message["Message-ID"] = f"<caps-{number}@sender.example>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text)
    return bytes(message)


@pytest.fixture
async def build(
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> AsyncIterator[Build]:
    made: list[MailChannel] = []

    def make(**limits: Any) -> MailChannel:
        channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock, **limits)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.poller.close()
        channel.poller.shutdown()


async def take_and_answer(channel: MailChannel) -> None:
    """One pass of the poller, then every e-mail the outbox holds goes out."""
    await channel.poller.poll_once()
    for _ in range(100):  # bounded
        if not await channel.dispatcher.run_once():
            return


def received_by(smtp: SmtpServer, mailbox: str) -> list[str]:
    """Addresses of the letters the desk sent that reached ``mailbox`` (whatever the +tag)."""
    return [
        address
        for letter in smtp.letters
        for address in letter.recipients
        if mailbox_of(address) == mailbox
    ]


async def rows(sessions: async_sessionmaker[AsyncSession]) -> list[InboundMail]:
    async with sessions() as session:
        return list(await session.scalars(select(InboundMail).order_by(InboundMail.id)))


async def staff_notices(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    """The staff group's notices about letters (not the cards of verified requests)."""
    async with sessions() as session:
        items = await session.scalars(
            select(OutboxItem)
            .where(
                OutboxItem.audience == Audience.STAFF_GROUP.value,
                OutboxItem.template.startswith("staff_mail_"),
            )
            .order_by(OutboxItem.id)
        )
        return [item.template for item in items]


def test_plus_tags_case_and_gmail_dots_fold_to_one_mailbox() -> None:
    assert mailbox_of("Victim+1@Example.KZ") == "victim@example.kz"
    assert mailbox_of("victim+news+2@example.kz") == "victim@example.kz"
    assert mailbox_of("victim@example.kz") == "victim@example.kz"
    assert mailbox_of("v.i.c.t.i.m+x@googlemail.com") == "victim@gmail.com"
    # Dots matter elsewhere, and an address that is all tag keeps it.
    assert mailbox_of("a.b@example.kz") == "a.b@example.kz"
    assert mailbox_of("+tag@example.kz") == "+tag@example.kz"


async def test_a_plus_tag_flood_mails_the_victim_only_the_caps_codes_and_keeps_every_letter(
    build: Build,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = build()  # the defaults: 3 acknowledgements a mailbox an hour
    with dovecot.client() as box:
        for number in range(1, 41):
            # Some spelled in capitals: the same mailbox all the same.
            local = "Victim" if number % 5 == 0 else "victim"
            box.append(request_letter(f"{local}+{number}@Example.kz", number), "INBOX")
        box.append(request_letter("aigerim@example.kz", 41), "INBOX")
        box.append(request_letter("bolat@example.kz", 42), "INBOX")

    await take_and_answer(channel)

    assert len(received_by(smtp_server, "victim@example.kz")) == 3
    # The others are answered as ever.
    assert received_by(smtp_server, "aigerim@example.kz") == ["aigerim@example.kz"]
    assert received_by(smtp_server, "bolat@example.kz") == ["bolat@example.kz"]
    every = await rows(sessions)
    assert len(every) == 42
    victims = [row for row in every if row.uid <= 40]
    assert sum(row.outcome == Outcome.OPENED.value for row in victims) == 3
    held = [row for row in victims if row.outcome == Outcome.CAPPED_MAILBOX.value]
    assert len(held) == 37
    # Never lost: each held letter is kept whole, encrypted, for staff to read.
    for row in held:
        assert row.raw_enc is not None
        assert f"<caps-{row.uid}@sender.example>".encode() in vault.decrypt_bytes(row.raw_enc)
    assert await staff_notices(sessions) == ["staff_mail_capped_mailbox"]

    # More of the same later in the hour: held, and staff are not told again.
    with dovecot.client() as box:
        for number in range(43, 48):
            box.append(request_letter(f"victim+{number}@example.kz", number), "INBOX")
    await take_and_answer(channel)
    assert len(received_by(smtp_server, "victim@example.kz")) == 3
    assert [row.outcome for row in (await rows(sessions))[42:]] == ["capped_mailbox"] * 5
    assert await staff_notices(sessions) == ["staff_mail_capped_mailbox"]

    # An hour on, the mailbox is answered again (and a new flood would be told again).
    clock.advance(hours=1, seconds=1)
    dovecot.append(request_letter("victim+100@example.kz", 100))
    await take_and_answer(channel)
    assert len(received_by(smtp_server, "victim@example.kz")) == 4


async def test_the_letters_per_sender_cap_counts_plus_tags_as_one_sender(
    build: Build,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    channel = build(max_per_sender_per_hour=5, max_acks_per_mailbox_per_hour=100)
    with dovecot.client() as box:
        for number in range(1, 9):
            box.append(request_letter(f"news+{number}@shop.example", number), "INBOX")

    await take_and_answer(channel)

    assert [row.outcome for row in await rows(sessions)] == ["opened"] * 5 + ["rate_limited"] * 3
    assert len(received_by(smtp_server, "news@shop.example")) == 5
    assert await staff_notices(sessions) == ["staff_mail_rate_limited"]


async def test_the_hours_total_cap_holds_back_strangers_tells_staff_once_and_spares_the_verified(
    build: Build,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
) -> None:
    channel = build(max_acks_per_hour=5)
    # A person who confirmed their address earlier this hour: one acknowledgement counted.
    dovecot.append(request_letter("known@example.kz", 1))
    await take_and_answer(channel)
    [acknowledgement] = smtp_server.letters
    body = acknowledgement.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    reference = str(acknowledgement.message["Subject"]).split("]")[0].strip("[")
    code = re.search(r"(?<![\d-])(\d{6})(?!\d)", body.replace(reference, ""))
    assert code is not None
    dovecot.append(
        request_letter(
            "known@example.kz",
            2,
            subject=f"Re: [{reference}]",
            text=code.group(1),
            In_Reply_To=str(acknowledgement.message["Message-ID"]),
        )
    )
    await take_and_answer(channel)
    assert (await service.get(reference)).status == "verified"
    heard = len(received_by(smtp_server, "known@example.kz"))

    # Eight strangers: four more acknowledgements fill the hour's five, four are held.
    with dovecot.client() as box:
        for number in range(11, 19):
            box.append(request_letter(f"person{number}@example.kz", number), "INBOX")
    await take_and_answer(channel)

    strangers = [row for row in await rows(sessions) if row.uid >= 3]
    assert [row.outcome for row in strangers] == ["opened"] * 4 + ["capped_total"] * 4
    assert all(row.raw_enc is not None for row in strangers[4:])
    assert sum(1 for letter in smtp_server.letters if "person" in letter.recipients[0]) == 4
    assert await staff_notices(sessions) == ["staff_mail_capped_total"]

    # Later in the hour: more strangers are held without a second notice, while the
    # person with a verified address is answered.
    with dovecot.client() as box:
        box.append(request_letter("person19@example.kz", 19), "INBOX")
        box.append(request_letter("known@example.kz", 20), "INBOX")
    await take_and_answer(channel)
    last = (await rows(sessions))[-2:]
    assert [row.outcome for row in last] == ["capped_total", "opened"]
    assert await staff_notices(sessions) == ["staff_mail_capped_total"]
    assert len(received_by(smtp_server, "known@example.kz")) == heard + 1

    clock.advance(hours=1, seconds=1)
    dovecot.append(request_letter("person30@example.kz", 30))
    await take_and_answer(channel)
    assert (await rows(sessions))[-1].outcome == "opened"


async def test_a_forged_reference_in_the_subject_does_not_get_around_the_mailbox_cap(
    build: Build,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Someone else's request: letters naming it are taken one by one as replies, refused
    # as not their sender's, and would each open a request of their own.
    dovecot.append(request_letter("owner@example.kz", 1))
    channel = build()
    await take_and_answer(channel)
    [owners] = smtp_server.letters
    reference = str(owners.message["Subject"]).split("]")[0].strip("[")
    with dovecot.client() as box:
        for number in range(2, 12):
            forged = request_letter(
                f"victim+{number}@example.kz", number, subject=f"Re: [{reference}] Удаление"
            )
            box.append(forged, "INBOX")

    await take_and_answer(channel)

    assert len(received_by(smtp_server, "victim@example.kz")) == 3
    outcomes = [row.outcome for row in (await rows(sessions))[1:]]
    assert outcomes == ["opened"] * 3 + ["capped_mailbox"] * 7
    assert await staff_notices(sessions) == ["staff_mail_capped_mailbox"]
