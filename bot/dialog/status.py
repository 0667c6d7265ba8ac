"""/status: the person's requests, each with its kind, status and due date."""

from __future__ import annotations

import html

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.texts import Texts
from workflows.i18n import format_date, kind_name, status_name
from workflows.requests.service import RequestService
from workflows.snapshots import RequestView

# The latest requests listed; older ones are left out.
SHOWN = 20


async def status(message: Message, texts: Texts, service: RequestService, language: str) -> None:
    assert message.from_user is not None
    views = await service.list_requests(telegram_user_id=message.from_user.id)
    if not views:
        await message.answer(texts("status.none"))
        return
    lines = [texts("status.title")]
    for view in views[-SHOWN:]:
        lines.append(
            texts(
                "status.line",
                reference=view.reference,
                kind=html.escape(kind_name(language, view.kind)),
                status=html.escape(status_name(language, view.status, view.kind)),
                due=_due(view, texts, service),
            )
        )
    await message.answer("\n".join(lines))


def _due(view: RequestView, texts: Texts, service: RequestService) -> str:
    if view.due_at is None:
        return texts("status.no_due")
    return html.escape(format_date(texts.language, service.calendar.local_date(view.due_at)))


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(status, Command("status"))
    return router
