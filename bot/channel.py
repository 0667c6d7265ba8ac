"""The Telegram channel as one long-running part: updates in, the outbox out.

Polling by default; with a webhook URL, an aiohttp server takes the updates
(the secret token checked), so several replicas can run behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.fsm.storage.base import BaseEventIsolation, BaseStorage
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import BotCommandScopeChat
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import dialog, staff
from bot.callbacks import stray_buttons
from bot.commands import command_menus, staff_menu
from bot.config import BotConfig
from bot.delivery import RateLimits, TelegramPort
from bot.failures import update_failed
from bot.language import LanguageMiddleware
from bot.reachability import ReachableAgain
from bot.staff.post import PostPort
from bot.staff.renderer import OutboxRenderer
from bot.storage import forget_unsealed_dialogs
from bot.throttle import ChatThrottle
from bot.update_cache import FlushBeforeSending, UpdateCacheMiddleware
from workflows.clock import Clock
from workflows.directory.sql_directory import SqlDirectory
from workflows.fulfilment.work import Fulfilment
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.holds import NoticeHolds
from workflows.outbox.owners import ClaimOwners
from workflows.outbox.queue import OutboundPort
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.running import wait_or_stop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/telegram"


class PinResponseTypes(BaseRequestMiddleware):
    """Keeps aiogram's ``Response[...]`` model of each method alive once made.

    aiogram validates every Bot API answer with ``Response[method.__returning__]``,
    a pydantic generic model, and pydantic caches those only weakly: a garbage
    collection drops them and the next answer builds the model again (about
    7 ms of schema building each time, several times a second under load).
    Holding one reference per method keeps them built.
    """

    def __init__(self) -> None:
        self._pinned: dict[type[Any], Any] = {}

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        kind = type(method)
        if kind not in self._pinned:
            self._pinned[kind] = Response[method.__returning__]  # type: ignore[name-defined]
        return await make_request(bot, method)


class PlainHttpSession(AiohttpSession):
    """The session to a Bot API server reached over plain HTTP (a local one).

    aiogram's ``close`` waits 250 ms for TLS connections to close; over plain HTTP
    there are none, and the desk (and every test that stops one) stops that much sooner.
    """

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def make_bot(token: str, api_url: str | None) -> Bot:
    session: AiohttpSession | None = None
    if api_url:
        kind = PlainHttpSession if api_url.startswith("http://") else AiohttpSession
        session = kind(api=TelegramAPIServer.from_base(api_url))
    return Bot(token, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def build_dispatcher(
    config: BotConfig,
    service: RequestService,
    clock: Clock,
    storage: BaseStorage,
    events_isolation: BaseEventIsolation,
    fulfilment: Fulfilment,
    holds: NoticeHolds | None = None,
) -> Dispatcher:
    dispatcher = Dispatcher(
        storage=storage,
        events_isolation=events_isolation,
        service=service,
        config=config,
        clock=clock,
        fulfilment=fulfilment,
    )
    # The person's notices an update files wait for its dialog writes, then go by ``holds``.
    dispatcher.update.outer_middleware(UpdateCacheMiddleware(holds))
    dispatcher.update.outer_middleware(LanguageMiddleware(config))
    dispatcher.update.outer_middleware(ReachableAgain())
    # After the language, so the one answer to a chat over its limit is in its words.
    dispatcher.update.outer_middleware(ChatThrottle(config, clock))
    if config.staff_chat_id is not None:
        dispatcher["renderer"] = OutboxRenderer(service, config, clock, fulfilment)
        dispatcher.include_router(staff.router())
    dispatcher.include_router(dialog.setup())
    dispatcher.include_router(stray_buttons())
    # A failed update is answered ("send it again"), never dropped in silence.
    dispatcher.errors.register(update_failed)
    return dispatcher


class TelegramChannel:
    """The bot and its outbox loop; ``run`` returns when ``stop`` is set."""

    name = "telegram"

    def __init__(
        self,
        *,
        bot: Bot,
        config: BotConfig,
        service: RequestService,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        storage: BaseStorage,
        events_isolation: BaseEventIsolation,
        fulfilment: Fulfilment | None = None,
        extra_ports: tuple[OutboundPort, ...] = (),
        webhook: Webhook | None = None,
        limits: RateLimits | None = None,
        outbox_interval: float = 1.0,
        claim_owners: ClaimOwners | None = None,
    ) -> None:
        self.bot = bot
        # An update's dialog state is committed before the reply it belongs to goes out.
        if not any(isinstance(m, FlushBeforeSending) for m in bot.session.middleware[:]):
            bot.session.middleware(FlushBeforeSending())
            bot.session.middleware(PinResponseTypes())
        self.config = config
        self.service = service
        # The desk's own SQL directory unless a company plugs in its CRM.
        fulfilment = fulfilment or Fulfilment(
            service, SqlDirectory(sessions, vault, clock), clock, info=config.info
        )
        # A request of a kind done at once (leaving mailings) is done when verified here.
        fulfilment.act_at_once()
        self.renderer = OutboxRenderer(service, config, clock, fulfilment)
        self.port = TelegramPort(
            bot,
            self.renderer,
            staff_chat_id=config.staff_chat_id,
            sessions=sessions,
            clock=clock,
            limits=limits or RateLimits(),
            storage=storage,
        )
        # Letters to post go to the staff group through the same port (bot.staff.post).
        every: tuple[OutboundPort, ...] = (self.port, PostPort(self.port), *extra_ports)
        ports = {port.channel: port for port in every}
        # What an update files for the person is held until its dialog writes commit,
        # then released to this process's dispatcher, woken as any change wakes it.
        self.holds = NoticeHolds(ports, wake=lambda: config.outbox_wake.set())
        # The process's owners of outbox claims, shared with its other dispatchers.
        self.outbox = OutboxDispatcher(
            sessions, vault, clock, ports, owners=claim_owners, holds=self.holds
        )
        self.dispatcher = build_dispatcher(
            config, service, clock, storage, events_isolation, fulfilment, self.holds
        )
        self._storage = storage
        self._isolation = events_isolation
        self._webhook = webhook
        self._interval = outbox_interval

    async def deliver_outbox(self, stop: asyncio.Event) -> None:
        """Delivers due outbox rows now, and again whenever woken or every interval."""
        try:
            await self._deliver_until(stop)
        finally:
            await self.outbox.close()  # what it still claims is free for others at once

    async def _deliver_until(self, stop: asyncio.Event) -> None:
        wake = self.config.outbox_wake
        while not stop.is_set():
            wake.clear()
            try:
                while await self.outbox.run_once():
                    if stop.is_set():
                        return
            except Exception:
                log.exception("outbox delivery failed; trying again shortly")
            await wait_or_stop(stop, self._interval, wake=wake)

    async def _commands(self) -> None:
        """The command menu, one list per language (a failure only costs the menu)."""
        for code, commands in command_menus(self.config.info):
            try:
                await self.bot.set_my_commands(commands, language_code=code)
            except Exception:
                log.warning("could not set the command menu for %s", code or "the default")
        if self.config.staff_chat_id is None:
            return
        scope = BotCommandScopeChat(chat_id=self.config.staff_chat_id)
        try:
            await self.bot.set_my_commands(
                staff_menu(self.config.info, self.config.staff_language), scope=scope
            )
        except Exception:
            log.warning("could not set the staff group's command menu")

    async def run(self, stop: asyncio.Event) -> None:
        await forget_unsealed_dialogs(self._storage)
        await self._commands()
        outbox = asyncio.create_task(self.deliver_outbox(stop), name="telegram-outbox")
        try:
            if self._webhook is None:
                await self._poll(stop)
            else:
                await self._serve_webhook(stop, self._webhook)
        finally:
            stop.set()
            await outbox
            # The session is made again on the next call, should the process start us again.
            await self.bot.session.close()

    async def close(self) -> None:
        """Let go of the dialog storage and the isolation locks (Redis connections)."""
        await self._isolation.close()
        await self._storage.close()

    async def _poll(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(Exception):
            await self.bot.delete_webhook(drop_pending_updates=False)
        polling = asyncio.create_task(
            self.dispatcher.start_polling(
                self.bot, handle_signals=False, close_bot_session=False, polling_timeout=10
            ),
            name="telegram-polling",
        )
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({polling, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not polling.done():
                with contextlib.suppress(RuntimeError):
                    await self.dispatcher.stop_polling()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(polling, timeout=15)
            stopper.cancel()
        if polling.done() and not polling.cancelled() and polling.exception() is not None:
            raise polling.exception()  # type: ignore[misc]

    async def _serve_webhook(self, stop: asyncio.Event, webhook: Webhook) -> None:
        app = web.Application()
        # Answer Telegram only after the update is handled: if the process dies
        # mid-way, Telegram sends the update again instead of it being lost.
        SimpleRequestHandler(
            dispatcher=self.dispatcher,
            bot=self.bot,
            secret_token=webhook.secret,
            handle_in_background=False,
        ).register(app, path=webhook.path)
        setup_application(app, self.dispatcher, bot=self.bot)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, webhook.host, webhook.port)
        await site.start()
        try:
            await self.bot.set_webhook(
                webhook.url, secret_token=webhook.secret, drop_pending_updates=False
            )
            await stop.wait()
        finally:
            await runner.cleanup()
