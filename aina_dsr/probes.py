"""The probes of ``aina-dsr check``: each configured part reached, each answering in one line.

A probe tries what the desk would do at start (open the database and read its
revision, read the newest stored values with the key, log in to IMAP and SMTP,
ask Telegram who the bot is, ping Redis, bind the metrics port, see who holds
the leader locks) within :data:`~aina_dsr.failures.PROBE_TIMEOUT`, and says
what it found without a secret. A part not configured is neither ok nor failed.
The channels' libraries are imported only when their probe runs.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aina_dsr.failures import PROBE_TIMEOUT, describe, safe_url, wrong_key
from aina_dsr.preflight import open_sqlite_file
from aina_dsr.settings import DEV_KEY_FILE, Settings, encryption_keys_or_dev


@dataclass(frozen=True)
class Probe:
    """One line of ``aina-dsr check``: ``ok`` is ``None`` for a part that is not configured."""

    component: str
    ok: bool | None
    detail: str


async def _timed(component: str, settings: Settings, probe: Callable[[], Awaitable[str]]) -> Probe:
    try:
        detail = await asyncio.wait_for(probe(), PROBE_TIMEOUT)
    except Exception as exc:
        return Probe(component, False, describe(exc, settings))
    return Probe(component, True, detail)


async def _check_database(settings: Settings) -> Probe:
    from sqlalchemy import text

    from workflows.persistence.engines import engine_revision, head_revision, make_engine

    where = safe_url(settings.database_url)
    path = settings.sqlite_path
    if path is not None and not path.exists():
        return Probe("database", True, f"{path} not created yet; `aina-dsr run` creates it")

    async def probe() -> str:
        if path is not None:
            open_sqlite_file(path)
        # make_engine: a search_path in the URL selects the schema, as for `aina-dsr run`.
        engine = make_engine(settings.database_url)
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return await engine_revision(engine) or "none"
        finally:
            await engine.dispose()

    reached = await _timed("database", settings, probe)
    if not reached.ok:
        return Probe("database", False, f"{where}: {reached.detail}")
    revision, head = reached.detail, head_revision()
    if revision == head:
        return Probe("database", True, f"{where}: schema at revision {head}")
    if settings.is_sqlite:
        return Probe("database", True, f"{where}: `aina-dsr run` will upgrade the schema to {head}")
    return Probe(
        "database",
        False,
        f"{where}: schema at {revision}, needs {head}; run `aina-dsr db upgrade`",
    )


async def _check_key(settings: Settings) -> Probe:
    if settings.encryption_key is not None:
        state = "set"
    elif settings.dev_mode:
        made = "exists" if DEV_KEY_FILE.exists() else "made on first run"
        state = f"DEV MODE: throw-away key in {DEV_KEY_FILE} ({made})"
        if not DEV_KEY_FILE.exists():
            return Probe("encryption key", True, state)  # nothing can be stored under it yet
    else:
        return Probe(
            "encryption key", False, "missing: set DSR_ENCRYPTION_KEY (`aina-dsr keys generate`)"
        )
    # A well-formed key may still be the wrong one: it must read what is stored.
    try:
        unreadable = await asyncio.wait_for(_unreadable_value(settings), PROBE_TIMEOUT)
    except Exception:
        return Probe("encryption key", True, f"{state}; not tried on the stored data")
    if unreadable is None:
        return Probe("encryption key", True, state)
    return Probe("encryption key", False, str(wrong_key(unreadable)))


async def _unreadable_value(settings: Settings) -> str | None:
    """Where the stored data does not read with the configured keys (as at start-up)."""
    from workflows.persistence.engines import engine_revision, head_revision, make_engine
    from workflows.privacy.key_rotation import unreadable_value
    from workflows.privacy.vault import Vault

    path = settings.sqlite_path
    if path is not None and not path.is_file():
        return None  # nothing stored yet (or nothing to open: the database line says so)
    engine = make_engine(settings.database_url)
    try:
        if await engine_revision(engine) != head_revision():
            return None  # the database line says what to do first
        return await unreadable_value(engine, Vault(*encryption_keys_or_dev(settings)))
    finally:
        await engine.dispose()


async def _check_telegram(settings: Settings) -> Probe:
    token, chat_id = settings.telegram_bot_token, settings.staff_chat_id
    if token is None and chat_id is None:
        return Probe("telegram", None, "set DSR_TELEGRAM_BOT_TOKEN and DSR_STAFF_CHAT_ID")
    if token is None or chat_id is None:
        missing = "DSR_TELEGRAM_BOT_TOKEN" if token is None else "DSR_STAFF_CHAT_ID"
        return Probe("telegram", False, f"incomplete: {missing} is not set")

    async def probe() -> str:
        from aiogram import Bot
        from aiogram.client.session.aiohttp import AiohttpSession
        from aiogram.client.telegram import TelegramAPIServer

        api = settings.telegram_api_url
        session = AiohttpSession(api=TelegramAPIServer.from_base(api)) if api else None
        bot = Bot(token.get_secret_value(), session=session)
        try:
            me = await bot.get_me()
            chat = await bot.get_chat(chat_id)
        finally:
            await bot.session.close()
        return f"@{me.username}; staff group {chat.title or chat.id}"

    return await _timed("telegram", settings, probe)


def _mail_settings_given(settings: Settings) -> bool:
    return any(
        value is not None
        for value in (
            settings.imap_host,
            settings.imap_user,
            settings.imap_password,
            settings.smtp_host,
        )
    )


async def _check_imap(settings: Settings) -> Probe:
    if not _mail_settings_given(settings):
        return Probe("imap", None, "set DSR_IMAP_HOST, DSR_IMAP_USER and DSR_IMAP_PASSWORD")
    host, user, password = settings.imap_host, settings.imap_user, settings.imap_password
    if host is None or user is None or password is None:
        missing = [
            name
            for name, value in (
                ("DSR_IMAP_HOST", host),
                ("DSR_IMAP_USER", user),
                ("DSR_IMAP_PASSWORD", password),
            )
            if value is None
        ]
        return Probe("imap", False, f"incomplete: {', '.join(missing)} not set")
    where = f"{user} at {host}:{settings.imap_port} ({settings.imap_security})"

    def login() -> str:
        # imap-tools is synchronous: it runs in a worker thread, bounded by the socket timeout.
        import ssl

        from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted

        # The poller verifies the server's certificate (imaplib alone would not): so does this.
        context = ssl.create_default_context()
        mailbox: Any
        if settings.imap_security == "ssl":
            mailbox = MailBox(host, settings.imap_port, timeout=PROBE_TIMEOUT, ssl_context=context)
        elif settings.imap_security == "starttls":
            mailbox = MailBoxStartTls(
                host, settings.imap_port, timeout=PROBE_TIMEOUT, ssl_context=context
            )
        else:
            mailbox = MailBoxUnencrypted(host, settings.imap_port, timeout=PROBE_TIMEOUT)
        with mailbox.login(user, password.get_secret_value(), initial_folder=settings.imap_folder):
            pass
        return f"{where}, folder {settings.imap_folder}"

    return await _timed("imap", settings, lambda: asyncio.to_thread(login))


async def _check_smtp(settings: Settings) -> Probe:
    if not _mail_settings_given(settings):
        return Probe("smtp", None, "set DSR_SMTP_HOST")
    host = settings.smtp_host
    if host is None:
        return Probe("smtp", False, "incomplete: DSR_SMTP_HOST not set")

    async def probe() -> str:
        import aiosmtplib

        smtp = aiosmtplib.SMTP(
            hostname=host,
            port=settings.smtp_port,
            use_tls=settings.smtp_security == "ssl",
            start_tls=settings.smtp_security == "starttls",
            timeout=PROBE_TIMEOUT,
        )
        await smtp.connect()
        try:
            await smtp.ehlo()
            if settings.smtp_user and settings.smtp_password:
                await smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
            await smtp.quit()
        finally:
            smtp.close()
        who = f"{settings.smtp_user} at " if settings.smtp_user else ""
        return f"{who}{host}:{settings.smtp_port} ({settings.smtp_security})"

    return await _timed("smtp", settings, probe)


async def _check_redis(settings: Settings) -> Probe:
    url = settings.redis_url
    if url is None:
        return Probe("redis", None, "set DSR_REDIS_URL to share conversations between replicas")
    where = safe_url(url) if "://" in url else url

    async def probe() -> str:
        from redis.asyncio import Redis

        client = Redis.from_url(url, socket_timeout=PROBE_TIMEOUT)
        try:
            await client.ping()  # type: ignore[misc]
        finally:
            await client.aclose()
        return f"{where}: PING answered"

    reached = await _timed("redis", settings, probe)
    return reached if reached.ok else Probe("redis", False, f"{where}: {reached.detail}")


async def _check_metrics_port(settings: Settings) -> Probe:
    port = settings.metrics_port
    if port is None:
        return Probe("metrics", None, "set DSR_METRICS_PORT to serve /metrics and /healthz")
    where = f"{settings.metrics_host}:{port}"
    try:
        await asyncio.to_thread(_bind_and_release, settings.metrics_host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return Probe("metrics", False, f"{where}: {describe(exc, settings)}")
    else:
        return Probe("metrics", True, f"{where} free; `aina-dsr run` serves /metrics and /healthz")

    async def probe() -> str:
        import aiohttp

        host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host  # noqa: S104
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://{host}:{port}/healthz") as response,
        ):
            state = await response.json(content_type=None)
        if not isinstance(state, dict) or "database" not in state:
            raise ValueError("in use by another program (no desk health answer)")
        return f"{where} in use by a running desk: health {state.get('status')}"

    reached = await _timed("metrics", settings, probe)
    return reached if reached.ok else Probe("metrics", False, f"{where}: {reached.detail}")


def _bind_and_release(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, port))


async def _check_leaders(settings: Settings) -> list[Probe]:
    """Which process holds each singleton's advisory lock (the scheduler, the IMAP poller)."""
    from mail.channel import POLLER_LOCK
    from workflows.deadlines.leader_lock import SCHEDULER_LOCK

    names = (("scheduler lock", SCHEDULER_LOCK), ("imap poller lock", POLLER_LOCK))
    if settings.is_sqlite:
        return [Probe(label, True, "SQLite: one process, which always leads") for label, _ in names]

    async def probe() -> list[str]:
        from sqlalchemy import text

        from workflows.deadlines.leader_lock import advisory_key
        from workflows.persistence.engines import make_engine

        engine = make_engine(settings.database_url)
        try:
            async with engine.connect() as connection:
                schema = str(await connection.scalar(text("SELECT current_schema()")))
                found = []
                for _, name in names:
                    key = advisory_key(name, schema) & 0xFFFFFFFFFFFFFFFF
                    holder = (
                        await connection.execute(
                            text(
                                "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l "
                                "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                                "WHERE l.locktype = 'advisory' AND l.granted "
                                "AND l.classid = :high AND l.objid = :low AND l.objsubid = 1"
                            ),
                            {"high": key >> 32, "low": key & 0xFFFFFFFF},
                        )
                    ).first()
                    if holder is None:
                        found.append("free: no process leads now")
                    else:
                        pid, address, since = holder
                        started = f", since {since:%Y-%m-%d %H:%M}" if since else ""
                        found.append(
                            f"held by backend pid {pid} from {address or 'local'}{started}"
                        )
                return found
        finally:
            await engine.dispose()

    try:
        details = await asyncio.wait_for(probe(), PROBE_TIMEOUT)
    except Exception as exc:
        return [Probe(label, False, describe(exc, settings)) for label, _ in names]
    return [Probe(label, True, detail) for (label, _), detail in zip(names, details, strict=True)]


async def check_all(settings: Settings) -> list[Probe]:
    """Every probe, in the order ``aina-dsr check`` shows them."""
    remote, leaders = await asyncio.gather(
        asyncio.gather(
            _check_key(settings),
            _check_database(settings),
            _check_telegram(settings),
            _check_imap(settings),
            _check_smtp(settings),
            _check_redis(settings),
            _check_metrics_port(settings),
        ),
        _check_leaders(settings),
    )
    calendar, processing = settings.calendar_file, settings.processing_file
    return [
        Probe("settings", True, "read"),
        remote[0],
        remote[1],
        Probe("calendar", True, str(calendar) if calendar else "holidays package only"),
        Probe("processing", True, str(processing) if processing else "the policy's words only"),
        *remote[2:],
        *leaders,
    ]
