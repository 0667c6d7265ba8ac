"""The e-mail channel as one part of ``aina-dsr run``: the poller and the outbox sender.

Each half runs under its own small supervisor, so a crash of one (a database
hiccup while handling a letter, a bug in rendering) is logged and restarted
without taking the other down.

Only one process reads the mailbox: on PostgreSQL the holder of the
``imap-poller`` advisory lock (the scheduler's mechanism, another name); the
others try again every ``lock_retry_seconds`` and take over when the holder
dies. Two pollers would not lose or double a letter (the intake dedupes), but
they would race on the cursor and the flags for nothing. The sender runs in
every process: outbox rows are claimed under its owner token (see
:mod:`workflows.outbox.claims`), so each is sent once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mail.imap import ImapSettings, Mailbox
from mail.intake import MailIntake
from mail.outcomes import IntakeResult
from mail.poller import MailPoller
from mail.sender import LetterTransport, SmtpSender
from mail.settings import MailSettings
from mail.spam import SpamRules
from workflows.clock import Clock
from workflows.deadlines.leader_lock import AdvisoryLock, LeaderLock, SingleProcessLock
from workflows.directory.sql_directory import SqlDirectory
from workflows.fulfilment.work import Fulfilment
from workflows.i18n import DeskInfo
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.owners import ClaimOwners
from workflows.outbox.queue import Channel
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.running import lead, wait_or_stop

log = logging.getLogger(__name__)

POLLER_LOCK = "imap-poller"


@dataclass(frozen=True)
class MailPorts:
    """Where letters come from and go to instead of IMAP and SMTP (``aina-dsr demo``).

    Only the two ends change: the letters are read, understood, answered and
    composed as they are with a real mail server.
    """

    mailbox: Mailbox
    transport: LetterTransport


class MailChannel:
    """Component ``mail``: reads the mailbox and sends the outbox's e-mail."""

    name = "mail"

    def __init__(
        self,
        poller: MailPoller,
        dispatcher: OutboxDispatcher,
        *,
        lock: LeaderLock | None = None,
        outbox_seconds: float = 5.0,
        restart_seconds: float = 5.0,
        lock_retry_seconds: float = 15.0,
        lock_check_seconds: float = 15.0,
        sender: SmtpSender | None = None,
    ) -> None:
        self.poller = poller
        self.dispatcher = dispatcher
        self.sender = sender
        self.lock: LeaderLock = lock or SingleProcessLock()
        self._outbox_seconds = outbox_seconds
        self._restart_seconds = restart_seconds
        self._lock_retry_seconds = lock_retry_seconds
        self._lock_check_seconds = lock_check_seconds
        self._wake = asyncio.Event()
        self.polling = False

    def nudge(self, _result: IntakeResult | None = None) -> None:
        """Send soon: a letter was just handled (its acknowledgement is waiting)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._supervise("mail poller", self._poll_when_leading, stop)),
            asyncio.create_task(self._supervise("mail sender", self._send_loop, stop)),
        ]
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
            self.poller.shutdown()
            # Only on the way out: a sender restarted after a crash keeps its claims.
            await self.dispatcher.close()

    async def _supervise(
        self, name: str, part: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                await part(stop)
            except Exception:
                log.exception("%s crashed; starting it again in %g s", name, self._restart_seconds)
                await wait_or_stop(stop, self._restart_seconds)

    async def _poll_when_leading(self, stop: asyncio.Event) -> None:
        """Poll while this process holds the mailbox lock; else try for it again later."""
        await lead(
            self.lock,
            stop,
            self._poll_while_held,
            name="mailbox",
            retry_seconds=self._lock_retry_seconds,
            check_seconds=self._lock_check_seconds,
        )

    async def _poll_while_held(self, step_down: asyncio.Event) -> None:
        log.info("this process now reads the mailbox (lock %s)", POLLER_LOCK)
        self.polling = True
        try:
            await self.poller.run(step_down)
        finally:
            self.polling = False

    async def _send_loop(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self._wake.clear()
                handled = await self.dispatcher.run_once()
                if handled:
                    continue
                if self.sender is not None:
                    await self.sender.close()  # nothing to send: let the SMTP server go
                await wait_or_stop(stop, self._outbox_seconds, wake=self._wake)
        finally:
            if self.sender is not None:
                await self.sender.close()


def build_mail_channel(
    settings: MailSettings,
    *,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: Clock,
    engine: AsyncEngine | None = None,
    claim_owners: ClaimOwners | None = None,
    info: DeskInfo | None = None,
    fulfilment: Fulfilment | None = None,
    ports: MailPorts | None = None,
) -> MailChannel:
    """The e-mail channel from its settings and the core's parts.

    Given a PostgreSQL ``engine``, only the process holding the ``imap-poller``
    advisory lock reads the mailbox; without one (or on SQLite) this one does.
    ``claim_owners`` are the process's owners of outbox claims (one per process,
    shared by its dispatchers); without them a dead process's claims wait out
    their lease. ``info`` is the desk's details the letters name (the composition root
    builds it once for both channels); without it, ``mail_from`` is the address named.
    ``fulfilment`` does the work of a kind done at once when a mailed code
    verifies it (the desk's own SQL directory unless the composition gives one).
    ``ports``, when given, replace the IMAP mailbox and the SMTP server.
    """
    s = settings
    fulfilment = fulfilment or Fulfilment(service, SqlDirectory(sessions, vault, clock), clock)
    fulfilment.act_at_once()
    intake = MailIntake(
        service,
        sessions,
        vault,
        clock,
        max_attachment_bytes=s.max_attachment_bytes,
        max_per_sender_per_hour=s.max_per_sender_per_hour,
        spam=None if s.spam_headers is None else SpamRules.of(s.spam_headers),
        authserv_id=s.authserv_id,
        max_acks_per_mailbox_per_hour=s.max_acks_per_mailbox_per_hour,
        max_acks_per_hour=s.max_acks_per_hour,
        max_letter_bytes=s.max_letter_bytes,
    )
    sender = SmtpSender(
        host=s.smtp_host,
        port=s.smtp_port,
        security=s.smtp_security,
        username=s.smtp_user,
        password=s.smtp_password,
        from_address=s.mail_from,
        service=service,
        clock=clock,
        timeout=s.timeout,
        ssl_context=s.smtp_ssl_context,
        info=info,
        transport=ports.transport if ports is not None else None,
    )
    dispatcher = OutboxDispatcher(
        sessions, vault, clock, {Channel.EMAIL: sender}, owners=claim_owners
    )
    poller = MailPoller(
        imap_settings(s),
        intake,
        sessions,
        clock,
        connection=ports.mailbox if ports is not None else None,
    )
    lock: LeaderLock = SingleProcessLock()
    if engine is not None and engine.dialect.name == "postgresql":
        lock = AdvisoryLock(engine, name=POLLER_LOCK)
    channel = MailChannel(
        poller,
        dispatcher,
        lock=lock,
        sender=sender,
        lock_retry_seconds=s.lock_seconds,
        lock_check_seconds=s.lock_seconds,
    )
    poller.on_mail = channel.nudge
    return channel


def imap_settings(settings: MailSettings) -> ImapSettings:
    """What the poller's IMAP connection is told of the channel's settings."""
    s = settings
    return ImapSettings(
        host=s.imap_host,
        port=s.imap_port,
        username=s.imap_user,
        password=s.imap_password,
        security=s.imap_security,
        folder=s.imap_folder,
        processed_folder=s.processed_folder or None,
        poll_seconds=s.poll_seconds,
        timeout=s.timeout,
        ssl_context=s.imap_ssl_context,
        chunk_bytes=s.chunk_bytes,
        max_letter_bytes=s.max_letter_bytes,
    )
