"""The e-mail channel as the mail tests build it: wired to the test's Dovecot and aiosmtpd."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.channel import MailChannel, build_mail_channel
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
