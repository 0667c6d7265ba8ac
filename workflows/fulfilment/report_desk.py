"""The access report beyond the customer list: the desk's own data and the operator's facts.

What the desk itself holds about the person (contacts, requests, messages,
files: :class:`~workflows.requests.holdings.DeskHoldings`), which of the
policy's categories the company holds for them, and who receives the data,
in which countries, kept how long (:class:`~workflows.fulfilment.processing.ProcessingFacts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from workflows.directory.store import CustomerRecord
from workflows.fulfilment.processing import (
    CATEGORIES,
    OPERATOR_CATEGORIES,
    POLICY_RETENTION_GROUP,
    ProcessingFacts,
    Role,
    country_name,
)
from workflows.fulfilment.report_words import NONE, ReportItem, ReportSection, Words
from workflows.i18n import catalogue
from workflows.requests.holdings import DeskHoldings, HeldRequest

DESK = "desk"
REQUESTS = "requests"
MESSAGES = "messages"
FILES = "files"
CATEGORIES_SECTION = "categories"
DESK_SECTIONS = (DESK, REQUESTS, MESSAGES, FILES)


def desk_sections(words: Words, desk: DeskHoldings, tz: ZoneInfo) -> list[ReportSection]:
    """The desk's data as sections: contacts, requests, messages, files (the empty left out)."""
    contacts = [words.item("telegram", desk.telegram_user_id)] if desk.telegram_user_id else []
    contacts += [words.item("full_name", name) for name in desk.names]
    contacts += [words.item("phone", phone) for phone in desk.phones]
    contacts += [words.item("email", email) for email in desk.emails]
    sections = []
    if contacts:
        sections.append(ReportSection(words.title(DESK), items=tuple(contacts), key=DESK))
    requests = tuple(_request_item(words, request, tz) for request in desk.requests)
    messages = tuple(
        _plain(
            words.text(
                "access.message.label",
                date=_day(words, message.at, tz),
                channel=_channel(words, message.channel),
                reference=message.reference,
            ),
            message.text or words.text("access.message.erased"),
        )
        for message in desk.messages
    )
    files = tuple(
        _plain(
            words.text(
                "access.file.label", date=_day(words, file.at, tz), reference=file.reference
            ),
            words.text("access.file.value", name=file.name, size=_size(words, file.size)),
        )
        for file in desk.files
    )
    for key, items in ((REQUESTS, requests), (MESSAGES, messages), (FILES, files)):
        if items:
            sections.append(ReportSection(words.title(key), items=items, key=key))
    return sections


def desk_json(desk: DeskHoldings, tz: ZoneInfo) -> dict[str, Any]:
    """The desk's data, machine-readable, complete; times local (ISO 8601)."""

    def local(at: datetime | None) -> str | None:
        return at.astimezone(tz).isoformat() if at else None

    return {
        "telegram_user_id": desk.telegram_user_id,
        "names": list(desk.names),
        "phones": list(desk.phones),
        "emails": list(desk.emails),
        "requests": [
            {
                "reference": r.reference,
                "kind": r.kind,
                "received_at": local(r.received_at),
                "status": r.status,
                "closed_at": local(r.closed_at),
            }
            for r in desk.requests
        ],
        "messages": [
            {"reference": m.reference, "channel": m.channel, "at": local(m.at), "text": m.text}
            for m in desk.messages
        ],
        "files": [
            {"reference": f.reference, "name": f.name, "size": f.size, "received_at": local(f.at)}
            for f in desk.files
        ],
    }


def held_categories(
    customer: CustomerRecord | None, desk: DeskHoldings, facts: ProcessingFacts
) -> dict[str, bool]:
    """Each of the policy's categories: whether the company holds it for this person."""
    c = customer
    held = {
        "full_name": bool(c and c.full_name) or bool(desk.names),
        "iin": bool(c and c.iin),
        "gender": bool(c and c.gender),
        "birth_date": bool(c and c.birth_date),
        "phone": bool(c and c.phone) or bool(desk.phones),
        "email": bool(c and c.email) or bool(desk.emails),
        "telegram": bool(desk.telegram_user_id),
        "account": c is not None,
        "purchases": bool(c and c.purchases),
        "requests": bool(desk.requests or desk.messages or desk.files),
    }
    for key in OPERATOR_CATEGORIES:
        held[key] = c is not None and facts.held_for_customers.get(key, False)
    return {key: held[key] for key in CATEGORIES}


