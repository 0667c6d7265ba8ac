"""What staff are told after a press or a reply on a card: the outcome, or why nothing changed."""

from __future__ import annotations

import html

from aiogram.types import CallbackQuery, User

from bot.config import BotConfig
from bot.texts import Texts
from workflows.errors import (
    AnswerNeeded,
    ConcurrentChange,
    DomainError,
    IllegalTransition,
    KindUndecided,
    NotAllowed,
    OwnRequest,
    RequestNotFound,
)
from workflows.fulfilment.failures import FulfilmentFailed
from workflows.i18n import status_name
from workflows.requests.service import RequestService
from workflows.requests.staff_view import waiting_for_approvals
from workflows.snapshots import Actor, RequestView

# Telegram shows at most 200 characters in a button's alert.
ALERT_LIMIT = 200


def actor(user: User) -> Actor:
    """The staff member behind a press or a reply, as the audit log names them."""
    return Actor.staff(user.id, user.full_name)


def alert(text: str) -> str:
    """``text`` (HTML) as a button's alert shows it: plain, within Telegram's limit."""
    text = html.unescape(text)
    return text if len(text) <= ALERT_LIMIT else text[: ALERT_LIMIT - 1] + "…"


def outcome(texts: Texts, view: RequestView) -> str:
    """What the action did: the request's new status, or the approvals still waited for."""
    if waiting_for_approvals(view):
        return texts(
            "staff.approval.recorded",
            reference=view.reference,
            names=html.escape(", ".join(view.approvals)),
        )
    status = status_name(texts.language, view.status, view.kind)
    return texts("staff.done", reference=view.reference, status=status)


async def refusal(
    exc: DomainError, texts: Texts, service: RequestService, reference: str, step: str
) -> str:
    """Why nothing changed, in the staff's words (the core's reasons name no personal data)."""
    if isinstance(exc, IllegalTransition):
        current = await service.get(reference)
        status = status_name(texts.language, current.status, current.kind)
        return texts("staff.illegal", status=status)
    if isinstance(exc, ConcurrentChange):
        return texts("staff.stale")
    if isinstance(exc, RequestNotFound):
        return texts("staff.find.none", reference=html.escape(reference))
    if isinstance(exc, KindUndecided):
        return texts("staff.kind.first")
    if isinstance(exc, OwnRequest):
        return texts("staff.approval.own")
    if isinstance(exc, NotAllowed) and step == "approve":
        return texts("staff.approval.twice")
    if isinstance(exc, AnswerNeeded):
        return texts("staff.answer.needed", reference=reference)
    if isinstance(exc, FulfilmentFailed):
        # Approved, not done: the group has the alert; Complete tries the work again.
        return texts("staff.work.not_done", reason=html.escape(str(exc)))
    return texts("staff.work.failed", reason=html.escape(str(exc)))


async def refused(
    query: CallbackQuery,
    exc: DomainError,
    texts: Texts,
    service: RequestService,
    reference: str,
    step: str,
) -> None:
    """Answer a press that changed nothing with why, as an alert."""
    reason = await refusal(exc, texts, service, reference, step)
    await query.answer(alert(reason), show_alert=True)


async def done(query: CallbackQuery, texts: Texts, config: BotConfig, view: RequestView) -> None:
    """Answer a press that changed the request; the outbox delivers the card and notices now."""
    config.outbox_wake.set()
    await query.answer(alert(outcome(texts, view)), show_alert=waiting_for_approvals(view))
