"""Outside any dialog: words or a file answer a request waiting for information, else a hint.

The last of the dialog's routers: only what no step above takes gets here.
"""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import StateFilter
from aiogram.types import Message

from bot.config import BotConfig
from bot.dialog.files import download_one, file_size
from bot.texts import Texts
from workflows.requests.dialog_rules import awaiting_reply
from workflows.requests.service import RequestService
from workflows.snapshots import Actor


async def outside(
    message: Message, texts: Texts, service: RequestService, bot: Bot, config: BotConfig
) -> None:
    assert message.from_user is not None
    views = await service.list_requests(telegram_user_id=message.from_user.id, open_only=True)
    target = awaiting_reply(views)
    if target is None:
        await message.answer(texts("fallback"))
        return
    text = (message.text or message.caption or "").strip()
    if len(text) > config.max_text:
        await message.answer(texts("too_long", limit=config.max_text))
        return
    limit_bytes = config.max_file_mb * 1024 * 1024
    if file_size(message) > limit_bytes:
        # Nothing is added: a reply without its file would read as complete.
        await message.answer(texts("limits.file_too_big", limit=config.max_file_mb))
        return
    evidence = await download_one(bot, message, limit_bytes)
    await service.attach(
        target.reference,
        Actor.person_telegram(message.from_user.id),
        body=text or None,
        external_id=f"tg:{message.chat.id}:{message.message_id}",
        evidence=evidence,
    )
    config.outbox_wake.set()
    await message.answer(texts("reply.added", reference=target.reference))


async def anything_else(message: Message, texts: Texts) -> None:
    # Only what the handlers above do not take gets here: stickers, voice, video, places.
    await message.answer(texts("limits.unsupported" if message.text is None else "fallback"))


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(outside, StateFilter(None), F.text | F.photo | F.document)
    router.message.register(anything_else)
    return router
