"""The staff's commands: /queue, /overdue, /find REFERENCE and /stats."""

from __future__ import annotations

import html

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.staff.renderer import OutboxRenderer
from bot.texts import Texts
from workflows.clock import Clock
from workflows.errors import RequestNotFound
from workflows.i18n import format_date, kind_name, status_name
from workflows.requests.service import RequestService
from workflows.requests.staff_view import queue_figures
from workflows.snapshots import RequestView

# Requests one listing shows; it names how many more there are.
LIST_LIMIT = 30


async def queue(message: Message, texts: Texts, service: RequestService) -> None:
    """/queue: the open requests."""
    views = await service.list_requests(open_only=True)
    await message.answer(_listing(views, texts, service, "staff.queue"))


async def overdue(message: Message, texts: Texts, service: RequestService) -> None:
    """/overdue: the open requests past their due day."""
    views = await service.list_requests(overdue=True)
    await message.answer(_listing(views, texts, service, "staff.overdue"))


async def find(
    message: Message, command: CommandObject, texts: Texts, renderer: OutboxRenderer
) -> None:
    """/find REFERENCE: the request's card, with its buttons."""
    reference = (command.args or "").strip().upper()
    if not reference:
        await message.answer(texts("staff.find.usage"))
        return
    try:
        card = await renderer.card(reference)
    except RequestNotFound:
        await message.answer(texts("staff.find.none", reference=html.escape(reference)))
        return
    await message.answer(card.text, reply_markup=card.reply_markup)


async def stats(message: Message, texts: Texts, service: RequestService, clock: Clock) -> None:
    """/stats: open, due this week, overdue, and the median days to close."""
    figures = queue_figures(await service.list_requests(), service.calendar, clock.now())
    median = (
        texts("staff.stats.days", n=f"{figures.median_days:.1f}")
        if figures.median_days is not None
        else texts("staff.stats.none")
    )
    await message.answer(
        texts(
            "staff.stats",
            open=figures.open,
            week=figures.due_this_week,
            overdue=figures.overdue,
            median=median,
        )
    )


def _listing(views: list[RequestView], texts: Texts, service: RequestService, prefix: str) -> str:
    if not views:
        return texts(prefix + ".empty")
    lines = [texts(prefix + ".title")]
    for view in views[:LIST_LIMIT]:
        due = (
            format_date(texts.language, service.calendar.local_date(view.due_at))
            if view.due_at
            else texts("staff.no_due")
        )
        lines.append(
            texts(
                "staff.queue.line",
                reference=view.reference,
                kind=html.escape(kind_name(texts.language, view.kind)),
                status=html.escape(status_name(texts.language, view.status, view.kind)),
                due=html.escape(due),
            )
        )
    if len(views) > LIST_LIMIT:
        lines.append(texts("staff.queue.more", n=len(views) - LIST_LIMIT))
    return "\n".join(lines)


def router() -> Router:
    """The commands' router."""
    commands = Router(name=__name__)
    commands.message.register(queue, Command("queue"))
    commands.message.register(overdue, Command("overdue"))
    commands.message.register(find, Command("find"))
    commands.message.register(stats, Command("stats"))
    return commands
