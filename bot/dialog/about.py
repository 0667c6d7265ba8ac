"""/help and /privacy: what the desk does and how it treats personal data."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.texts import Texts


async def help_(message: Message, texts: Texts) -> None:
    await message.answer(texts("help"))


async def privacy(message: Message, texts: Texts) -> None:
    await message.answer(texts("privacy"))


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(help_, Command("help"))
    router.message.register(privacy, Command("privacy"))
    return router
