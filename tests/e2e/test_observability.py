"""What an operator sees: JSON logs without personal data, metrics, health, `aina-dsr check`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import AcceptedGiftTypes
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aina_dsr.logs import log_handler
from aina_dsr.observability import MetricsServer
from aina_dsr.runtime import build_components
from aina_dsr.settings import load_settings
from aina_dsr.wiring import open_core
from bot.callbacks import StaffAction, SummaryChoice
from bot.delivery import Rendered, TelegramPort
from mail.outcomes import Outcome
from tests.botapi import BotAPI, Person
from tests.cli_command import aina_dsr, aina_dsr_here
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID, STAFF_IDS, postgres_url
from tests.mail_desk import mail_channel, person_letter
from tests.mailservers import Dovecot, SmtpServer, dovecot, free_port, smtp_server
from tests.metrics_scrape import scrape, value
from tests.staff_desk import answer_prompt, press_draft, prompt_for, staff_presses
from tests.telegram_desk import STAFF_CHAT, Desk, buttons, message_id, words
from tests.telegram_dialog import (
    PHONE,
    answer_questions,
    code_in_outbox,
    share_own_contact_and_confirm,
    start_kind,
    text,
)
from workflows.deadlines.leader_lock import AdvisoryLock
from workflows.kinds import RequestKind
from workflows.metrics import TALLY
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import OutgoingMessage
from workflows.persistence.engines import make_engine, make_sessionmaker
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

__all__ = ["dovecot", "smtp_server"]

EMAIL = "Aigerim@Mail.kz"
MAIL_SENDER = "Person.Mail@Example.KZ"
MAIL_PHONE = "8 701 765 43 21"


# Logs


def personal_data_patterns(phones: list[str], emails: list[str]) -> list[re.Pattern[str]]:
    """A phone in any spelling (+7, 8, spaces, dashes, brackets) and an e-mail in any case."""
    patterns = []
    for phone in phones:
        national = re.sub(r"\D", "", phone)[-10:]
        patterns.append(re.compile(r"[\s()\-.]*".join(national)))
    patterns += [re.compile(re.escape(email), re.IGNORECASE) for email in emails]
    return patterns


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log record of the process at DEBUG, as ``aina-dsr run`` writes it with JSON."""
    stream = io.StringIO()
    handler = log_handler(stream, "json")
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def log_entries(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    # Each line is one JSON object (a traceback stays inside its entry).
    return [json.loads(line) for line in lines]


def assert_no_personal_data(stream: io.StringIO, phones: list[str], emails: list[str]) -> None:
    raw = stream.getvalue()
    assert raw, "nothing was logged"
    for pattern in personal_data_patterns(phones, emails):
        leaks = [line for line in raw.splitlines() if pattern.search(line)]
        assert leaks == [], f"{pattern.pattern} in the log:\n" + "\n".join(leaks[:5])


async def test_a_telegram_dialog_leaves_references_and_no_personal_data_in_the_log(
    json_log: io.StringIO,
    api: BotAPI,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    desk = Desk(api, service, sessions, vault, clock, STAFF_IDS)
    await desk.start()
    try:
        # One person proves who they are with their contact (a phone), types it too, and
        # staff take the complaint to the end.
        aigerim = Person(700200, first_name="Aigerim", language_code="en")
        await start_kind(desk, aigerim, RequestKind.COMPLAINT, "en")
        await answer_questions(desk, aigerim, RequestKind.COMPLAINT, "en")
        await desk.send(aigerim, "+7 (701) 123-45-67", expect=words("en", "identity.typed_phone"))
        await share_own_contact_and_confirm(desk, aigerim, "en")
        [complaint] = await service.list_requests(telegram_user_id=aigerim.id)
        card = await desk.expect(
            STAFF_CHAT, 0, lambda c: complaint.reference in text(c), methods=("sendMessage",)
        )
        dana = Person(STAFF_ID, first_name="Dana")
        since = desk.mark()
        await desk.api.offer(
            desk.api.callback_query(
                dana,
                STAFF_CHAT,
                message_id(card),
                StaffAction(action="take", reference=complaint.reference).pack(),
            )
        )
        await desk.expect(STAFF_CHAT, since, methods=("editMessageText",))
        # Approving the complaint asks for its answer, which closes it once sent.
        since = await staff_presses(desk, dana, card, "approve", complaint.reference)
        prompt = await prompt_for(desk, since, "staff.answer.prompt", complaint.reference)
        preview = await answer_prompt(desk, dana, prompt, "We write only with your consent.")
        since = desk.mark()
        await press_draft(desk, dana, preview, "staff.draft.send")
        await desk.expect(STAFF_CHAT, since, methods=("editMessageText",))
        # Another proves an e-mail address with the code sent to it.
        bota = Person(700201, first_name="Bota", language_code="ru")
        await start_kind(desk, bota, RequestKind.UNSUBSCRIBE, "ru")
        await answer_questions(desk, bota, RequestKind.UNSUBSCRIBE, "ru")
        since = desk.mark()
        await desk.send(bota, EMAIL)
        summary = await desk.expect(bota.id, since, lambda c: bool(buttons(c)))
        await desk.press(bota, bota.id, message_id(summary), SummaryChoice(action="confirm").pack())
        await desk.expect(
            bota.id, since, lambda c: text(c) == words("ru", "code.sent", email="a***@mail.kz")
        )
        code = await code_in_outbox(sessions, vault)
        await desk.send(bota, code, expect=words("ru", "code.ok"))
        [unsubscribe] = await service.list_requests(telegram_user_id=bota.id)
        await desk.expect(bota.id, 0, lambda c: unsubscribe.reference in text(c))
        assert (await service.get(complaint.reference)).status == "completed"
    finally:
        await desk.stop()

    assert_no_personal_data(json_log, [PHONE], [EMAIL])
    entries = log_entries(json_log)
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    references = {entry.get("reference") for entry in entries}
    assert {complaint.reference, unsubscribe.reference} <= references


async def test_a_letter_through_intake_leaves_no_personal_data_in_the_log(
    json_log: io.StringIO,
    dovecot: Dovecot,
    smtp_server: SmtpServer,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        dovecot.append(
            person_letter(
                MAIL_SENDER,
                "Subject access request",
                f"Hello, what do you hold about me?\nJohn Doe\nPhone: {MAIL_PHONE}\n",
                1,
            )
        )
        [taken] = await channel.poller.poll_once()
        await channel.dispatcher.run_once()
        assert taken.outcome is Outcome.OPENED and taken.reference is not None
        [acknowledgement] = smtp_server.letters
        body = acknowledgement.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        code = re.search(r"(?<![\d-])(\d{6})(?!\d)", body.replace(taken.reference, ""))
        assert code is not None
        dovecot.append(
            person_letter(
                MAIL_SENDER.upper(),
                "Re: " + str(acknowledgement.message["Subject"]),
                f"{code.group(1)}\n",
                2,
                In_Reply_To=str(acknowledgement.message["Message-ID"]),
            )
        )
        [answered] = await channel.poller.poll_once()
        await channel.dispatcher.run_once()
        assert answered.outcome is Outcome.VERIFIED
    finally:
        await channel.poller.close()
        channel.poller.shutdown()

    assert_no_personal_data(json_log, [MAIL_PHONE], [MAIL_SENDER])
    mail_entries = [e for e in log_entries(json_log) if e["logger"].startswith("mail.")]
    assert any(e.get("reference") == taken.reference for e in mail_entries)


async def test_a_telegram_user_id_in_a_handler_log_line_comes_out_masked(
    json_log: io.StringIO, desk: Desk
) -> None:
    # A stray button logs the chat it was pressed in: a private chat's id is the person's.
    someone = Person(555123456, first_name="Aigerim", language_code="en")
    since = desk.mark()
    await desk.press(someone, someone.id, 1, "no:such:button")
    await desk.api.wait_until(
        lambda calls: next((c for c in calls[since:] if c.method == "answerCallbackQuery"), None)
    )

    raw = json_log.getvalue()
    assert "555123456" not in raw
    [stray] = [e for e in log_entries(json_log) if "nobody handles" in e["message"]]
    assert stray["message"].endswith("in chat 55***56")


def test_a_reference_given_as_an_extra_is_a_field_and_an_exception_is_masked() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.observability.extra")
    logger.propagate = False
    logger.addHandler(log_handler(stream, "json"))
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("sent to %s", "someone@example.kz", extra={"reference": "DSR-2026-000042"})
        try:
            raise ValueError("duplicate key (email)=(someone@example.kz), phone +77011234567")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.handlers.clear()
        logger.propagate = True
    first, second = log_entries(stream)
    assert first["reference"] == "DSR-2026-000042"
    assert first["message"] == "sent to s***@example.kz"
    assert "someone@" not in second["exception"] and "77011234567" not in second["exception"]
    assert "reference" not in second


def test_the_text_format_masks_a_traceback_too() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.observability.text")
    logger.propagate = False
    logger.addHandler(log_handler(stream, "text"))
    try:
        try:
            raise ValueError("no customer +77011234567")
        except ValueError:
            logger.error("lookup failed", exc_info=True)
    finally:
        logger.handlers.clear()
        logger.propagate = True
    assert "77011234567" not in stream.getvalue()
    assert "lookup failed" in stream.getvalue()


# Metrics


@pytest.fixture
async def metrics(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> AsyncIterator[MetricsServer]:
    server = MetricsServer(
        host="127.0.0.1",
        port=free_port(),
        engine=engine,
        sessions=sessions,
        clock=clock,
        cache_seconds=0,
    )
    async with running(server):
        yield server


class running:
    """Runs a component until the block ends."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MetricsServer:
        self.task = asyncio.create_task(self.server.run(self.stop))
        await asyncio.wait_for(self.server.started.wait(), 10)
        return self.server

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


async def test_metrics_count_requests_by_kind_and_status_and_the_overdue_ones(
    metrics: MetricsServer, service: RequestService, clock: FrozenClock
) -> None:
    for user in (1, 2):
        await service.open_request(
            kind="access", channel="telegram", language="en", telegram_user_id=user
        )
    await service.open_request(
        kind="complaint", channel="email", language="ru", email="someone@example.kz"
    )

    status, body = await scrape(metrics.port)

    assert status == 200
    assert value(body, "aina_dsr_requests", kind="access", status="awaiting_verification") == 2
    assert value(body, "aina_dsr_requests", kind="complaint", status="awaiting_verification") == 1
    assert value(body, "aina_dsr_requests_overdue") == 0
    assert value(body, "aina_dsr_database_up") == 1
    # Nothing delivered them yet: the acknowledgements wait in the outbox.
    assert value(body, "aina_dsr_outbox_backlog", channel="telegram") == 2
    assert value(body, "aina_dsr_outbox_backlog", channel="email") == 1
    assert value(body, "aina_dsr_outbox_oldest_age_seconds", channel="telegram") == 0

    # Access has three working days; a fortnight later both are overdue.
    clock.advance(days=14)
    _, body = await scrape(metrics.port)
    assert value(body, "aina_dsr_requests_overdue") == 2
    assert value(body, "aina_dsr_outbox_oldest_age_seconds", channel="telegram") == (
        timedelta(days=14).total_seconds()
    )


async def test_metrics_count_deliveries_telegram_errors_and_the_imap_lag(
    metrics: MetricsServer,
    api: BotAPI,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    TALLY.reset()
    await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=4242
    )
    api.fail_next("sendMessage", status=429, retry_after=7)
    async with api.bot() as bot:

        async def render(message: OutgoingMessage) -> Rendered:
            return Rendered(text=message.template)

        port = TelegramPort(bot, render, staff_chat_id=STAFF_CHAT, sessions=sessions, clock=clock)
        dispatcher = OutboxDispatcher(sessions, vault, clock, {port.channel: port})
        await dispatcher.run_once()  # flood control: held back
        clock.advance(seconds=8)
        await dispatcher.run_once()  # sent
    TALLY.imap_polled_at["INBOX"] = clock.now() - timedelta(seconds=90)

    _, body = await scrape(metrics.port)

    assert value(body, "aina_dsr_telegram_errors_total", kind="retry_after") == 1
    assert value(body, "aina_dsr_deliveries_total", channel="telegram", outcome="retried") == 1
    assert value(body, "aina_dsr_deliveries_total", channel="telegram", outcome="sent") == 1
    assert value(body, "aina_dsr_outbox_backlog", channel="telegram") == 0
    assert value(body, "aina_dsr_imap_lag_seconds", folder="INBOX") == 90
    # Each run of the dispatcher is a round of the "outbox telegram" loop, begun and ended.
    assert value(body, "aina_dsr_rounds_started_total", loop="outbox telegram") == 2
    assert value(body, "aina_dsr_rounds_finished_total", loop="outbox telegram") == 2
    TALLY.reset()


async def test_healthz_answers_200_while_the_database_answers_and_503_when_it_is_gone(
    metrics: MetricsServer, clock: FrozenClock
) -> None:
    status, body = await scrape(metrics.port, "/healthz")
    assert status == 200
    assert json.loads(body)["database"] == "ok"

    dead = make_engine(f"postgresql+asyncpg://desk@127.0.0.1:{free_port()}/desk")
    gone = MetricsServer(
        host="127.0.0.1",
        port=free_port(),
        engine=dead,
        sessions=make_sessionmaker(dead),
        clock=clock,
        cache_seconds=0,
        timeout=5,
    )
    try:
        async with running(gone):
            status, body = await scrape(gone.port, "/healthz")
            assert status == 503
            assert json.loads(body)["status"] == "failing"
            status, body = await scrape(gone.port)
            assert status == 200
            assert value(body, "aina_dsr_database_up") == 0
    finally:
        await dead.dispose()


# aina-dsr check


class BotAPIWithChats(BotAPI):
    """The stand-in, also answering ``getChat`` (the check names the staff group)."""

    def _result(
        self, method: str, params: dict[str, Any], files: dict[str, bytes], names: dict[str, str]
    ) -> Any:
        if method.lower() == "getchat":
            return {
                "id": int(params["chat_id"]),
                "type": "supergroup",
                "title": "AINA staff",
                "accent_color_id": 0,
                "max_reaction_count": 11,
                "accepted_gift_types": dict.fromkeys(AcceptedGiftTypes.model_fields, False),
            }
        return super()._result(method, params, files, names)


def redis_running() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def states(stdout: str) -> dict[str, str]:
    """component -> ok / FAILED / not configured, from the check's table."""
    found = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|]", line) if cell.strip()]
        if len(cells) >= 2 and cells[1] in {"ok", "FAILED", "not configured"}:
            found[cells[0]] = cells[1]
    return found


async def test_check_shows_every_component_ok_and_a_dead_port_failed(
    tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    key = Fernet.generate_key().decode()
    async with BotAPIWithChats() as api:
        env = {
            "COLUMNS": "250",
            "DSR_ENCRYPTION_KEY": key,
            "DSR_DATABASE_URL": "sqlite:///desk.db",
            "DSR_TELEGRAM_BOT_TOKEN": api.token,
            "DSR_TELEGRAM_API_URL": api.base,
            "DSR_STAFF_CHAT_ID": str(STAFF_CHAT),
            "DSR_IMAP_HOST": dovecot.host,
            "DSR_IMAP_PORT": str(dovecot.port),
            "DSR_IMAP_USER": dovecot.user,
            "DSR_IMAP_PASSWORD": dovecot.password,
            "DSR_IMAP_SECURITY": "none",
            "DSR_SMTP_HOST": smtp_server.host,
            "DSR_SMTP_PORT": str(smtp_server.port),
            "DSR_SMTP_SECURITY": "none",
            "DSR_METRICS_PORT": str(free_port()),
        }
        if redis_running():
            env["DSR_REDIS_URL"] = "redis://127.0.0.1:6379/0"
        # The stand-in answers on this event loop, so the command runs in a thread.
        result = await asyncio.to_thread(aina_dsr, tmp_path, "check", **env)
        assert result.returncode == 0, result.stdout + result.stderr
        shown = states(result.stdout)
        expected = ["database", "encryption key", "telegram", "imap", "smtp", "metrics"]
        expected += ["scheduler lock", "imap poller lock"]
        expected += ["redis"] if "DSR_REDIS_URL" in env else []
        assert {part: shown.get(part) for part in expected} == dict.fromkeys(expected, "ok")
        assert "@" in result.stdout and "AINA staff" in result.stdout
        assert dovecot.password not in result.stdout + result.stderr

        dead = free_port()
        # The same command in this process (aiogram is imported here already).
        result = await asyncio.to_thread(
            aina_dsr_here, tmp_path, "check", **{**env, "DSR_SMTP_PORT": str(dead)}
        )
        assert result.returncode == 1, result.stdout + result.stderr
        shown = states(result.stdout)
        assert shown["smtp"] == "FAILED"
        assert shown["telegram"] == "ok"


async def test_check_tells_a_running_desk_from_another_program_on_the_metrics_port(
    tmp_path: Path, metrics: MetricsServer
) -> None:
    env = {"COLUMNS": "250", "DSR_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    result = await asyncio.to_thread(
        aina_dsr, tmp_path, "check", DSR_METRICS_PORT=str(metrics.port), **env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert states(result.stdout)["metrics"] == "ok"
    assert "running desk" in result.stdout

    async def another_program(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello\n")
        await writer.drain()
        writer.close()

    other = await asyncio.start_server(another_program, "127.0.0.1", 0)
    port = other.sockets[0].getsockname()[1]
    async with other:
        result = await asyncio.to_thread(
            aina_dsr_here, tmp_path, "check", DSR_METRICS_PORT=str(port), **env
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert states(result.stdout)["metrics"] == "FAILED"
    assert states(result.stdout)["redis"] == "not configured"


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL only (DSR_TEST_DATABASE_URL)")
async def test_check_names_the_process_holding_the_scheduler_lock(
    tmp_path: Path, database_url: str, engine: AsyncEngine
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the advisory lock is PostgreSQL's")
    env = {
        "COLUMNS": "250",
        "DSR_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "DSR_DATABASE_URL": database_url,
    }
    result = await asyncio.to_thread(aina_dsr, tmp_path, "check", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "free: no process leads now" in result.stdout

    lock = AdvisoryLock(engine)
    assert await lock.acquire()
    try:
        result = await asyncio.to_thread(aina_dsr_here, tmp_path, "check", **env)
    finally:
        await lock.release()
    assert result.returncode == 0, result.stdout + result.stderr
    shown = states(result.stdout)
    assert (shown["database"], shown["scheduler lock"]) == ("ok", "ok")
    assert "held by backend pid" in result.stdout


async def test_run_serves_metrics_only_when_a_port_is_set(
    tmp_path: Path, encryption_key: str
) -> None:
    for port, expected in ((None, False), (free_port(), True)):
        settings = load_settings(
            database_url=f"sqlite:///{tmp_path}/desk.db",
            encryption_key=encryption_key,
            telegram_bot_token="123456:telegram-token",
            staff_chat_id=-1001,
            metrics_port=port,
        )
        async with open_core(settings) as core:
            components = build_components(settings, core)
            try:
                assert ("metrics" in [c.name for c in components]) is expected
            finally:
                for component in components:
                    close = getattr(component, "close", None)
                    if close is not None:
                        await close()
