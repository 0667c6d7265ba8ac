"""The answer to an ``access`` request: everything the policy (section 6) promises to tell.

:func:`build_access_report` returns an :class:`AccessReport` in the person's
language: whether we process their data; the customer list's data by category
(when it knows them) and always what the desk itself holds (their contacts,
requests, messages and files); each of the policy's categories marked held or
not held; the policy's words on sources, legal basis, purposes, retention
(per category) and methods; who may access the data, the processors, named
with their countries when the operator's processing file names them; where it
is stored and whether it goes abroad; the company, its contacts and the
authorised body (the desk's :class:`~workflows.i18n.DeskInfo`). The report
renders four ways: a PDF and a JSON file with complete values (the
attachments), a short chat message and a staff-card preview, both masked.

The policy texts are catalogue messages (``locales/*/LC_MESSAGES/access.po``),
one line per point, so a lawyer changes them without touching code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from workflows.deadlines.calendar import DEFAULT_TIMEZONE
from workflows.directory.store import CustomerRecord, PurchaseRecord
from workflows.fulfilment.processing import ProcessingFacts
from workflows.fulfilment.report_desk import (
    CATEGORIES_SECTION,
    DESK_SECTIONS,
    categories_section,
    desk_json,
    desk_sections,
    held_categories,
    recipient_part,
    recipients_json,
    retention_by_category,
    retention_items,
    transfer_paragraphs,
)
from workflows.fulfilment.report_words import (
    NONE,
    POLICY_SECTIONS,
    PURCHASES,
    JSONValue,
    ReportItem,
    ReportSection,
    Words,
    mask_birth_date,
)
from workflows.i18n import DeskInfo, catalogue, format_date, pick_language
from workflows.requests.holdings import DeskHoldings

__all__ = [
    "POLICY_SECTIONS",
    "AccessReport",
    "ReportItem",
    "ReportSection",
    "build_access_report",
    "mask_birth_date",
]

# The customer list's data sections, in the order the report shows them.
DATA_CATEGORIES = ("identity", "contacts", "account")
PROCESSING = "processing"
CONTROLLER = "controller"


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
    # The rest of the JSON file: the desk's data, categories, recipients, retention.
    facts: Mapping[str, Any] = field(default_factory=dict, hash=False)
    desk_context: Mapping[str, str] = field(default_factory=dict, hash=False)

    def section(self, key: str) -> ReportSection | None:
        """The section with ``key``, if the report has it."""
        return next((s for s in self.sections if s.key == key), None)

    def _text(self, msgid: str, **params: object) -> str:
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
            "controller": _controller(self.desk_context),
            "processes_data": self.processes_data,
            "customer_found": self.customer_found,
            "data": {category: dict(values) for category, values in self.data.items()},
            "purchases": [_purchase_json(p) for p in self.purchases],
            **self.facts,
            **policy,
        }
        return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")

    def as_pdf(self) -> bytes:
        """The report as a PDF document with complete values; its metadata names no person."""
        # fpdf2 takes a third of a second to import: loaded only when a report is made.
        from workflows.fulfilment.report_pdf import PdfFrame, render_pdf

        frame = PdfFrame(
            title=self._text("access.title"),
            author=self.desk_context["company"],
            footer=self._text("access.pdf.footer", **self.desk_context),
            language=self.language,
            created=self.generated_at,
            head_lines=(
                self._text("access.reference", reference=self.reference),
                self._text(
                    "access.date", date=format_date(self.language, self.generated_at.date())
                ),
            ),
            intro=(self._text("access.intro"), self._text("access.pdf.keep_safe")),
        )
        return render_pdf(frame, self.sections)

    def summary(self) -> str:
        """A short message for the person, in their language, with sensitive values masked."""
        lines = [self._text("access.summary.title", reference=self.reference), ""]
        processing = self.section(PROCESSING)
        lines.extend(processing.paragraphs if processing else ())
        for section in self._data_sections():
            lines.extend(self._short(section))
        lines += ["", self._text("access.summary.files")]
        return "\n".join(lines).strip()

    def preview(self) -> str:
        """A few masked lines for the staff card, in the report's language."""
        lines = [self._text("access.preview.title", reference=self.reference)]
        if self.customer_found:
            customer_id = self.data.get("account", {}).get("customer_id") or NONE
            lines.append(self._text("access.preview.found", customer_id=customer_id))
        else:
            lines.append(self._text("access.preview.not_found"))
        for section in self._data_sections():
            if section.key in (PURCHASES, *DESK_SECTIONS[1:]):
                lines.extend(self._short(section))
                continue
            shown = [item.masked for item in section.items if item.masked != NONE]
            if shown:
                lines.append(f"{section.title}: {' · '.join(shown)}")
        lines.append(self._text("access.preview.files"))
        return "\n".join(lines)

    def _short(self, section: ReportSection) -> list[str]:
        """A section in a line or a few: a count for lists, masked values for the rest."""
        if section.key == PURCHASES:
            return [section.paragraphs[0]]
        if section.key in DESK_SECTIONS[1:]:
            count = self._text(f"access.count.{section.key}", count=len(section.items))
            return [count]
        return [f"{item.label}: {item.masked}" for item in section.items]

    def _data_sections(self) -> Iterator[ReportSection]:
        data_keys = {*DATA_CATEGORIES, PURCHASES, *DESK_SECTIONS}
        return (s for s in self.sections if s.key in data_keys)


