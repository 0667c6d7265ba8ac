"""The buttons the customer dialog shows, in the person's language."""

from __future__ import annotations

import html

from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
)

from bot.callbacks import (
    CancelPick,
    EvidenceStep,
    KindChoice,
    LanguageChoice,
    NewCode,
    SummaryChoice,
)
from bot.texts import Texts
from workflows.i18n import LANGUAGES, kind_hint, kind_name
from workflows.kinds import CLASSIFIED_KINDS
from workflows.snapshots import RequestView

LANGUAGE_NAMES = {"kk": "Қазақша", "ru": "Русский", "en": "English"}


def kinds_menu(texts: Texts) -> tuple[str, InlineKeyboardMarkup]:
    """The kinds a person can ask for, each with its one-line hint, and a button each."""
    lines = [texts("start.choose"), ""]
    buttons = []
    for kind in CLASSIFIED_KINDS:
        name = kind_name(texts.language, kind.value)
        lines.append(
            f"• <b>{html.escape(name)}</b> — {html.escape(kind_hint(texts.language, kind.value))}"
        )
        buttons.append(
            [InlineKeyboardButton(text=name, callback_data=KindChoice(kind=kind.value).pack())]
        )
    return "\n".join(lines), InlineKeyboardMarkup(inline_keyboard=buttons)


def languages() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=LANGUAGE_NAMES[code], callback_data=LanguageChoice(code=code).pack()
                )
                for code in LANGUAGES
            ]
        ]
    )


def cancellable(views: list[RequestView]) -> InlineKeyboardMarkup:
    """One button per open request (at most twenty) to cancel it."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=view.reference,
                    callback_data=CancelPick(reference=view.reference).pack(),
                )
            ]
            for view in views[:20]
        ]
    )


def cancel_or_keep(texts: Texts, reference: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts("cancel.yes"),
                    callback_data=CancelPick(reference=reference, confirm=True).pack(),
                ),
                InlineKeyboardButton(
                    text=texts("cancel.no"),
                    callback_data=CancelPick(reference=reference, keep=True).pack(),
                ),
            ]
        ]
    )


def contact(texts: Texts) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=texts("identity.button"), request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


def evidence(texts: Texts, done: bool) -> InlineKeyboardMarkup:
    action = "done" if done else "skip"
    label = texts("evidence.done") if done else texts("evidence.skip")
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=label, callback_data=EvidenceStep(action=action).pack())]
        ]
    )


def summary(texts: Texts) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts("summary.confirm"),
                    callback_data=SummaryChoice(action="confirm").pack(),
                )
            ],
            [
                InlineKeyboardButton(
                    text=texts("summary.edit"), callback_data=SummaryChoice(action="edit").pack()
                ),
                InlineKeyboardButton(
                    text=texts("summary.cancel"),
                    callback_data=SummaryChoice(action="cancel").pack(),
                ),
            ],
        ]
    )


def new_code(texts: Texts, reference: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts("code.resend"), callback_data=NewCode(reference=reference).pack()
                )
            ]
        ]
    )