def categories_section(words: Words, held: Mapping[str, bool]) -> ReportSection:
    """The policy's categories, each marked held or not held."""
    items = tuple(
        _plain(
            words.text(f"access.category.{key}"),
            words.text(f"access.held.{'yes' if is_held else 'no'}"),
            key=key,
        )
        for key, is_held in held.items()
    )
    return ReportSection(
        words.title(CATEGORIES_SECTION),
        items=items,
        paragraphs=(words.text("access.categories.lead"),),
        key=CATEGORIES_SECTION,
    )


def retention_by_category(
    words: Words, facts: ProcessingFacts, *, customer_found: bool
) -> dict[str, str]:
    """How long each category is kept: the operator's words, else the policy's (section 2).

    Without a customer account, the contacts are the desk's alone and kept as it keeps them.
    """
    result = {}
    for key in CATEGORIES:
        operator = facts.retention.get(key)
        if operator is not None:
            result[key] = operator[words.language]
            continue
        group = POLICY_RETENTION_GROUP[key]
        if group == "account" and not customer_found:
            group = "desk_contacts"
        days = words.days(facts.desk_retention_days)
        result[key] = words.text(f"access.retention.{group}", days=days)
    return result


def retention_items(
    words: Words, held: Mapping[str, bool], retention: Mapping[str, str]
) -> tuple[ReportItem, ...]:
    """The retention of each category held for the person."""
    return tuple(
        _plain(words.text(f"access.category.{key}"), retention[key], key=key)
        for key, is_held in held.items()
        if is_held
    )


def recipients_json(language: str, facts: ProcessingFacts) -> list[dict[str, str | None]]:
    return [
        {
            "name": r.name[language],
            "role": r.role,
            "country": r.country,
            "location": r.location[language] if r.location else None,
            "purpose": r.purpose[language] if r.purpose else None,
        }
        for r in facts.recipients
    ]


def recipient_part(
    words: Words, facts: ProcessingFacts, role: Role
) -> tuple[tuple[str, ...], tuple[ReportItem, ...]]:
    """A paragraph and the named organisations of ``role``; or the policy's "none named"."""
    named = [r for r in facts.recipients if r.role == role]
    if not named:
        return (words.text(f"access.{role}s.none_named"),), ()
    items = []
    for recipient in named:
        where = [country_name(words.language, recipient.country)]
        if recipient.location:
            where.append(recipient.location[words.language])
        value = ", ".join(where)
        if recipient.purpose:
            value = f"{value} — {recipient.purpose[words.language]}"
        items.append(_plain(recipient.name[words.language], value))
    return (words.text(f"access.{role}s.named"),), tuple(items)


def transfer_paragraphs(words: Words, facts: ProcessingFacts) -> tuple[str, ...]:
    """Where the data goes abroad, if the operator named the organisations."""
    abroad = facts.transfers_abroad()
    if abroad:
        names = ", ".join(country_name(words.language, code) for code in abroad)
        return (words.text("access.transfers.abroad", countries=names),)
    if facts.recipients:
        return (words.text("access.transfers.none"),)
    return ()


def _plain(label: str, value: str, *, key: str = "") -> ReportItem:
    return ReportItem(label, value, value, key=key)


def _request_item(words: Words, request: HeldRequest, tz: ZoneInfo) -> ReportItem:
    label = words.text(
        "access.request.label",
        reference=request.reference,
        date=_day(words, request.received_at, tz),
    )
    kind = _named(words, f"kind.{request.kind}", request.kind)
    status = _named(words, f"status.{request.status}", request.status)
    if request.closed_at is not None:
        value = words.text(
            "access.request.value_closed",
            kind_name=kind,
            status_name=status,
            closed=_day(words, request.closed_at, tz),
        )
    else:
        value = words.text("access.request.value", kind_name=kind, status_name=status)
    return _plain(label, value, key=request.reference)


def _named(words: Words, msgid: str, fallback: str) -> str:
    return words.text(msgid) if catalogue().has(msgid) else fallback


def _channel(words: Words, channel: str) -> str:
    return _named(words, f"channel.{channel}", channel)


def _day(words: Words, at: datetime | None, tz: ZoneInfo) -> str:
    return words.date(at.astimezone(tz).date()) if at else NONE


def _size(words: Words, size: int) -> str:
    if size < 1024:
        return words.text("access.size.bytes", n=size)
    if size < 1024 * 1024:
        return words.text("access.size.kb", n=round(size / 1024))
    return words.text("access.size.mb", n=f"{size / 1024 / 1024:.1f}")
