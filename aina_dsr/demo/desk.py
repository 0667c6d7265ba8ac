"""``aina-dsr demo``: the real desk, composed as ``aina-dsr run`` composes it, with no accounts.

The parts are the ones production runs (:func:`aina_dsr.runtime.build_components`:
the Telegram channel with its dialog and staff handlers, the mail channel with
its intake and sender, the outbox and the deadline scheduler, on the real
clock), on a throw-away SQLite database in a temporary directory with a
throw-away encryption key, both gone at exit. Three things stand in for the
outside world, all on 127.0.0.1:

- the Telegram Bot API (:mod:`aina_dsr.demo.botapi`), which the real aiogram
  Bot reaches over HTTP;
- the mail server (:mod:`aina_dsr.demo.mailroom`), plugged in at the mail
  channel's two ports;
- a person and two staff members, who act through the page
  (:mod:`aina_dsr.demo.page`).

The settings are the demo's own: no ``DSR_*`` variable and no ``.env`` is read,
so a deployment's configuration can neither leak into the demo nor be touched
by it. A few fictional customers are imported so that an access report has
something to show.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from aina_dsr.demo.botapi import BotAPI
from aina_dsr.demo.chats import Chats
from aina_dsr.demo.mailroom import Mailroom
from aina_dsr.demo.page import DemoPage
from aina_dsr.demo.telegram_types import TOKEN, Person
from aina_dsr.health import PartHealth
from aina_dsr.logs import log_handler
from aina_dsr.runtime import build_components, serve
from aina_dsr.settings import Settings
from aina_dsr.wiring import Core, open_core
from workflows.directory.csv_import import import_customers, import_purchases

log = logging.getLogger(__name__)

STAFF_CHAT_ID = -1001000000001
# The person in the chat: her phone is customer C-1001's in the demo's customer list.
CUSTOMER = Person(700001, first_name="Aigerim", last_name="Seitkali", username="aigerim_demo")
CUSTOMER_PHONE = "+77011234567"
STAFF = (Person(5001, first_name="Dana"), Person(5002, first_name="Arman"))
# The address a letter in the page is written from unless the person changes it.
DEFAULT_WRITER = "Aigerim Seitkali <aigerim.seitkali@example.kz>"


class DemoSettings(Settings):
    """The demo's settings: only what it passes, never the environment or ``.env``."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def demo_settings(workdir: Path, api_url: str) -> Settings:
    """A desk with both channels on the stand-ins, its database and key thrown away after."""
    # The mail server's settings are never used to connect: the demo plugs its own
    # mailbox and sender in at the channel's ports. They name loopback all the same.
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{workdir / 'demo.db'}",
        "encryption_key": Fernet.generate_key().decode(),
        "telegram_bot_token": TOKEN,
        "telegram_api_url": api_url,
        "staff_chat_id": STAFF_CHAT_ID,
        "staff_user_ids": frozenset(person.id for person in STAFF),
        "imap_host": "127.0.0.1",
        "imap_user": "desk",
        "imap_password": "demo",
        "imap_security": "none",
        "smtp_host": "127.0.0.1",
        "smtp_security": "none",
        "log_level": "WARNING",
    }
    return DemoSettings(**values)


async def seed(core: Core) -> None:
    """The demo's fictional customers and their purchases, in the desk's customer list."""
    data = resources.files("aina_dsr.demo") / "data"
    with resources.as_file(data / "customers.csv") as customers:
        await import_customers(core.sessions, core.vault, customers, now=datetime.now(UTC))
    with resources.as_file(data / "purchases.csv") as purchases:
        await import_purchases(core.sessions, core.vault, purchases)


def _say(url: str) -> None:
    print(f"AINA Privacy Desk demo: {url}  (Ctrl-C stops it)", flush=True)


def configure_logging(level: str) -> None:
    """Log lines on stderr, personal data masked, as ``aina-dsr run`` writes them."""
    logging.basicConfig(level=level, handlers=[log_handler(sys.stderr, "text")])


async def run_demo(
    *,
    port: int = 0,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], None] | None = None,
    install_signals: bool = True,
) -> int:
    """Run the demo until ``stop`` is set (or SIGINT/SIGTERM); ``announce`` gets the page's URL."""
    with tempfile.TemporaryDirectory(prefix="aina-dsr-demo-") as workdir:
        async with BotAPI() as api:
            settings = demo_settings(Path(workdir), api.base)
            async with open_core(settings) as core:
                await seed(core)
                return await _serve_desk(settings, core, api, port, stop, announce, install_signals)


async def _serve_desk(
    settings: Settings,
    core: Core,
    api: BotAPI,
    port: int,
    stop: asyncio.Event | None,
    announce: Callable[[str], None] | None,
    install_signals: bool,
) -> int:
    page = DemoPage(
        chats=Chats(
            api, customer=CUSTOMER, phone=CUSTOMER_PHONE, staff=STAFF, staff_chat_id=STAFF_CHAT_ID
        ),
        mailroom=Mailroom(str(settings.mail_from)),
        files=api,
        writer=DEFAULT_WRITER,
    )
    health = PartHealth()
    components = build_components(settings, core, health, mail_ports=page.mailroom.ports)
    await page.start(port=port)
    try:
        (announce or _say)(page.url)
        return await serve(components, health=health, stop=stop, install_signals=install_signals)
    finally:
        for component in components:
            close = getattr(component, "close", None)
            if close is not None:
                await close()
        await page.stop()
