"""The access report's parts and words: sections of labelled values, in the person's language.

A :class:`ReportSection` is a heading with paragraphs and values; :class:`Words`
makes them from the catalogue (``locales/*/LC_MESSAGES/access.po``) in one
language. Each value is kept complete (for the PDF and the JSON) and masked
(for a chat message or a staff card).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from babel.numbers import format_decimal

from workflows.directory.store import PurchaseRecord
from workflows.i18n import catalogue, format_date
from workflows.privacy.masking import mask_email, mask_iin, mask_phone, mask_text

JSONValue = str | bool | None
NONE = "—"
PURCHASES = "purchases"
# The policy's own words, in the order the report shows them; each is also a JSON key.
POLICY_SECTIONS = (
    "sources",
    "legal_basis",
    "purposes",
    "retention",
    "methods",
    "access",
    "processors",
    "storage_location",
)

_NUMBER_LOCALES = {"kk": "kk_KZ", "ru": "ru_RU", "en": "en_GB"}
_LABELS = {"telegram_user_id": "telegram", "telegram": "telegram"}


@dataclass(frozen=True)
class ReportItem:
    """One value of the report: ``value`` complete, ``masked`` what a chat message may show."""

    label: str
    value: str
    masked: str
    key: str = ""


@dataclass(frozen=True)
class ReportSection:
    """A heading with its values and/or paragraphs (one point of the policy each)."""

    title: str
    items: tuple[ReportItem, ...] = ()
    paragraphs: tuple[str, ...] = ()
    key: str = ""

    @property
    def bullets(self) -> bool:
        """The policy's points read as a list."""
        return self.key in POLICY_SECTIONS


def mask_birth_date(value: str | None) -> str:
    """``1995-03-14`` as ``19**-**-14``: the century and the day, not enough to find anyone."""
    if not value:
        return ""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return "****"
    return f"{value[:2]}**-**-{value[8:]}"


def mask_value(key: str, value: str) -> str:
    """``value`` of field ``key`` as a chat message may show it."""
    if value == NONE:
        return NONE
    if key == "phone":
        return mask_phone(value)
    if key == "email":
        return mask_email(value)
    if key == "iin":
        return mask_iin(value)
    if key == "birth_date":
        return mask_birth_date(value)
    if key == "full_name":
        return value
    # Anything else (a Telegram id, a contact of an unknown kind): mask what looks personal.
    return mask_text(value)


class Words:
    """The catalogue texts of one language, turned into report sections."""

    def __init__(self, language: str) -> None:
        self.language = language

    def text(self, msgid: str, **params: object) -> str:
        return catalogue().text(self.language, msgid, **params)

    def days(self, n: int) -> str:
        """``n`` calendar days as the language says it ("31 день", "2 дня", "5 дней")."""
        return catalogue().plural(self.language, "access.days", n)

    def title(self, key: str) -> str:
        return self.text(f"access.section.{key}")

    def label(self, key: str) -> str:
        msgid = f"access.field.{_LABELS.get(key, key)}"
        return self.text(msgid) if catalogue().has(msgid) else key

    def shown(self, key: str, value: JSONValue) -> str:
        if value is None or value == "":
            return NONE
        if key == "marketing_consent":
            return self.text(f"access.value.consent.{'yes' if value else 'no'}")
        text = str(value)
        if key == "gender" and catalogue().has(f"access.value.gender.{text}"):
            return self.text(f"access.value.gender.{text}")
        if key == "language" and catalogue().has(f"access.value.language.{text}"):
            return self.text(f"access.value.language.{text}")
        if key == "birth_date":
            return text  # ISO: unambiguous, and what the mask is made from
        if key == "registered_at":
            return format_date(self.language, datetime.fromisoformat(text).date())
        return text

    def item(self, key: str, value: JSONValue) -> ReportItem:
        shown = self.shown(key, value)
        return ReportItem(self.label(key), shown, mask_value(key, shown), key=key)

    def data_section(self, category: str, values: Mapping[str, JSONValue]) -> ReportSection:
        items = tuple(self.item(key, value) for key, value in values.items())
        return ReportSection(self.title(category), items=items, key=category)

    def purchases_section(self, purchases: tuple[PurchaseRecord, ...]) -> ReportSection:
        items = []
        for purchase in purchases:
            day = purchase.purchased_at.date() if purchase.purchased_at else None
            label = self.text(
                "access.purchase.label",
                date=self.date(day),
                purchase_id=purchase.purchase_id,
            )
            parts = [purchase.description or NONE]
            if purchase.amount is not None:
                parts.append(self._amount(purchase.amount))
            value = " — ".join(parts)
            items.append(ReportItem(label, value, value, key=purchase.purchase_id))
        count = self.text("access.purchases.count", count=len(purchases))
        return ReportSection(
            self.title(PURCHASES), items=tuple(items), paragraphs=(count,), key=PURCHASES
        )

    def policy_points(self, key: str) -> tuple[str, ...]:
        """The policy's points under ``key``, one a line."""
        text = self.text(f"access.policy.{key}")
        return tuple(line.strip() for line in text.splitlines() if line.strip())

    def date(self, day: date | None) -> str:
        return format_date(self.language, day) if day else NONE

    def _amount(self, amount: Decimal) -> str:
        return format_decimal(amount, format="#,##0.00", locale=_NUMBER_LOCALES[self.language])
