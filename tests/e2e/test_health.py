"""``/healthz`` names each part of the desk and its state, and answers 503 when one keeps crashing.

A load balancer reads only the status code: a desk whose mail sender crashes
every few seconds must not answer 200 "ok" because its database does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aina_dsr.health import PartHealth
from aina_dsr.observability import MetricsServer
from aina_dsr.runtime import Component, serve
from mail.channel import MailChannel
from tests.botapi import BotAPI
from tests.clocks import FrozenClock
from tests.desk_process import DeskProcess, base_env, eventually, mail_env, processes
from tests.mail_desk import mail_channel
from tests.mailservers import Dovecot, SmtpServer, dovecot, free_port, smtp_server
from tests.metrics_scrape import scrape
from tests.parts import Crasher, Worker, recording_sleep
from tests.telegram_desk import STAFF_CHAT
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

__all__ = ["dovecot", "smtp_server"]


class ServedDesk:
    """``serve`` running ``parts`` and a real metrics server, as ``aina-dsr run`` does."""

    def __init__(
        self,
        parts: list[Component],
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        self.now = 0.0
        self.health = PartHealth(monotonic=lambda: self.now)
        self.metrics = MetricsServer(
            host="127.0.0.1",
            port=free_port(),
            engine=engine,
            sessions=sessions,
            clock=clock,
            health=self.health,
            cache_seconds=0,
        )
        self.parts = [*parts, self.metrics]
        self.stop = asyncio.Event()
        _, self.sleep = recording_sleep()  # a crashed part starts again at once
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> ServedDesk:
        self.task = asyncio.create_task(
            serve(
                self.parts,
                install_signals=False,
                stop=self.stop,
                sleep=self.sleep,
                health=self.health,
            )
        )
        await asyncio.wait_for(self.metrics.started.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        assert await asyncio.wait_for(self.task, 15) == 0

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        status, body = await scrape(self.metrics.port, "/healthz")
        return status, json.loads(body)


@pytest.fixture
async def parts_crashing(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> AsyncIterator[tuple[ServedDesk, Crasher]]:
    crasher = Crasher(crashes=3)
    async with ServedDesk([Worker("worker"), crasher], engine, sessions, clock) as desk:
        await asyncio.wait_for(crasher.steady.wait(), 10)
        yield desk, crasher


async def test_a_part_that_crashed_3_times_within_5_minutes_makes_healthz_503(
    parts_crashing: tuple[ServedDesk, Crasher],
) -> None:
    desk, _ = parts_crashing

    status, body = await desk.healthz()

    assert status == 503
    assert body["status"] == "failing"
    assert body["database"] == "ok"
    assert body["components"]["crasher"] == {
        "state": "crashing",
        "crashes": 3,
        "last_error": "RuntimeError: crash number 3",
    }
    assert body["problems"] == [
        "crasher crashed 3 times within 5 min (RuntimeError: crash number 3)"
    ]
    assert body["components"]["worker"] == {"state": "running", "crashes": 0}


async def test_a_part_steady_for_5_minutes_is_healthy_again(
    parts_crashing: tuple[ServedDesk, Crasher],
) -> None:
    desk, _ = parts_crashing

    desk.now += 5 * 60 + 1
    status, body = await desk.healthz()

    assert status == 200
    assert body["status"] == "ok"
    assert body["problems"] == []
    assert body["components"]["crasher"] == {"state": "running", "crashes": 0}


async def test_two_crashes_are_weather_not_a_failure(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    crasher = Crasher(crashes=2)
    async with ServedDesk([crasher], engine, sessions, clock) as desk:
        await asyncio.wait_for(crasher.steady.wait(), 10)

        status, body = await desk.healthz()

    assert status == 200
    assert body["components"]["crasher"]["state"] == "running"
    assert body["components"]["crasher"]["crashes"] == 2


async def test_the_mail_sender_crash_looping_makes_healthz_503(
    dovecot: Dovecot,
    smtp_server: SmtpServer,
    engine: AsyncEngine,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # Another replica, started with another key, queued letters this one cannot read: each
    # batch the sender claims crashes it, and the mail channel starts it again.
    built = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    mail = MailChannel(built.poller, built.dispatcher, sender=built.sender, restart_seconds=0.01)
    stranger = Vault(Vault.generate_key())
    async with sessions.begin() as session:
        await session.execute(
            insert(OutboxItem),
            [
                {
                    "idempotency_key": f"stranger-{number}",
                    "channel": "email",
                    "audience": "subject",
                    "address_enc": stranger.encrypt(f"person{number}@example.kz"),
                    "template": "ack",
                    "language": "en",
                    "params_enc": stranger.encrypt_json({}),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": clock.now() - timedelta(minutes=1),
                    "created_at": clock.now() - timedelta(minutes=1),
                }
                for number in range(200)
            ],
        )

    async with ServedDesk([mail], engine, sessions, clock) as desk:

        async def crashed_thrice() -> tuple[int, dict[str, Any]] | None:
            status, body = await desk.healthz()
            return (status, body) if body["components"]["mail sender"]["crashes"] >= 3 else None

        status, body = await eventually(crashed_thrice, timeout=30, every=0.05, what="3 crashes")

    assert status == 503
    sender = body["components"]["mail sender"]
    assert sender["state"] == "crashing"
    assert sender["last_error"].startswith("VaultError: ")
    assert body["components"]["mail poller"] == {"state": "running", "crashes": 0}
    assert body["components"]["mail"]["state"] == "running"
    assert body["problems"] == [
        f"mail sender crashed {sender['crashes']} times within 5 min ({sender['last_error']})"
    ]
    assert "person0@example.kz" not in json.dumps(body)


# ``aina-dsr run`` as it is deployed


async def test_run_lists_each_part_on_healthz_and_answers_200_while_they_work(
    api: BotAPI,
    dovecot: Dovecot,
    smtp_server: SmtpServer,
    tmp_path: Path,
    encryption_key: str,
) -> None:
    port = free_port()
    env = {
        **base_env(tmp_path, f"sqlite:///{tmp_path}/desk.db", encryption_key),
        **mail_env(dovecot, smtp_server),
        "DSR_TELEGRAM_BOT_TOKEN": api.token,
        "DSR_TELEGRAM_API_URL": api.base,
        "DSR_STAFF_CHAT_ID": str(STAFF_CHAT),
        "DSR_METRICS_PORT": str(port),
    }
    desk = DeskProcess("desk", env, tmp_path)
    parts = {
        "telegram",
        "telegram outbox",
        "mail",
        "mail poller",
        "mail sender",
        "scheduler",
        "metrics",
    }

    async def all_running() -> dict[str, Any] | None:
        assert desk.running, desk.log()
        try:
            status, text = await scrape(port, "/healthz")
        except OSError:
            return None  # not listening yet
        body: dict[str, Any] = json.loads(text)
        states = {name: part["state"] for name, part in body["components"].items()}
        return body if status == 200 and states == dict.fromkeys(parts, "running") else None

    async with processes(desk):
        await desk.start()
        body = await eventually(all_running, timeout=60, what="every part running")
        assert await desk.stop() == 0

    assert body["status"] == "ok"
    assert body["problems"] == []
