"""What the inline buttons carry: small typed payloads (aiogram CallbackData).

aiogram's filters refuse data that does not unpack into a class here (garbage,
an old format, a wrong type), so such a press reaches :func:`stray_buttons`.
"""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery

from bot.texts import Texts

log = logging.getLogger(__name__)


class KindChoice(CallbackData, prefix="kind"):
    kind: str


class EvidenceStep(CallbackData, prefix="ev"):
    action: str  # "skip" | "done"


class SummaryChoice(CallbackData, prefix="sum"):
    action: str  # "confirm" | "edit" | "cancel"


class NewCode(CallbackData, prefix="code"):
    reference: str


class CancelPick(CallbackData, prefix="cx"):
    reference: str
    confirm: bool = False
    keep: bool = False


class LanguageChoice(CallbackData, prefix="lang"):
    code: str


class StaffAction(CallbackData, prefix="st"):
    action: str  # take | approve | reject | ask | complete | evidence
    reference: str


class DraftStep(CallbackData, prefix="dr"):
    """Under staff's reason or question shown back: send it, edit it, or cancel it."""

    action: str  # send | edit | cancel
    reference: str


class KindMenu(CallbackData, prefix="km"):
    """Staff ask to change a request's kind: the bot offers the kinds."""

    reference: str


class KindPick(CallbackData, prefix="kp"):
    """Staff set a request's kind (``kind`` empty: they leave it as it is).

    ``menu``: pressed in the list of kinds the bot offered, not on the card.
    """

    reference: str
    kind: str = ""
    menu: bool = False


async def unknown(query: CallbackQuery, texts: Texts) -> None:
    log.info("a button nobody handles was pressed in chat %s", _chat_id(query))
    await query.answer(texts("limits.button_unknown"))


def stray_buttons() -> Router:
    """The last router: a press nobody understood (garbage, an old format, a forged or stale
    button, a button in the wrong chat) is answered, so its spinner stops, and changes nothing."""
    router = Router(name=__name__)
    router.callback_query.register(unknown)
    return router


def _chat_id(query: CallbackQuery) -> int | None:
    return query.message.chat.id if query.message is not None else None
