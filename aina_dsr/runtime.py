"""The life of the ``aina-dsr run`` process: start the parts, keep them up, stop them cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from aina_dsr.health import CrashLine, PartHealth, crash_log
from aina_dsr.settings import Settings
from aina_dsr.wiring import Core
from workflows.deadlines.scheduler import scheduler_component
from workflows.directory.sql_directory import SqlDirectory
from workflows.fulfilment.processing import ProcessingFacts
from workflows.fulfilment.work import Fulfilment
from workflows.i18n import DeskInfo
from workflows.outbox.owners import ClaimOwners, claim_owners
from workflows.running import Backoff, Sleep, wait_or_stop

if TYPE_CHECKING:
    from mail.channel import MailPorts
    from mail.settings import MailSettings

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]

# The loops a channel supervises itself (mail/channel.py, bot/channel.py), reported on /healthz
# as parts of their own, and the log line each of their crashes leaves.
INNER_PARTS: dict[str, tuple[str, ...]] = {
    "mail": ("mail poller", "mail sender"),
    "telegram": ("telegram outbox",),
}
CRASH_LINES = (
    CrashLine("mail.channel", "%s crashed; starting it again in %g s"),
    CrashLine("bot.channel", "outbox delivery failed; trying again shortly", "telegram outbox"),
)


class Component(Protocol):
    """A long-running part of the process (a channel, the scheduler).

    ``run`` works until ``stop`` is set, then returns promptly. If it raises,
    it is started again after a pause.
    """

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


def build_components(
    settings: Settings,
    core: Core,
    health: PartHealth | None = None,
    *,
    mail_ports: MailPorts | None = None,
) -> list[Component]:
    """The parts this process runs: each channel that is configured, and the scheduler.

    ``health`` is what :func:`serve` learns of the parts, for /healthz. ``mail_ports``
    replace the mail server (``aina-dsr demo``: letters in and out of its page).
    """
    components: list[Component] = []
    # One owner of outbox claims per process, shared by both channels' dispatchers: on
    # SQLite it holds the outbox's file lock, on PostgreSQL one lock connection.
    owners = claim_owners(core.engine)
    info = desk_info(settings)  # one for both channels: the texts name the same desk
    if settings.telegram_configured:
        components.append(telegram_channel(settings, core, owners, info))
    if settings.mail_configured:
        components.append(mail_channel(settings, core, owners, info, ports=mail_ports))
    if components:
        components.append(deadline_scheduler(settings, core))
    if components and settings.metrics_port is not None:
        components.append(metrics_server(settings, core, health or PartHealth()))
    return components


def desk_info(settings: Settings) -> DeskInfo:
    """Who runs the desk and where people write, as the settings say: both channels name it."""
    return DeskInfo(
        mail_address=str(settings.mail_from),
        policy_url=settings.policy_url,
        authority=settings.authority_names(),
        authority_address=settings.authority_addresses(),
    )


def processing_facts(settings: Settings) -> ProcessingFacts:
    """The recipients, transfers and retention the access report names, as the settings say."""
    facts = ProcessingFacts.from_file(settings.processing_file)  # checked with the settings
    return replace(facts, desk_retention_days=settings.retention_days)


def metrics_server(settings: Settings, core: Core, health: PartHealth) -> Component:
    """/metrics and /healthz on DSR_METRICS_HOST:DSR_METRICS_PORT; health tells each part."""
    from aina_dsr.observability import MetricsServer  # aiohttp's server: only when asked for

    assert settings.metrics_port is not None
    return MetricsServer(
        host=settings.metrics_host,
        port=settings.metrics_port,
        engine=core.engine,
        sessions=core.sessions,
        clock=core.clock,
        health=health,
    )


def deadline_scheduler(settings: Settings, core: Core) -> Component:
    """Reminders, the digest and expiry; on PostgreSQL only the advisory lock's holder works."""
    return scheduler_component(
        service=core.service,
        sessions=core.sessions,
        engine=core.engine,
        vault=core.vault,
        clock=core.clock,
        calendar=core.calendar,
        verification_days=settings.verification_days,
        reminder_milestones=settings.reminder_milestones,
        deadline_near_days=settings.deadline_near_days,
        progress_every_days=settings.progress_every_days,
        digest_time=settings.digest_time,
        quiet_days=settings.quiet_days == "days_off",
        reconcile_seconds=settings.scheduler_reconcile_seconds,
        lock_seconds=settings.leader_retry_seconds,
        retention_days=settings.retention_days,
        audit_checkpoint_file=settings.audit_checkpoint_file,
    )


