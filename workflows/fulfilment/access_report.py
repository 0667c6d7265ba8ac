"""The answer to an ``access`` request: what the policy (section 6) promises to tell.

:func:`build_access_report` reads a customer from the directory and returns an
:class:`AccessReport` in the person's language: whether we process their data,
the data by category, and the policy's words on its sources, legal basis,
purposes, retention and methods of processing, who may access it and where,
the processors, and where it is stored. The report renders four ways: a PDF
and a JSON file with complete values (the attachments), a short chat message
and a staff-card preview, both masked, since a chat is not where an IIN is
shown in full.

The policy texts are catalogue messages (``locales/*/LC_MESSAGES/access.po``),
one line per point, so a lawyer changes them without touching code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from babel.numbers import format_decimal

from workflows.deadlines.calendar import DEFAULT_TIMEZONE
from workflows.directory.store import CustomerRecord, PurchaseRecord
from workflows.i18n import DEFAULT_MAIL_ADDRESS, catalogue, format_date, pick_language
from workflows.privacy.masking import mask_email, mask_iin, mask_phone, mask_text

JSONValue = str | bool | None

# The data sections, in the order the report shows them.
DATA_CATEGORIES = ("identity", "contacts", "account")
PURCHASES = "purchases"
REQUEST_CONTACTS = "request"
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
PROCESSING = "processing"
CONTROLLER = "controller"

_NUMBER_LOCALES = {"kk": "kk_KZ", "ru": "ru_RU", "en": "en_GB"}
_NONE = "—"
_CONTACT_LABELS = {"telegram_user_id": "telegram", "telegram": "telegram"}


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


@dataclass(frozen=True)
class AccessReport:
    """What the person receives on an approved ``access`` request, ready to render."""

    reference: str
    language: str
    generated_at: datetime
    processes_data: bool
    sections: tuple[ReportSection, ...]
    customer_found: bool = False
    # Complete values for the JSON file, machine-readable: {category: {field: value}}.
    data: Mapping[str, Mapping[str, JSONValue]] = field(default_factory=dict, hash=False)
    purchases: tuple[PurchaseRecord, ...] = ()

    def section(self, key: str) -> ReportSection | None:
        """The section with ``key``, if the report has it."""
        return next((s for s in self.sections if s.key == key), None)

    def text(self, msgid: str, **params: object) -> str:
        """``msgid`` in the report's language."""
        return catalogue().text(self.language, msgid, **params)

    def as_json(self) -> bytes:
        """The same data, machine-readable, complete values (UTF-8, not ASCII-escaped)."""
        policy = {
            key: list(section.paragraphs) if (section := self.section(key)) else []
            for key in POLICY_SECTIONS
        }
        document: dict[str, Any] = {
            "reference": self.reference,
            "language": self.language,
            "generated_at": self.generated_at.isoformat(),
            "controller": _controller(self.language),
            "processes_data": self.processes_data,
            "customer_found": self.customer_found,
            "data": {category: dict(values) for category, values in self.data.items()},
            "purchases": [_purchase_json(p) for p in self.purchases],
            **policy,
        }
        return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")

    def as_pdf(self) -> bytes:
        """The report as a PDF document with complete values; its metadata names no person."""
        # fpdf2 takes a third of a second to import: only the work of an access request loads it.
        from workflows.fulfilment.report_pdf import render_pdf

        return render_pdf(self)

    def summary(self) -> str:
        """A short message for the person, in their language, with sensitive values masked."""
        lines = [self.text("access.summary.title", reference=self.reference), ""]
        processing = self.section(PROCESSING)
        lines.extend(processing.paragraphs if processing else ())
        for section in self._data_sections():
            if section.key == PURCHASES:
                lines.append(section.paragraphs[0])
                continue
            lines.extend(f"{item.label}: {item.masked}" for item in section.items)
        lines += ["", self.text("access.summary.files")]
        return "\n".join(lines).strip()

    def preview(self) -> str:
        """A few masked lines for the staff card, in the report's language."""
        lines = [self.text("access.preview.title", reference=self.reference)]
        if self.customer_found:
            customer_id = self.data.get("account", {}).get("customer_id") or _NONE
            lines.append(self.text("access.preview.found", customer_id=customer_id))
        else:
            lines.append(self.text("access.preview.not_found"))
        for section in self._data_sections():
            if section.key == PURCHASES:
                lines.append(section.paragraphs[0])
                continue
            shown = [item.masked for item in section.items if item.masked != _NONE]
            if shown:
                lines.append(f"{section.title}: {' · '.join(shown)}")
        lines.append(self.text("access.preview.files"))
        return "\n".join(lines)

    def _data_sections(self) -> Iterator[ReportSection]:
        data_keys = {*DATA_CATEGORIES, PURCHASES, REQUEST_CONTACTS}
        return (s for s in self.sections if s.key in data_keys)


