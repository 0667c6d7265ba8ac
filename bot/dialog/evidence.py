"""Supporting documents, for a kind that takes them: photos or files, then Done or Skip."""

from __future__ import annotations

import html
from typing import Any

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot.callbacks import EvidenceStep
from bot.config import BotConfig
from bot.dialog import keyboards
from bot.dialog.flow import ask_next
from bot.dialog.states import Dialog
from bot.texts import Texts
from workflows.requests.service import RequestService


async def evidence_file(
    message: Message, state: FSMContext, texts: Texts, config: BotConfig
) -> None:
    data = await state.get_data()
    files: list[dict[str, Any]] = list(data.get("evidence", []))
    if len(files) >= config.max_files:
        await message.answer(texts("evidence.limit", limit=config.max_files))
        return
    size, item = _described(message, len(files))
    if size > config.max_file_mb * 1024 * 1024:
        await message.answer(
            texts("evidence.too_big", limit=config.max_file_mb),
            reply_markup=keyboards.evidence(texts, done=bool(files)),
        )
        return
    files.append(item)
    await state.update_data(evidence=files)
    await message.answer(
        texts("evidence.received", name=html.escape(str(item["name"]))),
        reply_markup=keyboards.evidence(texts, done=True),
    )


def _described(message: Message, earlier: int) -> tuple[int, dict[str, Any]]:
    """A file's size and what the dialog keeps of it until filing (Telegram's id, name, type)."""
    if message.document is not None:
        return message.document.file_size or 0, {
            "file_id": message.document.file_id,
            "name": message.document.file_name or "document",
            "content_type": message.document.mime_type or "application/octet-stream",
        }
    assert message.photo
    photo = message.photo[-1]
    return photo.file_size or 0, {
        "file_id": photo.file_id,
        "name": f"photo-{earlier + 1}.jpg",
        "content_type": "image/jpeg",
    }


async def evidence_step(
    query: CallbackQuery, state: FSMContext, texts: Texts, service: RequestService
) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=None)
        await ask_next(query.message, state, texts, service)


async def evidence_expected(message: Message, state: FSMContext, texts: Texts) -> None:
    files = (await state.get_data()).get("evidence", [])
    # A sticker, a voice message, a video, a location...: say plainly what is taken.
    msgid = "ask.evidence" if message.text is not None else "limits.unsupported.file"
    await message.answer(texts(msgid), reply_markup=keyboards.evidence(texts, done=bool(files)))


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(evidence_file, StateFilter(Dialog.evidence), F.photo | F.document)
    router.callback_query.register(
        evidence_step, StateFilter(Dialog.evidence), EvidenceStep.filter()
    )
    router.message.register(evidence_expected, StateFilter(Dialog.evidence))
    return router