def mail_channel(
    settings: Settings,
    core: Core,
    owners: ClaimOwners | None = None,
    info: DeskInfo | None = None,
    *,
    ports: MailPorts | None = None,
) -> Component:
    """The IMAP poller (one replica at a time) and the SMTP sender of the outbox's e-mail."""
    # Each channel is imported only when it is configured: a desk without Telegram
    # starts without loading aiogram (seconds of a start), one without mail without
    # imap-tools and aiosmtplib.
    from mail.channel import build_mail_channel

    return build_mail_channel(
        mail_settings(settings),
        service=core.service,
        sessions=core.sessions,
        vault=core.vault,
        clock=core.clock,
        engine=core.engine,  # on PostgreSQL one replica reads the mailbox (advisory lock)
        claim_owners=owners,
        info=info or desk_info(settings),
        fulfilment=desk_fulfilment(settings, core, info or desk_info(settings)),
        ports=ports,
    )


def desk_fulfilment(settings: Settings, core: Core, info: DeskInfo) -> Fulfilment:
    """What approving does, on the desk's own SQL directory (either channel may verify)."""
    return Fulfilment(
        core.service,
        SqlDirectory(core.sessions, core.vault, core.clock),
        core.clock,
        timezone=settings.timezone,
        info=info,
        processing=processing_facts(settings),
    )


def mail_settings(settings: Settings) -> MailSettings:
    """The e-mail channel's settings, read from the environment's in this one place."""
    from mail.settings import MailSettings

    imap_host, imap_user, imap_password = (
        settings.imap_host,
        settings.imap_user,
        settings.imap_password,
    )
    smtp_host, imap_port, smtp_port = settings.smtp_host, settings.imap_port, settings.smtp_port
    if not (imap_host and imap_user and imap_password and smtp_host and imap_port and smtp_port):
        raise ValueError("the e-mail channel is not configured")
    mb = 1024 * 1024
    return MailSettings(
        imap_host=imap_host,
        imap_port=imap_port,
        imap_user=imap_user,
        imap_password=imap_password.get_secret_value(),
        imap_security=settings.imap_security,
        imap_folder=settings.imap_folder,
        poll_seconds=settings.imap_poll_seconds,
        lock_seconds=settings.leader_retry_seconds,
        processed_folder=settings.imap_processed_folder,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_user=settings.smtp_user,
        smtp_password=(
            settings.smtp_password.get_secret_value() if settings.smtp_password else None
        ),
        smtp_security=settings.smtp_security,
        mail_from=str(settings.mail_from),
        max_attachment_bytes=settings.mail_max_attachment_mb * mb,
        max_per_sender_per_hour=settings.limit_mail_per_sender_per_hour,
        spam_headers=settings.mail_spam_headers,
        authserv_id=settings.mail_authserv_id,
        max_acks_per_mailbox_per_hour=settings.limit_acks_per_mailbox_per_hour,
        max_acks_per_hour=settings.limit_acks_per_hour,
        chunk_bytes=settings.mail_chunk_mb * mb,
        max_letter_bytes=settings.mail_max_letter_mb * mb,
    )