def build_access_report(
    customer: CustomerRecord | None,
    *,
    reference: str,
    language: str,
    now: datetime,
    timezone: str = DEFAULT_TIMEZONE,
    subject_contacts: Mapping[str, str] | None = None,
) -> AccessReport:
    """The access report for ``customer`` (``None``: no customer account was found).

    ``subject_contacts`` are the contacts the person gave with the request
    (``phone``, ``email``, ``telegram_user_id``; another key is shown as it
    is); without a customer account they are what we hold, and the report
    says so. Times are shown as local dates in ``timezone``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tz = ZoneInfo(timezone)
    lang = pick_language(language)
    words = _Words(lang)
    contacts = {k: v for k, v in (subject_contacts or {}).items() if v}

    data: dict[str, dict[str, JSONValue]] = {}
    sections: list[ReportSection] = []
    # The sources section first says where the data shown above came from.
    sources_lead: str | None = None
    purchases: tuple[PurchaseRecord, ...] = ()
    company = catalogue().text(lang, "context.company")
    if customer is not None:
        processes = True
        processing = words.text("access.processing.yes", company=company)
        data = _customer_data(customer, tz)
        sections = [words.data_section(category, data[category]) for category in DATA_CATEGORIES]
        purchases = tuple(_local_purchase(p, tz) for p in customer.purchases)
        sections.append(words.purchases_section(purchases))
        sources_lead = "access.sources.directory"
    elif contacts:
        processes = True
        processing = words.text("access.processing.request_only", company=company)
        data = {REQUEST_CONTACTS: dict(contacts)}
        sections = [words.data_section(REQUEST_CONTACTS, data[REQUEST_CONTACTS])]
        sources_lead = "access.sources.request"
    else:
        processes = False
        processing = words.text("access.processing.none", company=company)

    head = ReportSection(words.title(PROCESSING), paragraphs=(processing,), key=PROCESSING)
    tail = [
        words.policy_section(key, lead=sources_lead if key == "sources" else None)
        for key in POLICY_SECTIONS
    ]
    tail.append(words.controller_section())
    return AccessReport(
        reference=reference,
        language=lang,
        generated_at=now.astimezone(tz),
        processes_data=processes,
        sections=(head, *sections, *tail),
        customer_found=customer is not None,
        data=data,
        purchases=purchases,
    )


# -- data ---------------------------------------------------------------------------


def _customer_data(customer: CustomerRecord, tz: ZoneInfo) -> dict[str, dict[str, JSONValue]]:
    registered = customer.registered_at.astimezone(tz) if customer.registered_at else None
    return {
        "identity": {
            "full_name": customer.full_name,
            "iin": customer.iin,
            "gender": customer.gender,
            "birth_date": customer.birth_date.isoformat() if customer.birth_date else None,
        },
        "contacts": {"phone": customer.phone, "email": customer.email},
        "account": {
            "customer_id": customer.id,
            "language": customer.language,
            "marketing_consent": customer.marketing_consent,
            "registered_at": registered.isoformat() if registered else None,
        },
    }


def _local_purchase(purchase: PurchaseRecord, tz: ZoneInfo) -> PurchaseRecord:
    bought = purchase.purchased_at.astimezone(tz) if purchase.purchased_at else None
    return PurchaseRecord(purchase.purchase_id, bought, purchase.description, purchase.amount)


def _purchase_json(purchase: PurchaseRecord) -> dict[str, JSONValue]:
    return {
        "purchase_id": purchase.purchase_id,
        "purchased_at": purchase.purchased_at.isoformat() if purchase.purchased_at else None,
        "description": purchase.description,
        # A string keeps the amount exact (no binary float).
        "amount": str(purchase.amount) if purchase.amount is not None else None,
    }


def _controller(language: str) -> dict[str, str]:
    return {
        "name": catalogue().text(language, "context.company"),
        "email": DEFAULT_MAIL_ADDRESS,
        "postal_address": catalogue().text(language, "access.controller.address"),
    }


def mask_birth_date(value: str | None) -> str:
    """``1995-03-14`` as ``19**-**-14``: the century and the day, not enough to find anyone."""
    if not value:
        return ""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return "****"
    return f"{value[:2]}**-**-{value[8:]}"


def _mask(key: str, value: str) -> str:
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


class _Words:
    """The catalogue texts of one language, turned into report sections."""

    def __init__(self, language: str) -> None:
        self.language = language

    def text(self, msgid: str, **params: object) -> str:
        return catalogue().text(self.language, msgid, **params)

    def title(self, key: str) -> str:
        return self.text(f"access.section.{key}")

    def _label(self, key: str) -> str:
        msgid = f"access.field.{_CONTACT_LABELS.get(key, key)}"
        return self.text(msgid) if catalogue().has(msgid) else key

    def _shown(self, key: str, value: JSONValue) -> str:
        if value is None or value == "":
            return _NONE
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

    def data_section(self, category: str, values: Mapping[str, JSONValue]) -> ReportSection:
        items = []
        for key, value in values.items():
            shown = self._shown(key, value)
            masked = _mask(key, shown) if shown != _NONE else _NONE
            items.append(ReportItem(self._label(key), shown, masked, key=key))
        return ReportSection(self.title(category), items=tuple(items), key=category)

    def purchases_section(self, purchases: tuple[PurchaseRecord, ...]) -> ReportSection:
        items = []
        for purchase in purchases:
            day = purchase.purchased_at.date() if purchase.purchased_at else None
            label = self.text(
                "access.purchase.label",
                date=self._date(day),
                purchase_id=purchase.purchase_id,
            )
            parts = [purchase.description or _NONE]
            if purchase.amount is not None:
                parts.append(self._amount(purchase.amount))
            value = " — ".join(parts)
            items.append(ReportItem(label, value, value, key=purchase.purchase_id))
        count = self.text("access.purchases.count", count=len(purchases))
        return ReportSection(
            self.title(PURCHASES), items=tuple(items), paragraphs=(count,), key=PURCHASES
        )

    def policy_section(self, key: str, *, lead: str | None = None) -> ReportSection:
        """The policy's points under ``key``, one a line, after ``lead`` (a text id) if given."""
        text = self.text(f"access.policy.{key}")
        points = tuple(line.strip() for line in text.splitlines() if line.strip())
        if lead is not None:
            points = (self.text(lead), *points)
        return ReportSection(self.title(key), paragraphs=points, key=key)

    def controller_section(self) -> ReportSection:
        controller = _controller(self.language)
        items = (
            ReportItem(self.text("access.field.company"), controller["name"], controller["name"]),
            ReportItem(self.text("access.field.email"), DEFAULT_MAIL_ADDRESS, DEFAULT_MAIL_ADDRESS),
            ReportItem(
                self.text("access.field.postal_address"),
                controller["postal_address"],
                controller["postal_address"],
            ),
        )
        return ReportSection(self.title(CONTROLLER), items=items, key=CONTROLLER)

    def _date(self, day: date | None) -> str:
        return format_date(self.language, day) if day else _NONE

    def _amount(self, amount: Decimal) -> str:
        return format_decimal(amount, format="#,##0.00", locale=_NUMBER_LOCALES[self.language])
