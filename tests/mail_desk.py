"""The e-mail channel as the mail tests build it: wired to the test's Dovecot and aiosmtpd."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.channel import MailChannel, build_mail_channel
from mail.imap import ImapSettings
from mail.intake import MailIntake
from mail.poller import MailPoller
from mail.sender import SmtpSender
from mail.settings import MailSettings
from tests.clocks import FrozenClock
from tests.mailservers import Dovecot, SmtpServer
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService


def mail_settings(imap: Dovecot, smtp: SmtpServer, **options: Any) -> MailSettings:
    """Plain IMAP and SMTP on 127.0.0.1, the defaults otherwise; ``options`` override them."""
    settings = MailSettings(
        imap_host=imap.host,
        imap_port=imap.port,
        imap_user=imap.user,
        imap_password=imap.password,
        imap_security="none",
        imap_folder="INBOX",
        poll_seconds=5,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_user=None,
        smtp_password=None,
        smtp_security="none",
        mail_from="aina.app@mercury.kz",
        timeout=10.0,
    )
    return replace(settings, **options)


def mail_channel(
    imap: Dovecot,
    smtp: SmtpServer,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    **options: Any,
) -> MailChannel:
    """The whole e-mail channel (poller, intake, sender) as ``aina-dsr run`` builds it."""
    return build_mail_channel(
        mail_settings(imap, smtp, **options),
        service=service,
        sessions=sessions,
        vault=vault,
        clock=clock,
    )


def person_letter(address: str, subject: str, text: str, number: int, **headers: str) -> bytes:
    """A plain letter from ``address`` to the desk; ``headers`` as keywords (Reply_To=...)."""
    letter = EmailMessage()
    letter["From"] = address
    letter["To"] = "aina.app@mercury.kz"
    letter["Subject"] = subject
    letter["Message-ID"] = f"<person-{number}@example.kz>"
    for name, value in headers.items():
        letter[name.replace("_", "-")] = value
    letter.set_content(text)
    return bytes(letter)


def sender_for(server: SmtpServer, service: RequestService, clock: FrozenClock) -> SmtpSender:
    """The desk's SMTP sender, in plain SMTP to the test's aiosmtpd."""
    return SmtpSender(
        host=server.host,
        port=server.port,
        security="none",
        from_address="aina.app@mercury.kz",
        service=service,
        clock=clock,
        timeout=5.0,
    )


def make_letter(number: int, text: str = "Прошу удалить мой аккаунт.") -> bytes:
    """Client ``number``'s letter asking to delete their account (or saying ``text``)."""
    letter = EmailMessage()
    letter["From"] = f"Клиент {number} <client{number}@example.kz>"
    letter["To"] = "aina.app@mercury.kz"
    letter["Subject"] = "Удаление аккаунта"
    letter["Message-ID"] = f"<letter-{number}@example.kz>"
    letter.set_content(text)
    return bytes(letter)


def settings_for(server: Dovecot, **overrides: object) -> ImapSettings:
    """The poller's IMAP settings for the test's Dovecot, in plain IMAP; ``overrides`` win."""
    values: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "username": server.user,
        "password": server.password,
        "security": "none",
        "poll_seconds": 5.0,
        "timeout": 10.0,
    }
    values.update(overrides)
    return ImapSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def make_poller(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> AsyncIterator[object]:
    """Builds pollers on ``server`` (``overrides`` as for ``settings_for``), closed at the end."""
    made: list[MailPoller] = []

    def build(server: Dovecot, **overrides: object) -> MailPoller:
        intake = MailIntake(service, sessions, vault, clock)
        poller = MailPoller(
            settings_for(server, **overrides), intake, sessions, clock, first_backoff=0.05
        )
        made.append(poller)
        return poller

    yield build
    for poller in made:
        await poller.close()
        poller.shutdown()


PERSON = "aigerim@example.kz"


async def open_by_mail(service: RequestService, language: str = "ru") -> str:
    """A withdrawal of consent from ``PERSON`` by e-mail, a code sent to verify it."""
    view = await service.open_request(
        kind="withdraw_consent",
        channel="email",
        language=language,
        fields={"full_name": "Айгерим Садыкова", "email": PERSON},
        email=PERSON,
        body="Отзываю согласие",
        external_id="<first-letter@example.kz>",
        send_code_to_email=True,
    )
    return view.reference