def telegram_channel(
    settings: Settings,
    core: Core,
    owners: ClaimOwners | None = None,
    info: DeskInfo | None = None,
) -> Component:
    """The bot, its staff group and its outbox loop, from the settings."""
    from bot.channel import TelegramChannel, Webhook, make_bot
    from bot.config import BotConfig
    from bot.storage import make_events_isolation, make_fsm_storage

    assert settings.telegram_bot_token is not None
    if not settings.staff_user_ids:
        log.warning("DSR_STAFF_USER_IDS is empty: nobody can act on requests in the staff group")
    config = BotConfig(
        staff_chat_id=settings.staff_chat_id,
        staff_user_ids=settings.staff_user_ids,
        staff_language=settings.staff_language,
        info=info or desk_info(settings),
        messages_per_minute=settings.limit_messages_per_minute,
    )
    webhook = None
    if settings.telegram_webhook_url:
        host, _, port = settings.telegram_webhook_listen.rpartition(":")
        path = urlsplit(settings.telegram_webhook_url).path or "/"
        webhook = Webhook(
            url=settings.telegram_webhook_url,
            secret=settings.webhook_secret(),
            host=host,
            port=int(port),
            path=path,
        )
    return TelegramChannel(
        bot=make_bot(settings.telegram_bot_token.get_secret_value(), settings.telegram_api_url),
        config=config,
        service=core.service,
        fulfilment=desk_fulfilment(settings, core, config.info),
        sessions=core.sessions,
        vault=core.vault,
        clock=core.clock,
        storage=make_fsm_storage(
            settings.redis_url,
            core.sessions,
            core.vault,
            core.clock,
            sole_handler=webhook is None,  # long polling: this process alone gets updates
            dialog_ttl=timedelta(hours=settings.dialog_ttl_hours),
            choices_ttl=timedelta(days=settings.retention_days),
        ),
        events_isolation=make_events_isolation(settings.redis_url),
        webhook=webhook,
        claim_owners=owners,
    )


async def _keep_running(
    component: Component,
    stop: asyncio.Event,
    *,
    health: PartHealth,
    sleep: Sleep,
    monotonic: Monotonic,
    first_delay: float,
    max_delay: float,
) -> None:
    pauses = Backoff(first_delay, max_delay)
    while not stop.is_set():
        started = monotonic()
        health.started(component.name)
        try:
            await component.run(stop)
        except Exception as exc:
            health.crashed(component.name, exc)
            log.exception("%s crashed; starting it again in %g s", component.name, pauses.delay)
        else:
            health.stopped(component.name)
            if stop.is_set():
                return
            log.warning("%s returned without being stopped; starting it again", component.name)
        # A part that ran for a good while before failing gets a fresh, short pause.
        if monotonic() - started >= max_delay:
            pauses.reset()
        await wait_or_stop(stop, pauses.next(), sleep=sleep)


async def serve(
    components: Sequence[Component],
    *,
    install_signals: bool = True,
    stop: asyncio.Event | None = None,
    sleep: Sleep = asyncio.sleep,
    monotonic: Monotonic = time.monotonic,
    first_delay: float = 1.0,
    max_delay: float = 60.0,
    grace: float = 10.0,
    health: PartHealth | None = None,
) -> int:
    """Run ``components`` until ``stop`` is set (by SIGTERM or SIGINT); return the exit code.

    A part that crashes is logged and started again after 1, 2, 4 ... up to 60
    seconds; the others keep working. On stop each part has ``grace`` seconds
    to return before it is cancelled. Each part's starts and crashes, and
    those of the loops inside the channels, are told to ``health``.
    """
    stop = stop if stop is not None else asyncio.Event()
    health = health if health is not None else PartHealth()
    for component in components:
        health.add(component.name)
        for inner in INNER_PARTS.get(component.name, ()):
            health.add(inner, parent=component.name)
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if install_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _request_stop, stop, signum)
            handled.append(signum)
    tasks = [
        asyncio.create_task(
            _keep_running(
                component,
                stop,
                health=health,
                sleep=sleep,
                monotonic=monotonic,
                first_delay=first_delay,
                max_delay=max_delay,
            ),
            name=f"aina-dsr:{component.name}",
        )
        for component in components
    ]
    try:
        with crash_log(health, CRASH_LINES):
            log.info("running: %s", ", ".join(c.name for c in components) or "nothing")
            await stop.wait()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=grace)
                for task in pending:
                    log.warning(
                        "%s did not stop within %g s; cancelling it", task.get_name(), grace
                    )
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for signum in handled:
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return 0


def _request_stop(stop: asyncio.Event, signum: signal.Signals) -> None:
    if not stop.is_set():
        log.info("%s received; stopping", signum.name)
    stop.set()
