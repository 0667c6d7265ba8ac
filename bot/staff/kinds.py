"""Staff set a request's kind from its card: a likely kind's button, or Change kind and a list.

An unclassified request's card carries its likely kinds as buttons; any open
request's card has "Change kind", which answers with the list of the other
kinds under the card. Either press goes through
:meth:`~workflows.requests.service.RequestService.change_kind`, which recomputes the
deadline, tells the person and queues the card's refresh; only
``DSR_STAFF_USER_IDS`` may press them.
"""

from __future__ import annotations

import html

from aiogram import F, Router
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.callbacks import KindMenu, KindPick
from bot.config import BotConfig
from bot.staff.answers import actor
from bot.texts import Texts
from workflows.errors import (
    ConcurrentChange,
    DomainError,
    IllegalTransition,
    NotAllowed,
    RequestNotFound,
)
from workflows.i18n import format_date, kind_name, status_name
from workflows.kinds import CLASSIFIED_KINDS, RequestKind
from workflows.requests.service import RequestService
from workflows.requests.staff_view import kind_changeable
from workflows.snapshots import RequestView


def kind_menu(view: RequestView, texts: Texts) -> InlineKeyboardMarkup:
    """Every kind the request could be made, two a row, and Cancel."""
    buttons = [
        InlineKeyboardButton(
            text=kind_name(texts.language, kind.value),
            callback_data=KindPick(reference=view.reference, kind=kind.value, menu=True).pack(),
        )
        for kind in CLASSIFIED_KINDS
        if kind.value != view.kind
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    cancel = KindPick(reference=view.reference, menu=True).pack()
    rows.append([InlineKeyboardButton(text=texts("staff.kind.cancel"), callback_data=cancel)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


async def offer_kinds(
    query: CallbackQuery,
    callback_data: KindMenu,
    texts: Texts,
    service: RequestService,
) -> None:
    """Change kind: the list of kinds, as a reply to the card."""
    reference = callback_data.reference
    try:
        view = await service.get(reference)
    except RequestNotFound:
        await query.answer(html.unescape(texts("staff.find.none", reference=reference)))
        return
    if not kind_changeable(view):
        refusal = texts("staff.illegal", status=status_name(texts.language, view.status, view.kind))
        await query.answer(html.unescape(refusal), show_alert=True)
        return
    await query.answer()
    if isinstance(query.message, Message):
        prompt = texts(
            "staff.kind.prompt",
            reference=view.reference,
            kind=html.escape(kind_name(texts.language, view.kind)),
        )
        await query.message.reply(prompt, reply_markup=kind_menu(view, texts))


async def kind_kept(query: CallbackQuery, callback_data: KindPick, texts: Texts) -> None:
    """Cancel in the list of kinds: the kind stays, and the list says so."""
    await query.answer()
    if callback_data.menu and isinstance(query.message, Message):
        await query.message.edit_text(texts("staff.kind.kept", reference=callback_data.reference))


async def kind_picked(
    query: CallbackQuery,
    callback_data: KindPick,
    texts: Texts,
    service: RequestService,
    config: BotConfig,
) -> None:
    """A kind pressed on the card or in the list: set it."""
    reference = callback_data.reference
    try:
        kind = RequestKind(callback_data.kind)
    except ValueError:
        await query.answer(texts("limits.button_unknown"))
        return
    try:
        view = await service.change_kind(reference, actor(query.from_user), kind)
    except DomainError as exc:
        refusal = await _refusal(exc, texts, service, reference, kind)
        await query.answer(html.unescape(refusal), show_alert=True)
        return
    config.outbox_wake.set()
    outcome = _changed(texts, service, view)
    if callback_data.menu and isinstance(query.message, Message):
        await query.answer()
        await query.message.edit_text(outcome)
    else:
        await query.answer(html.unescape(outcome))


def _changed(texts: Texts, service: RequestService, view: RequestView) -> str:
    kind = html.escape(kind_name(texts.language, view.kind))
    if view.due_at is None:
        return texts("staff.kind.changed.no_due", reference=view.reference, kind=kind)
    due = format_date(texts.language, service.calendar.local_date(view.due_at))
    return texts("staff.kind.changed", reference=view.reference, kind=kind, due=html.escape(due))


async def _refusal(
    exc: DomainError, texts: Texts, service: RequestService, reference: str, kind: RequestKind
) -> str:
    """Why the kind did not change, in the staff's words (never a core message's English)."""
    if isinstance(exc, RequestNotFound):
        return texts("staff.find.none", reference=html.escape(reference))
    if isinstance(exc, ConcurrentChange):
        return texts("staff.stale")
    current = await service.get(reference)
    if isinstance(exc, IllegalTransition):
        return texts(
            "staff.illegal", status=status_name(texts.language, current.status, current.kind)
        )
    if isinstance(exc, NotAllowed) and current.kind == kind.value:
        return texts("staff.kind.same")
    return texts("staff.work.failed", reason=html.escape(str(exc)))


def router() -> Router:
    """The kind buttons' router: Change kind, a kind picked, and Cancel in the list."""
    kinds = Router(name=__name__)
    kinds.callback_query.register(offer_kinds, KindMenu.filter())
    kinds.callback_query.register(kind_kept, KindPick.filter(F.kind == ""))
    kinds.callback_query.register(kind_picked, KindPick.filter())
    return kinds
