"""The e-mail channel over TLS for real: Dovecot and aiosmtpd with a throw-away CA.

Implicit TLS and STARTTLS, both ways, and a client that does not trust the
CA reads and sends nothing: certificates are verified, also when no context
is configured (the system's trust store, which does not know our CA).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.imap import PROCESSED_KEYWORD
from mail.intake import MailIntake
from mail.outcomes import IntakeResult, Outcome
from mail.poller import MailPoller
from mail.sender import SmtpSender
from tests.clocks import FrozenClock
from tests.mail_desk import (  # noqa: F401
    PERSON,
    make_letter,
    make_poller,
    open_by_mail,
    settings_for,
)
from tests.mailservers import (  # noqa: F401
    PASSWORD,
    USER,
    Certificates,
    Dovecot,
    RecordingHandler,
    SmtpServer,
    certificates,
    dovecot_tls,
    free_port,
)
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import Channel, OutboxStatus
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService


def tls_poller(build: Any, server: Dovecot, security: str, trusted: Certificates | None) -> Any:
    """A poller over ``security``; ``trusted=None`` leaves the context unconfigured."""
    port = server.ssl_port if security == "ssl" else server.port
    context = trusted.client_context() if trusted is not None else None
    return build(server, security=security, port=port, ssl_context=context)


@pytest.mark.parametrize("security", ["ssl", "starttls"])
async def test_the_poller_reads_a_letter_over_tls(
    security: str,
    dovecot_tls: Dovecot,  # noqa: F811
    certificates: Certificates,  # noqa: F811
    make_poller: Any,  # noqa: F811
    service: RequestService,
) -> None:
    dovecot_tls.append(make_letter(1))
    logins_before = len(dovecot_tls.logins())
    poller = tls_poller(make_poller, dovecot_tls, security, certificates)

    results = await poller.poll_once()

    assert [r.outcome for r in results] == [Outcome.OPENED]
    assert len(await service.list_requests()) == 1
    assert all(PROCESSED_KEYWORD in f for f in dovecot_tls.flags().values())
    # Dovecot lets a plain login from 127.0.0.1 in too; its log says it was TLS.
    ours = dovecot_tls.logins()[logins_before:]
    assert ours and all(", TLS, " in line for line in ours)


class ArrivingIntake(MailIntake):
    """The intake, and while it handles the first letter, ``arrive`` puts another in."""

    def __init__(self, *args: Any, arrive: Callable[[], None]) -> None:
        super().__init__(*args)
        self._arrive: Callable[[], None] | None = arrive

    async def handle_batch(self, letters: Any, **where: Any) -> list[IntakeResult]:
        results = await super().handle_batch(letters, **where)
        if self._arrive is not None:
            arrive, self._arrive = self._arrive, None
            await asyncio.to_thread(arrive)
        return results


async def test_a_letter_arriving_while_another_is_handled_does_not_wait_out_idle(
    dovecot_tls: Dovecot,  # noqa: F811
    certificates: Certificates,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # Regression: Dovecot announces the second letter in its reply to our STORE of the
    # first; imaplib kept that to itself and IDLE waited its full time (here 10 minutes).
    dovecot_tls.append(make_letter(1))
    intake = ArrivingIntake(
        service, sessions, vault, clock, arrive=lambda: dovecot_tls.append(make_letter(2))
    )
    settings = settings_for(
        dovecot_tls,
        security="ssl",
        port=dovecot_tls.ssl_port,
        ssl_context=certificates.client_context(),
        idle_seconds=600.0,
        poll_seconds=600.0,
    )
    poller = MailPoller(settings, intake, sessions, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        for _ in range(400):  # bounded: 20 s at most
            if len(await service.list_requests()) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(await service.list_requests()) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        poller.shutdown()


@pytest.mark.parametrize("security", ["ssl", "starttls"])
async def test_the_poller_refuses_a_server_whose_certificate_it_cannot_verify(
    security: str,
    dovecot_tls: Dovecot,  # noqa: F811
    make_poller: Any,  # noqa: F811
    service: RequestService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression: imaplib without a context accepts any certificate; the poller must not.
    dovecot_tls.append(make_letter(1))
    logins_before = len(dovecot_tls.logins())
    poller = tls_poller(make_poller, dovecot_tls, security, trusted=None)
    caplog.set_level(logging.WARNING, logger="mail.poller")
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))

    for _ in range(400):  # bounded: 20 s at most
        if caplog.text.count("reconnecting") >= 2:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=5)

    assert caplog.text.count("reconnecting") >= 2  # it keeps trying, it does not crash
    assert "SSLCertVerificationError" in caplog.text
    assert len(dovecot_tls.logins()) == logins_before  # the password was never sent
    assert await service.list_requests() == []
    assert all(PROCESSED_KEYWORD not in f for f in dovecot_tls.flags().values())


# -- SMTP ---------------------------------------------------------------------------


class Authenticator:
    """aiosmtpd's AUTH check: the desk's login, and who tried."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.tried.append(auth_data.login.decode())
        ok = (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
        return AuthResult(success=ok)


@pytest.fixture
def tls_smtp_server(certificates: Certificates) -> Iterator[Any]:  # noqa: F811
    """Starts aiosmtpd with STARTTLS required (and AUTH after it) or with implicit TLS."""
    started: list[SmtpServer] = []

    def start(security: str) -> SmtpServer:
        server = SmtpServer("127.0.0.1", free_port(), RecordingHandler())
        if security == "starttls":
            server.starttls_context = certificates.server_context()
            server.authenticator = Authenticator()
        else:
            server.ssl_context = certificates.server_context()
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def tls_sender(
    server: SmtpServer,
    security: str,
    trusted: Certificates | None,
    service: RequestService,
    clock: FrozenClock,
) -> SmtpSender:
    """A sender over ``security``; ``trusted=None`` leaves the context unconfigured."""
    return SmtpSender(
        host=server.host,
        port=server.port,
        security=security,  # type: ignore[arg-type]
        from_address="aina.app@mercury.kz",
        service=service,
        clock=clock,
        username=USER if server.authenticator is not None else None,
        password=PASSWORD if server.authenticator is not None else None,
        timeout=5.0,
        ssl_context=trusted.client_context() if trusted is not None else None,
    )


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_the_sender_delivers_over_tls(
    security: str,
    tls_smtp_server: Any,
    certificates: Certificates,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    server = tls_smtp_server(security)
    reference = await open_by_mail(service)
    sender = tls_sender(server, security, certificates, service, clock)
    dispatcher = OutboxDispatcher(sessions, vault, clock, {Channel.EMAIL: sender})

    assert await dispatcher.run_once() == 1

    [received] = server.letters
    assert received.tls
    assert received.recipients == [PERSON]
    assert reference in str(received.message["Subject"])
    if server.authenticator is not None:
        assert server.authenticator.tried == [USER]  # logged in, after STARTTLS
    async with sessions() as session:
        item = (await session.scalars(select(OutboxItem))).one()
    assert item.status == OutboxStatus.SENT.value


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_the_sender_refuses_a_server_whose_certificate_it_cannot_verify(
    security: str,
    tls_smtp_server: Any,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    server = tls_smtp_server(security)
    await open_by_mail(service)
    sender = tls_sender(server, security, None, service, clock)
    dispatcher = OutboxDispatcher(sessions, vault, clock, {Channel.EMAIL: sender})

    assert await dispatcher.run_once() == 1

    assert server.letters == []
    if server.authenticator is not None:
        assert server.authenticator.tried == []  # the password was never sent
    async with sessions() as session:
        item = (await session.scalars(select(OutboxItem))).one()
    # Kept for a retry: the operator fixes the trust store, the letter still goes.
    assert item.status == OutboxStatus.PENDING.value
    assert item.attempts == 1 and "SMTP unavailable" in (item.last_error or "")
