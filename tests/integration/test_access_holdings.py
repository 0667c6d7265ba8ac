"""The access report holds the desk's own data about the person, read from the database.

Issue 16 items 5 and 13: the Telegram id, the shared phone, the e-mail
addresses, the person's messages, their evidence files (names and sizes, not
contents) and their earlier requests with kinds, dates and outcomes; for a
customer the directory knows and for one it does not; and the desk's own
address (DSR_MAIL_FROM) in the report, never a hardcoded one.
"""

from __future__ import annotations

import io
import json
from typing import Any

from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.paths import DATA
from workflows.directory.csv_import import import_customers, import_purchases
from workflows.directory.sql_directory import SqlDirectory
from workflows.fulfilment.work import Fulfilment
from workflows.i18n import DeskInfo, catalogue
from workflows.persistence.tables import OutboxItem, Request
from workflows.privacy.vault import Vault
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

DANA = Actor.staff(STAFF_ID, "Dana")
CUSTOMER_PHONE = "+77011234567"  # C-1001 in tests/data/customers.csv
STRANGER_PHONE = "+77057654321"  # in no customer list
ALICE = 700100
SCAN = b"%PDF-1.4 the scan itself, which the report must not carry"


async def filed(
    service: RequestService, kind: str, phone: str, *, body: str | None = None, **fields: str
) -> str:
    view = await service.open_request(
        kind=kind,
        channel="telegram",
        language="en",
        telegram_user_id=ALICE,
        fields=fields,
        body=body,
        evidence=[Evidence("passport-scan.pdf", "application/pdf", SCAN)] if body else (),
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=ALICE, contact_user_id=ALICE, phone=phone
    )
    return view.reference


async def report_of(
    service: RequestService,
    fulfilment: Fulfilment,
    reference: str,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> tuple[str, dict[str, Any]]:
    view = await fulfilment.approve(reference, DANA)
    assert view.status == "completed"
    async with sessions() as session:
        row = await session.scalar(
            select(OutboxItem).where(
                OutboxItem.template == "access_report",
                OutboxItem.request_id
                == select(Request.id).where(Request.reference == reference).scalar_subquery(),
            )
        )
    assert row is not None
    pdf, data = await service.documents(reference, vault.decrypt_json(row.params_enc)["documents"])
    text = " ".join(
        "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.data)).pages).split()
    )
    return text, json.loads(data.data)


async def test_a_person_unknown_to_the_directory_reads_what_the_desk_holds(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    fulfilment = Fulfilment(service, SqlDirectory(sessions, vault, clock), clock)
    earlier = await filed(service, "unsubscribe", STRANGER_PHONE)
    await fulfilment.approve(earlier, DANA)
    reference = await filed(service, "access", STRANGER_PHONE, body="What do you hold about me?")

    text, document = await report_of(service, fulfilment, reference, sessions, vault)

    for value in (str(ALICE), STRANGER_PHONE, earlier, reference, "passport-scan.pdf"):
        assert value in text, value
    assert "What do you hold about me?" in text
    assert catalogue().text("en", "kind.unsubscribe") in text
    assert "the scan itself" not in text
    company = DeskInfo().context("en")["company"]
    assert catalogue().text("en", "access.processing.none", company=company) not in text
    desk = document["desk"]
    assert isinstance(desk, dict)
    assert desk["telegram_user_id"] == str(ALICE)
    assert desk["phones"] == [STRANGER_PHONE]
    assert [r["reference"] for r in desk["requests"]] == [earlier, reference]
    assert desk["requests"][0]["status"] == "completed"
    assert desk["files"][0]["size"] == len(SCAN)
    categories = document["categories"]
    assert isinstance(categories, dict)
    assert categories["iin"] is False and categories["telegram"] is True


async def test_a_known_customer_reads_the_directorys_data_and_the_desks(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    await import_customers(sessions, vault, DATA / "customers.csv", now=clock.now())
    await import_purchases(sessions, vault, DATA / "purchases.csv")
    info = DeskInfo(mail_address="privacy@example.kz")
    fulfilment = Fulfilment(service, SqlDirectory(sessions, vault, clock), clock, info=info)
    reference = await filed(service, "access", CUSTOMER_PHONE, body="Please send my data")

    text, document = await report_of(service, fulfilment, reference, sessions, vault)

    assert "Сейтқали" in text  # the directory's
    assert str(ALICE) in text and "Please send my data" in text  # the desk's
    assert "privacy@example.kz" in text
    assert "aina.app@mercury.kz" not in text
    assert "aina.app@mercury.kz" not in json.dumps(document, ensure_ascii=False)
    categories = document["categories"]
    assert isinstance(categories, dict)
    assert categories["iin"] is True and categories["purchases"] is True


async def test_a_staff_cards_facts_carry_the_same_holdings_as_a_read_of_their_own(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # The card reads what the desk holds in its own session (one read, not two):
    # the same holdings, and the same preview, as read apart.
    fulfilment = Fulfilment(service, SqlDirectory(sessions, vault, clock), clock)
    earlier = await filed(service, "unsubscribe", STRANGER_PHONE)
    await fulfilment.approve(earlier, DANA)
    reference = await filed(service, "access", STRANGER_PHONE, body="What do you hold about me?")

    facts = await service.card_facts(reference, holdings_if=lambda view: view.kind == "access")

    assert facts.holdings is not None
    assert facts.holdings == await service.desk_holdings(reference)
    assert [r.reference for r in facts.holdings.requests] == [earlier, reference]
    assert await fulfilment.preview_of(facts) == await fulfilment.preview(reference)
    assert (await service.card_facts(reference)).holdings is None
    assert (await service.card_facts(earlier, holdings_if=lambda v: False)).holdings is None
