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
:mod:`workflows.outbox.queue`), so each is sent once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mail.caps import DEFAULT_ACKS_IN_TOTAL, DEFAULT_ACKS_PER_MAILBOX
from mail.intake import (
    DEFAULT_MAX_ATTACHMENT,
    DEFAULT_MAX_LETTER,
    DEFAULT_MAX_PER_SENDER,
    IntakeResult,
    MailIntake,
)
from mail.poller import DEFAULT_CHUNK_BYTES, ImapSettings, MailPoller, Security
from mail.sender import SmtpSender
from mail.spam import SpamRules
from workflows.clock import Clock
from workflows.deadlines.leader_lock import AdvisoryLock, LeaderLock, SingleProcessLock
from workflows.i18n import DeskInfo
from workflows.outbox.owners import ClaimOwners
from workflows.outbox.queue import Channel, OutboxDispatcher
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

log = logging.getLogger(__name__)

POLLER_LOCK = "imap-poller"


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
                await _pause(self._restart_seconds, stop)

    async def _poll_when_leading(self, stop: asyncio.Event) -> None:
        """Poll while this process holds the mailbox lock; else try for it again later."""
        while not stop.is_set():
            if not await self.lock.acquire():
                await _pause(self._lock_retry_seconds, stop)
                continue
            log.info("this process now reads the mailbox (lock %s)", POLLER_LOCK)
            try:
                await self._poll_while_held(stop)
            finally:
                await self.lock.release()

    async def _poll_while_held(self, stop: asyncio.Event) -> None:
        held = asyncio.Event()  # set when this process must stop polling
        watcher = asyncio.create_task(self._watch_lock(stop, held))
        self.polling = True
        try:
            await self.poller.run(held)
        finally:
            self.polling = False
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch_lock(self, stop: asyncio.Event, held: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await _pause(self._lock_check_seconds, stop)
                if not stop.is_set() and not await self.lock.alive():
                    log.warning("the mailbox lock is lost; another process may read the mail")
                    return
        finally:
            held.set()

    async def _send_loop(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self._wake.clear()
                handled = await self.dispatcher.run_once()
                if handled:
                    continue
                if self.sender is not None:
                    await self.sender.close()  # nothing to send: let the SMTP server go
                await _pause(self._outbox_seconds, stop, self._wake)
        finally:
            if self.sender is not None:
                await self.sender.close()


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
    max_per_sender_per_hour: int = DEFAULT_MAX_PER_SENDER,
    authserv_id: str | None = None,
    max_acks_per_mailbox_per_hour: int = DEFAULT_ACKS_PER_MAILBOX,
    max_acks_per_hour: int = DEFAULT_ACKS_IN_TOTAL,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_letter_bytes: int = DEFAULT_MAX_LETTER,
    timeout: float = 30.0,
    imap_ssl_context: ssl.SSLContext | None = None,
    smtp_ssl_context: ssl.SSLContext | None = None,
    engine: AsyncEngine | None = None,
    spam_headers: Mapping[str, Sequence[str]] | None = None,
    claim_owners: ClaimOwners | None = None,
    info: DeskInfo | None = None,
) -> MailChannel:
    """The e-mail channel from plain values (the composition root reads the settings).

    Given a PostgreSQL ``engine``, only the process holding the ``imap-poller``
    advisory lock reads the mailbox; without one (or on SQLite) this one does.
    ``authserv_id`` names our own mail server in Authentication-Results (see
    :mod:`mail.authentication`); without it no such header is trusted.
    ``claim_owners`` are the process's owners of outbox claims (one per process,
    shared by its dispatchers); without them a dead process's claims wait out
    their lease. ``info`` is the desk's details the letters name (the composition root
    builds it once for both channels); without it, ``mail_from`` is the address named.
    """
    intake = MailIntake(
        service,
        sessions,
        vault,
        clock,
        max_attachment_bytes=max_attachment_bytes,
        max_per_sender_per_hour=max_per_sender_per_hour,
        spam=None if spam_headers is None else SpamRules.of(spam_headers),
        authserv_id=authserv_id,
        max_acks_per_mailbox_per_hour=max_acks_per_mailbox_per_hour,
        max_acks_per_hour=max_acks_per_hour,
        max_letter_bytes=max_letter_bytes,
    )
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
        info=info,
    )
    dispatcher = OutboxDispatcher(
        sessions, vault, clock, {Channel.EMAIL: sender}, owners=claim_owners
    )
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
            chunk_bytes=chunk_bytes,
            max_letter_bytes=max_letter_bytes,
        ),
        intake,
        sessions,
        clock,
    )
    lock: LeaderLock = SingleProcessLock()
    if engine is not None and engine.dialect.name == "postgresql":
        lock = AdvisoryLock(engine, name=POLLER_LOCK)
    channel = MailChannel(poller, dispatcher, lock=lock, sender=sender)
    poller.on_mail = channel.nudge
    return channel
