"""The staff card of a request: its words (within one Telegram message) and its buttons."""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot import telegram_text
from bot.callbacks import KindMenu, KindPick, StaffAction
from bot.texts import Texts
from workflows.deadlines.calendar import WorkingCalendar
from workflows.i18n import format_date, kind_name, status_name
from workflows.kinds import CLASSIFIED_KINDS, KindSpec, RequestKind
from workflows.requests.classification import likely_kinds
from workflows.requests.staff_view import Left, days_left, kind_changeable
from workflows.requests.states import TRANSITIONS, Action, Status
from workflows.snapshots import RequestView

WORDS_LIMIT = 600
PREVIEW_LIMIT = 1500
NAME_LIMIT = 60
# The least a shortened card keeps of each of the person's fields (else they say nothing).
WORDS_FLOOR = 20

# Buttons in the order staff read them, with the state machine's action behind each.
BUTTONS: tuple[tuple[str, Action, str], ...] = (
    ("take", Action.TAKE, "staff.take"),
    ("approve", Action.APPROVE, "staff.approve"),
    ("ask", Action.ASK_INFO, "staff.ask"),
    ("reject", Action.REJECT, "staff.reject"),
    ("complete", Action.COMPLETE, "staff.complete"),
)
# An access request's card shows the report staff are about to approve.
PREVIEWED = frozenset({Status.VERIFIED.value, Status.IN_REVIEW.value, Status.AWAITING_INFO.value})
# What an unclassified request cannot have until staff pick its kind.
NEEDS_A_KIND = frozenset({"approve", "complete"})


def candidate_kinds(view: RequestView) -> tuple[RequestKind, ...]:
    """The kinds an unclassified request most likely is (every kind, when none was named)."""
    return likely_kinds(RequestKind.UNCLASSIFIED, view.candidates)


