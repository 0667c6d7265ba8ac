"""The staff group's side of the bot: a request's card, its buttons, the prompts, the commands.

:func:`router` is the parent: it hears the staff group only, answers a press by
anyone not on the staff list with an alert (nothing changes), and lets the
members' messages and presses through to one router per concern.
Configuration reaches the handlers as the dispatcher's data (``config``,
``service``, ``fulfilment``, ``clock``, ``renderer``), never through a closure.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import or_f
from aiogram.types import CallbackQuery

from bot.callbacks import DraftStep, KindMenu, KindPick, StaffAction
from bot.staff import approvals, buttons, drafts, kinds, queue
from bot.staff.filters import StaffGroup, StaffMember
from bot.texts import Texts


async def not_allowed(query: CallbackQuery, texts: Texts) -> None:
    """A staff button pressed by someone not on the staff list: an alert, nothing else."""
    await query.answer(texts("staff.not_allowed"), show_alert=True)


def router() -> Router:
    """The staff group's routers, made afresh (aiogram attaches a router to one parent only)."""
    group = Router(name=__name__)
    group.message.filter(StaffGroup())
    group.callback_query.filter(StaffGroup())
    staff_buttons = or_f(
        StaffAction.filter(), DraftStep.filter(), KindMenu.filter(), KindPick.filter()
    )
    group.callback_query.register(not_allowed, ~StaffMember(), staff_buttons)
    members = Router(name=__name__ + ".members")
    members.message.filter(StaffMember())
    members.callback_query.filter(StaffMember())
    # Replies to an approval's prompt come before the commands, the commands before the
    # replies to a reason's prompt (as ever); the card buttons' catch-all comes last.
    members.include_routers(
        approvals.router(), queue.router(), drafts.router(), kinds.router(), buttons.router()
    )
    group.include_router(members)
    return group
