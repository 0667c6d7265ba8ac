"""``aina-dsr run`` with Telegram configured, and the webhook mode, against the Bot API stand-in."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from aiogram.fsm.storage.memory import SimpleEventIsolation
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channel import TelegramChannel, Webhook, make_bot
from bot.config import BotConfig
from bot.storage import DatabaseStorage
from tests.botapi import BotAPI, Person
from tests.clocks import FrozenClock
from tests.conftest import STAFF_IDS
from tests.telegram_desk import NO_LIMITS, STAFF_CHAT, words
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

ALICE = Person(700200, language_code="kk")


async def test_run_serves_the_bot_and_stops_cleanly_on_sigterm(
    api: BotAPI, tmp_path: Path, encryption_key: str
) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DSR_ENCRYPTION_KEY": encryption_key,
        "DSR_TELEGRAM_BOT_TOKEN": api.token,
        "DSR_TELEGRAM_API_URL": api.base,
        "DSR_STAFF_CHAT_ID": str(STAFF_CHAT),
        "DSR_STAFF_USER_IDS": ",".join(map(str, sorted(STAFF_IDS))),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aina_dsr",
        "run",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await api.wait_for("getMe", timeout=30)  # polling starts by asking who it is
        await api.offer(api.private_message(ALICE, "/start"))
        greeting = await api.wait_for(
            "sendMessage",
            lambda c: c.params.get("text") == words("kk", "start.greeting"),
            timeout=15,
        )
        assert greeting.chat_id == ALICE.id
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_mode_checks_the_secret_and_handles_updates(
    api: BotAPI,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    port = free_port()
    webhook = Webhook(
        url="https://desk.example/telegram", secret="s3cret_token", port=port, path="/telegram"
    )
    channel = TelegramChannel(
        bot=make_bot(api.token, api.base),
        config=BotConfig(staff_chat_id=STAFF_CHAT, staff_user_ids=STAFF_IDS),
        service=service,
        sessions=sessions,
        vault=vault,
        clock=clock,
        storage=DatabaseStorage(sessions, vault, clock),
        events_isolation=SimpleEventIsolation(),
        webhook=webhook,
        limits=NO_LIMITS,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(channel.run(stop))
    try:
        registered = await api.wait_for("setWebhook", timeout=10)
        assert registered.params["url"] == webhook.url
        assert registered.params["secret_token"] == "s3cret_token"
        update = {"update_id": 1, **api.private_message(ALICE, "/help")}
        address = f"http://127.0.0.1:{port}/telegram"
        async with aiohttp.ClientSession() as http:
            async with http.post(
                address, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}
            ) as refused:
                assert refused.status == 401
            async with http.post(
                address, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret_token"}
            ) as accepted:
                assert accepted.status == 200
        answered = await api.wait_for("sendMessage", timeout=10)
        assert answered.params["text"] == words("kk", "help")
        assert len(api.calls("sendMessage")) == 1  # the refused call did nothing
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=20)
        await channel.close()