def build_access_report(
    customer: CustomerRecord | None,
    *,
    reference: str,
    language: str,
    now: datetime,
    timezone: str = DEFAULT_TIMEZONE,
    subject_contacts: Mapping[str, str] | None = None,
    desk: DeskHoldings | None = None,
    processing: ProcessingFacts | None = None,
    info: DeskInfo | None = None,
) -> AccessReport:
    """The access report for ``customer`` (``None``: the customer list does not know them).

    ``desk`` is what the desk holds about the person; without it, the contacts
    the person gave with the request (``subject_contacts``: ``phone``,
    ``email``, ``telegram_user_id``) stand for it. ``processing`` holds the
    operator's recipients and retention (the policy's own words by default);
    ``info`` the desk's name, addresses and authorised body. Times are shown
    as local dates in ``timezone``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tz = ZoneInfo(timezone)
    lang = pick_language(language)
    words = Words(lang)
    context = (info or DeskInfo()).context(lang)
    facts = processing or ProcessingFacts()
    desk = desk if desk is not None else _from_contacts(subject_contacts or {})

    data: dict[str, dict[str, JSONValue]] = {}
    sections: list[ReportSection] = []
    purchases: tuple[PurchaseRecord, ...] = ()
    if customer is not None:
        data = _customer_data(customer, tz)
        sections = [words.data_section(category, data[category]) for category in DATA_CATEGORIES]
        purchases = tuple(_local_purchase(p, tz) for p in customer.purchases)
        sections.append(words.purchases_section(purchases))
        processing_text, sources_lead = "access.processing.yes", "access.sources.directory"
    elif not desk.empty:
        processing_text, sources_lead = "access.processing.desk_only", "access.sources.desk"
    else:
        processing_text, sources_lead = "access.processing.none", None
    sections += desk_sections(words, desk, tz)
    held = held_categories(customer, desk, facts)
    retention = retention_by_category(words, facts, customer_found=customer is not None)

    head = ReportSection(
        words.title(PROCESSING),
        paragraphs=(words.text(processing_text, company=context["company"]),),
        key=PROCESSING,
    )
    tail = [
        categories_section(words, held),
        *_policy_sections(words, facts, held, retention, sources_lead),
        _controller_section(words, context),
    ]
    return AccessReport(
        reference=reference,
        language=lang,
        generated_at=now.astimezone(tz),
        processes_data=customer is not None or not desk.empty,
        sections=(head, *sections, *tail),
        customer_found=customer is not None,
        data=data,
        purchases=purchases,
        facts={
            "desk": desk_json(desk, tz),
            CATEGORIES_SECTION: held,
            "recipients": recipients_json(lang, facts),
            "transfers_abroad": list(facts.transfers_abroad()),
            "retention_by_category": retention,
        },
        desk_context=context,
    )


def _policy_sections(
    words: Words,
    facts: ProcessingFacts,
    held: Mapping[str, bool],
    retention: Mapping[str, str],
    sources_lead: str | None,
) -> list[ReportSection]:
    """The policy's points, with what the operator's file adds to them."""
    sections = []
    for key in POLICY_SECTIONS:
        points = words.policy_points(key)
        items: tuple[ReportItem, ...] = ()
        if key == "sources" and sources_lead is not None:
            points = (words.text(sources_lead), *points)
        elif key == "retention":
            items = retention_items(words, held, retention)
        elif key == "access":
            lead, items = recipient_part(words, facts, "recipient")
            points = (*points, *lead)
        elif key == "processors":
            lead, items = recipient_part(words, facts, "processor")
            points = (*points, *lead)
        elif key == "storage_location":
            points = (*points, *transfer_paragraphs(words, facts))
        sections.append(ReportSection(words.title(key), items=items, paragraphs=points, key=key))
    return sections


def _from_contacts(contacts: Mapping[str, str]) -> DeskHoldings:
    return DeskHoldings(
        telegram_user_id=contacts.get("telegram_user_id") or None,
        phones=tuple(v for v in (contacts.get("phone"),) if v),
        emails=tuple(v for v in (contacts.get("email"),) if v),
    )


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


def _controller(context: Mapping[str, str]) -> dict[str, str]:
    return {
        "name": context["company"],
        "email": context["mail_address"],
        "postal_address": context["postal_address"],
        "authority": context["authority"],
        "authority_address": context["authority_address"],
    }


def _controller_section(words: Words, context: Mapping[str, str]) -> ReportSection:
    rows = (
        ("company", context["company"]),
        ("email", context["mail_address"]),
        ("postal_address", context["postal_address"]),
        ("authority", f"{context['authority']}, {context['authority_address']}"),
    )
    items = tuple(ReportItem(words.label(key), value, value, key=key) for key, value in rows)
    return ReportSection(words.title(CONTROLLER), items=items, key=CONTROLLER)
