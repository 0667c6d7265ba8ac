"""The SMTP sender against a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.sender import SmtpSender
from tests.clocks import FrozenClock
from tests.mail_desk import PERSON, open_by_mail, sender_for
from tests.mailservers import SmtpServer, smtp_server  # noqa: F401
from workflows.i18n import DeskInfo
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import (
    Audience,
    Channel,
    DeliveryReceipt,
    OutboxStatus,
    OutgoingMessage,
)
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor


async def test_the_acknowledgement_is_a_threaded_multipart_letter_in_the_persons_language(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    reference = await open_by_mail(service, "ru")
    dispatcher = OutboxDispatcher(
        sessions, vault, clock, {Channel.EMAIL: sender_for(smtp_server, service, clock)}
    )

    assert await dispatcher.run_once() == 1

    [received] = smtp_server.letters
    letter = received.message
    assert received.recipients == [PERSON]
    assert reference in str(letter["Subject"])
    assert letter["Auto-Submitted"] == "auto-replied"
    assert letter["In-Reply-To"] == "<first-letter@example.kz>"
    assert "<first-letter@example.kz>" in str(letter["References"])
    assert str(letter["Message-ID"]).endswith("@mercury.kz>")
    assert letter["Date"] is not None
    assert letter.get_content_type() == "multipart/alternative"
    text = letter.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = letter.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Отзыв согласия" in text or "согласи" in text.lower()
    assert "Срок нашего ответа" in text  # the due date
    assert "Какие данные" in text  # a missing field, asked for
    assert "Номер телефона" not in text  # the e-mail address satisfies the contact
    assert reference in text and "aina.app@mercury.kz" in text
    assert "<p>" in html and reference in html
    async with sessions() as session:
        item = (await session.scalars(select(OutboxItem))).one()
    assert item.status == OutboxStatus.SENT.value
    assert item.external_id == str(letter["Message-ID"])
    # The next letter of the request names ours, so replies thread both ways.
    assert await service.reference_for_message(str(letter["Message-ID"])) == reference


async def test_smtp_down_then_up_delivers_once(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    await open_by_mail(service)
    dispatcher = OutboxDispatcher(
        sessions, vault, clock, {Channel.EMAIL: sender_for(smtp_server, service, clock)}
    )
    smtp_server.stop()

    for _ in range(5):  # down for an hour: every try fails, none is lost
        assert await dispatcher.run_once() == 1
        clock.advance(minutes=15)
    async with sessions() as session:
        item = (await session.scalars(select(OutboxItem))).one()
        assert item.status == OutboxStatus.PENDING.value
        assert item.attempts == 5 and "SMTP unavailable" in (item.last_error or "")

    smtp_server.start()
    clock.advance(hours=1)
    assert await dispatcher.run_once() == 1
    assert await dispatcher.run_once() == 0
    clock.advance(hours=2)
    assert await dispatcher.run_once() == 0

    assert len(smtp_server.letters) == 1


async def test_a_permanent_refusal_is_recorded_and_staff_are_told(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    reference = await open_by_mail(service)
    smtp_server.handler.reply = "550 5.1.1 mailbox unavailable"
    dispatcher = OutboxDispatcher(
        sessions, vault, clock, {Channel.EMAIL: sender_for(smtp_server, service, clock)}
    )

    await dispatcher.run_once()

    async with sessions() as session:
        items = (await session.scalars(select(OutboxItem).order_by(OutboxItem.id))).all()
    assert items[0].status == OutboxStatus.FAILED.value
    assert "550" in (items[0].last_error or "")
    assert [i.template for i in items[1:]] == ["staff_delivery_failed"]
    view = await service.get(reference, with_events=True)
    assert "delivery_failed" in [e.action for e in view.events]


async def test_a_passing_refusal_is_retried(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    await open_by_mail(service)
    smtp_server.handler.reply = "451 4.3.0 try again later"
    dispatcher = OutboxDispatcher(
        sessions, vault, clock, {Channel.EMAIL: sender_for(smtp_server, service, clock)}
    )

    await dispatcher.run_once()
    smtp_server.handler.reply = None
    clock.advance(minutes=5)
    await dispatcher.run_once()

    assert len(smtp_server.letters) == 1


async def test_a_redelivery_keeps_its_message_id(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    await open_by_mail(service, "kk")
    sender = sender_for(smtp_server, service, clock)
    delivered: list[tuple[OutgoingMessage, DeliveryReceipt]] = []

    class Watching:
        """The sender as the dispatcher sees it, keeping what it delivered."""

        channel = Channel.EMAIL

        async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
            receipt = await sender.deliver(message)
            delivered.append((message, receipt))
            return receipt

    dispatcher = OutboxDispatcher(sessions, vault, clock, {Channel.EMAIL: Watching()})
    assert await dispatcher.run_once() == 1
    [(message, first)] = delivered

    second = await sender.deliver(message)  # delivered again, as after a lost receipt

    assert first.external_id == second.external_id
    ids = {str(r.message["Message-ID"]) for r in smtp_server.letters}
    assert ids == {first.external_id}
    assert "Жауап беру мерзімі" in (first.body or "")  # Kazakh acknowledgement


async def test_a_run_of_letters_shares_one_connection_and_a_dropped_one_is_replaced(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    peers: list[object] = []
    recording = smtp_server.handler.handle_DATA

    async def handle_data(server: Any, session: Any, envelope: Any) -> str:
        peers.append(session.peer)
        return await recording(server, session, envelope)

    smtp_server.handler.handle_DATA = handle_data  # type: ignore[method-assign]
    for language in ("ru", "kk", "en"):
        await open_by_mail(service, language)
    sender = sender_for(smtp_server, service, clock)
    dispatcher = OutboxDispatcher(sessions, vault, clock, {Channel.EMAIL: sender})

    assert await dispatcher.run_once() == 3
    assert len(peers) == 3 and len(set(peers)) == 1

    # The server goes away under the kept connection and comes back.
    smtp_server.stop()
    smtp_server.start()
    await open_by_mail(service)
    assert await dispatcher.run_once() == 1
    await sender.close()

    assert len(smtp_server.letters) == 4 and len(set(peers)) == 2
    async with sessions() as session:
        statuses = list(await session.scalars(select(OutboxItem.status)))
    assert statuses == [OutboxStatus.SENT.value] * 4


async def test_two_letters_of_one_request_in_a_batch_thread_onto_each_other(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    reference = await open_by_mail(service)
    await service.send_email_code(reference, Actor.person_email(PERSON), PERSON)
    dispatcher = OutboxDispatcher(
        sessions, vault, clock, {Channel.EMAIL: sender_for(smtp_server, service, clock)}
    )

    assert await dispatcher.run_once() == 2

    first, second = (received.message for received in smtp_server.letters)
    assert second["In-Reply-To"] == "<first-letter@example.kz>"
    assert str(first["Message-ID"]) in str(second["References"])
    assert "Срок нашего ответа" in first.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_a_letter_names_the_desks_address_from_the_settings_not_a_default(
    service: RequestService, clock: FrozenClock
) -> None:
    # DSR_MAIL_FROM reaches the letters' words as it reaches the bot's (one DeskInfo).
    sender = SmtpSender(
        host="127.0.0.1",
        port=25,
        security="none",
        from_address="privacy@example.kz",
        service=service,
        clock=clock,
        info=DeskInfo(mail_address="privacy@example.kz"),
    )
    expired = OutgoingMessage(
        id=1,
        idempotency_key="expired-1",
        reference=None,
        channel=Channel.EMAIL,
        audience=Audience.SUBJECT,
        address=PERSON,
        template="request_expired",
        language="en",
        params={"kind": "access"},
        attempt=0,
    )

    _, text = await sender.compose(expired)

    assert "by e-mail to privacy@example.kz" in text
    assert "aina.app@mercury.kz" not in text  # the signature too


async def test_the_signature_names_the_desks_contacts_from_deskinfo(
    service: RequestService, clock: FrozenClock
) -> None:
    # One source of the desk's details for both channels: the signature reads DeskInfo.
    info = DeskInfo(
        mail_address="privacy@example.kz",
        company={"en": "Example Shop LLP"},
        postal_address={"en": "1 Test Street, Almaty"},
    )
    sender = SmtpSender(
        host="127.0.0.1",
        port=25,
        security="none",
        from_address="privacy@example.kz",
        service=service,
        clock=clock,
        info=info,
    )
    expired = OutgoingMessage(
        id=2,
        idempotency_key="expired-2",
        reference=None,
        channel=Channel.EMAIL,
        audience=Audience.SUBJECT,
        address=PERSON,
        template="request_expired",
        language="en",
        params={"kind": "access"},
        attempt=0,
    )

    _, text = await sender.compose(expired)

    signature = text.rsplit("\n\n", 1)[1]
    assert "privacy@example.kz" in signature
    assert "Example Shop LLP" in signature
    assert "1 Test Street, Almaty" in signature
    assert "aina.app@mercury.kz" not in text
    assert "Mercury Properties" not in signature