def shorten(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# What is left of a request's clock, in the card's words (``n``: the days).
LEFT_WORDS = {
    Left.CLOSED: "staff.left.closed",
    Left.OVERDUE: "staff.left.overdue",
    Left.TODAY: "staff.left.today",
    Left.WORKING: "staff.left.working",
    Left.CALENDAR: "staff.left.calendar",
}


def due_and_left(
    view: RequestView,
    calendar: WorkingCalendar,
    now: datetime,
    texts: Texts,
    kinds: Mapping[RequestKind, KindSpec],
) -> tuple[str, str]:
    """The due date and what is left of the clock, in the card's words."""
    left = days_left(view, calendar, now, kinds)
    if left.due is None:
        return texts("staff.no_due"), ""
    return format_date(texts.language, left.due), texts(LEFT_WORDS[left.left], n=left.days)


def card_text(
    view: RequestView,
    texts: Texts,
    calendar: WorkingCalendar,
    now: datetime,
    attachments: list[str],
    *,
    kinds: Mapping[RequestKind, KindSpec],
    approvals_needed: int | None = None,
    preview: str | None = None,
    filed_by_staff: bool = False,
    limit: int = telegram_text.TEXT_LIMIT,
) -> str:
    """The card's HTML, within Telegram's ``limit``.

    A card too long for one message keeps every line but cuts the person's
    words, the file names and the report preview alike (each cut marked "…"),
    as little as needed, and ends by naming the command that shows it all.
    """

    def render(words: int) -> str:
        return _card_text(
            view,
            texts,
            calendar,
            now,
            attachments,
            kinds=kinds,
            approvals_needed=approvals_needed,
            preview=preview,
            filed_by_staff=filed_by_staff,
            words_limit=words,
            preview_limit=PREVIEW_LIMIT * words // WORDS_LIMIT,
            name_limit=max(WORDS_FLOOR, NAME_LIMIT * words // WORDS_LIMIT),
        )

    full = render(WORDS_LIMIT)
    if telegram_text.fits(full, limit):
        return full
    pointer = "\n\n" + texts("staff.card.shortened", reference=view.reference)
    budget = limit - telegram_text.visible_length(pointer)
    # The longest cut that fits: the length only grows with the cut, so halving finds it.
    low, high, best = WORDS_FLOOR, WORDS_LIMIT - 1, None
    while low <= high:
        middle = (low + high) // 2
        text = render(middle)
        if telegram_text.fits(text, budget):
            best, low = text, middle + 1
        else:
            high = middle - 1
    if best is None:  # even the shortest cut is too long: the last lines go
        best = telegram_text.shorten(render(WORDS_FLOOR), budget)
    return best + pointer


def _card_text(
    view: RequestView,
    texts: Texts,
    calendar: WorkingCalendar,
    now: datetime,
    attachments: list[str],
    *,
    kinds: Mapping[RequestKind, KindSpec],
    approvals_needed: int | None,
    preview: str | None,
    filed_by_staff: bool,
    words_limit: int,
    preview_limit: int,
    name_limit: int,
) -> str:
    language = texts.language
    due, left = due_and_left(view, calendar, now, texts, kinds)
    verified = view.verified_by or "none"
    lines = [
        texts(
            "staff.card",
            reference=view.reference,
            kind=html.escape(kind_name(language, view.kind)),
            status=html.escape(status_name(language, view.status, view.kind)),
            channel=html.escape(texts("channel." + view.channel)),
            language=view.language,
            verified_by=html.escape(texts("verified_by." + verified)),
            matched=texts("staff.matched.yes" if view.customer_matched else "staff.matched.no"),
            received=html.escape(format_date(language, calendar.local_date(view.received_at))),
            due=html.escape(due),
            left=html.escape(left) if left else "—",
            assignee=html.escape(view.assignee_name or "")
            if view.assignee_name
            else texts("staff.assignee.none"),
        )
    ]
    if view.kind == RequestKind.UNCLASSIFIED.value and view.is_open:
        names = ", ".join(kind_name(language, kind.value) for kind in candidate_kinds(view))
        lines += ["", texts("staff.card.unclassified", kinds=html.escape(names))]
    words = [
        f"<i>{html.escape(name)}</i>: {html.escape(shorten(str(value), words_limit))}"
        for name, value in view.fields.items()
        if value not in (None, "")
    ]
    if words:
        lines += ["", texts("staff.card.words"), *words]
    if view.missing_fields:
        lines.append(texts("staff.card.missing", names=html.escape(", ".join(view.missing_fields))))
    if attachments:
        names = ", ".join(html.escape(shorten(name, name_limit)) for name in attachments[:10])
        lines.append(texts("staff.card.attachments", names=names))
    if view.approvals and view.is_open:
        lines.append(
            texts(
                "staff.card.approvals",
                names=html.escape(", ".join(view.approvals)),
                given=len(view.approvals),
                needed=approvals_needed or len(view.approvals) + 1,
            )
        )
    if filed_by_staff and view.is_open:
        lines.append(texts("staff.card.own"))
    if view.status == Status.COMPLETED.value and done_at_once(view):
        lines.append(texts("staff.card.at_once"))
    if preview:
        lines += ["", html.escape(shorten(preview, preview_limit))]
    return "\n".join(lines)


def done_at_once(view: RequestView) -> bool:
    """The desk approved it itself when the person was verified (leaving mailings)."""
    return any(e.action == "approve" and e.details.get("at_once") for e in view.events)


def needed_approvals(view: RequestView) -> int | None:
    """How many approvals the service asked for, as its last recorded approval says."""
    for event in reversed(view.events):
        if event.action == "approval" and event.details.get("needed"):
            return int(event.details["needed"])
    return None


def card_keyboard(view: RequestView, texts: Texts) -> InlineKeyboardMarkup | None:
    status = Status(view.status)
    unclassified = view.kind == RequestKind.UNCLASSIFIED.value
    row: list[InlineKeyboardButton] = []
    for action, transition, msgid in BUTTONS:
        if (status, transition) not in TRANSITIONS:
            continue
        if action == "take" and status is not Status.VERIFIED:
            continue  # taking over is possible, but the card keeps to what is useful
        if unclassified and action in NEEDS_A_KIND:
            continue
        row.append(
            InlineKeyboardButton(
                text=texts(msgid),
                callback_data=StaffAction(action=action, reference=view.reference).pack(),
            )
        )
    picks: list[InlineKeyboardButton] = []
    if kind_changeable(view):
        menu = KindMenu(reference=view.reference).pack()
        if unclassified:
            likely = candidate_kinds(view)
            picks = [
                InlineKeyboardButton(
                    # A button's text is plain, not HTML: nothing to escape.
                    text=texts("staff.kind.button", kind=kind_name(texts.language, k)),
                    callback_data=KindPick(reference=view.reference, kind=k.value).pack(),
                )
                for k in likely
            ]
            if len(likely) < len(CLASSIFIED_KINDS):
                row.append(InlineKeyboardButton(text=texts("staff.kind.other"), callback_data=menu))
        else:
            row.append(InlineKeyboardButton(text=texts("staff.change_kind"), callback_data=menu))
    if not row and not picks:
        return None
    # The likely kinds first, the choice staff are asked to make; two buttons a row.
    rows = [picks[i : i + 2] for i in range(0, len(picks), 2)]
    rows += [row[i : i + 2] for i in range(0, len(row), 2)]
    return InlineKeyboardMarkup(inline_keyboard=rows)
