"""/help and /privacy: what the desk does and how it treats personal data.

/privacy lists every right the policy grants (sections 2 and 6 to 10), each
with the button that uses it here and how soon the desk answers, read from the
kinds table; then where else the person may turn (the authorised body as the
settings name it, the local akimat, the courts).
"""

from __future__ import annotations

import html

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.texts import Texts
from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.i18n import kind_name
from workflows.kinds import ClockStart, KindSpec, RequestKind
from workflows.requests.service import RequestService

# The rights in the policy's order: knowing, correcting, blocking, destroying
# (section 6, 8), consent (section 8), the account (section 2), mailings (section 6),
# questions and complaints (section 7).
RIGHTS = (
    RequestKind.ACCESS,
    RequestKind.RECTIFY,
    RequestKind.BLOCK,
    RequestKind.DESTROY_UNLAWFUL,
    RequestKind.WITHDRAW_CONSENT,
    RequestKind.DELETE_ACCOUNT,
    RequestKind.UNSUBSCRIBE,
    RequestKind.COMPLAINT,
)


def answer_time(texts: Texts, spec: KindSpec, clock: Clock, calendar: WorkingCalendar) -> str:
    """How soon a request of ``spec``'s kind filed now is answered: the clock that runs out
    first (the law's or the policy's), and from what it counts."""
    running = spec.running_clock(clock.now(), calendar)
    days = texts.plural(f"privacy.days.{running.unit.value}", running.length)
    if spec.starts is ClockStart.CONFIRMATION:
        return texts("privacy.when.confirmation", days=days)
    return days


def rights(texts: Texts, service: RequestService, clock: Clock) -> str:
    """One line per right: what it is, its button's name, and the answer time."""
    lines = []
    for kind in RIGHTS:
        spec = service.kinds[kind]
        name = html.escape(kind_name(texts.language, kind.value))
        if spec.at_once:  # done as soon as the person is verified: no clock to name
            lines.append(texts(f"privacy.right.{kind.value}.at_once", kind=name))
            continue
        when = answer_time(texts, spec, clock, service.calendar)
        lines.append(texts(f"privacy.right.{kind.value}", kind=name, when=when))
    return "\n".join(lines)


async def help_(message: Message, texts: Texts) -> None:
    await message.answer(texts("help"))


async def privacy(message: Message, texts: Texts, service: RequestService, clock: Clock) -> None:
    await message.answer(texts("privacy", rights=rights(texts, service, clock)))


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(help_, Command("help"))
    router.message.register(privacy, Command("privacy"))
    return router
