"""The person's files fetched from Telegram, as the request service takes them (Evidence)."""

from __future__ import annotations

from aiogram import Bot
from aiogram.types import Message

from workflows.requests.records import Evidence


async def download(bot: Bot, file_id: str, name: str, content_type: str) -> Evidence:
    file = await bot.get_file(file_id)
    assert file.file_path is not None
    buffer = await bot.download_file(file.file_path)
    assert buffer is not None
    return Evidence(name, content_type, buffer.read())


def file_size(message: Message) -> int:
    """The size Telegram gives of a message's document or largest photo; 0 without a file."""
    if message.document is not None:
        return message.document.file_size or 0
    if message.photo:
        return message.photo[-1].file_size or 0
    return 0


async def download_one(bot: Bot, message: Message, limit_bytes: int) -> list[Evidence]:
    """The message's document or largest photo, if it has one within ``limit_bytes``."""
    if message.document is not None and (message.document.file_size or 0) <= limit_bytes:
        document = message.document
        return [
            await download(
                bot,
                document.file_id,
                document.file_name or "document",
                document.mime_type or "application/octet-stream",
            )
        ]
    if message.photo and (message.photo[-1].file_size or 0) <= limit_bytes:
        return [await download(bot, message.photo[-1].file_id, "photo.jpg", "image/jpeg")]
    return []
