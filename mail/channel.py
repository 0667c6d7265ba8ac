"""The e-mail channel as one part of ``aina-dsr run``: the poller and the outbox sender.

Each half runs under its own small supervisor, so a crash of one (a database
hiccup while handling a letter, a bug in rendering) is logged and restarted
without taking the other down.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.intake import DEFAULT_MAX_ATTACHMENT, IntakeResult, MailIntake
from mail.poller import ImapSettings, MailPoller, Security
from mail.sender import SmtpSender
from workflows.clock import Clock
from workflows.outbox import Channel, OutboxDispatcher
from workflows.service import RequestService
from workflows.vault import Vault

log = logging.getLogger(__name__)


async def _pause(seconds: float, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class MailChannel:
    """Component ``mail``: reads the mailbox and sends the outbox's e-mail."""

    name = "mail"

    def __init__(
        self,
        poller: MailPoller,
        dispatcher: OutboxDispatcher,
        *,
        outbox_seconds: float = 5.0,
        restart_seconds: float = 5.0,
    ) -> None:
        self.poller = poller
        self.dispatcher = dispatcher
        self._outbox_seconds = outbox_seconds
        self._restart_seconds = restart_seconds
        self._wake = asyncio.Event()

    def nudge(self, _result: IntakeResult | None = None) -> None:
        """Send soon: a letter was just handled (its acknowledgement is waiting)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._supervise("mail poller", self.poller.run, stop)),
            asyncio.create_task(self._supervise("mail sender", self._send_loop, stop)),
        ]
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
            self.poller.shutdown()

    async def _supervise(
        self, name: str, part: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                await part(stop)
            except Exception:
                log.exception("%s crashed; starting it again in %g s", name, self._restart_seconds)
                await _pause(self._restart_seconds, stop)

    async def _send_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            handled = await self.dispatcher.run_once()
            if handled:
                continue
            await _pause(self._outbox_seconds, stop, self._wake)


def build_mail_channel(
    *,
    imap_host: str,
    imap_port: int,
    imap_user: str,
    imap_password: str,
    imap_security: Security,
    imap_folder: str,
    poll_seconds: float,
    smtp_host: str,
    smtp_port: int,
    smtp_user: str | None,
    smtp_password: str | None,
    smtp_security: Security,
    mail_from: str,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: Clock,
    processed_folder: str | None = None,
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT,
    timeout: float = 30.0,
    imap_ssl_context: ssl.SSLContext | None = None,
    smtp_ssl_context: ssl.SSLContext | None = None,
) -> MailChannel:
    """The e-mail channel from plain values (the composition root reads the settings)."""
    intake = MailIntake(service, sessions, vault, clock, max_attachment_bytes=max_attachment_bytes)
    sender = SmtpSender(
        host=smtp_host,
        port=smtp_port,
        security=smtp_security,
        username=smtp_user,
        password=smtp_password,
        from_address=mail_from,
        service=service,
        clock=clock,
        timeout=timeout,
        ssl_context=smtp_ssl_context,
    )
    dispatcher = OutboxDispatcher(sessions, vault, clock, {Channel.EMAIL: sender})
    poller = MailPoller(
        ImapSettings(
            host=imap_host,
            port=imap_port,
            username=imap_user,
            password=imap_password,
            security=imap_security,
            folder=imap_folder,
            processed_folder=processed_folder or None,
            poll_seconds=poll_seconds,
            timeout=timeout,
            ssl_context=imap_ssl_context,
        ),
        intake,
        sessions,
        clock,
    )
    channel = MailChannel(poller, dispatcher)
    poller.on_mail = channel.nudge
    return channel
