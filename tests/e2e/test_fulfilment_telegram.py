"""Fulfilment through the staff group: each kind approved on its card does what the policy says.

A person files a request in the bot and proves the phone of a customer in the
directory; staff press Approve (two of them for the destructive kinds, with
corrected values or field names given by ForceReply); the directory changes,
the person hears what was done, and the audit log names fields, never values.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.callbacks import StaffAction
from tests.access_report_data import pdf_text
from tests.botapi import BotAPI, Call, Person
from tests.cli_command import aina_dsr
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID, STAFF_IDS
from tests.fulfilment_desk import CUSTOMER, FlakyDirectory, notices
from tests.mail_desk import sender_for
from tests.mailservers import SmtpServer, smtp_server  # noqa: F401
from tests.staff_desk import ARMAN, DANA, card_of, press
from tests.telegram_desk import STAFF_CHAT, Desk, words
from tests.telegram_dialog import (
    ALICE_ID,
    ANSWERS,
    answer_questions,
    notice,
    share_own_contact_and_confirm,
    start_kind,
    text,
    told,
)
from workflows.directory.customer_directory import DIRECTORY_FIELDS
from workflows.directory.sql_directory import SqlDirectory
from workflows.fulfilment.corrections import field_names
from workflows.fulfilment.work import Fulfilment
from workflows.i18n import status_name
from workflows.kinds import DEFAULT_KINDS, RequestKind
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import Channel
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor, RequestView

FULL_NAME = "Айгерим Нурланқызы Сейтқали"
IIN = "950314401237"
EMAIL = "aigerim.seitkali@mail.kz"
PERSONAL_VALUES = (FULL_NAME, IIN, EMAIL, "+77011234567", "1995-03-14")
FIELDS = ", ".join(sorted(DIRECTORY_FIELDS))


@pytest.fixture
def desk(directory: SqlDirectory, desk: Desk) -> Desk:
    """The shared running desk (conftest), with the customer directory imported first."""
    return desk


async def file_request(
    desk: Desk, service: RequestService, kind: RequestKind, language: str
) -> str:
    who = Person(ALICE_ID, first_name="Aigerim", language_code=language)
    await start_kind(desk, who, kind, language)
    await answer_questions(desk, who, kind, language)
    await share_own_contact_and_confirm(desk, who, language)
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    assert view.customer_matched
    return view.reference


async def reply(desk: Desk, who: Person, prompt: Call, words_typed: str) -> Call:
    """``who`` answers a ForceReply prompt; returns the bot's reply in the group."""
    since = desk.mark()
    await desk.api.offer(
        desk.api.group_message(who, STAFF_CHAT, words_typed, reply_to_message=prompt.result)
    )
    return await desk.expect(STAFF_CHAT, since, methods=("sendMessage",))


async def prompted(desk: Desk, since: int, msgid: str, reference: str) -> Call:
    prompt = await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: text(c) == words("ru", msgid, reference=reference, fields=FIELDS),
    )
    assert prompt.params["reply_markup"]["force_reply"] is True
    return prompt


def assert_no_values_in_audit(view: RequestView) -> None:
    recorded = json.dumps([dict(e.details) for e in view.events], ensure_ascii=False).lower()
    for value in PERSONAL_VALUES:
        assert value.lower() not in recorded, value


async def test_access_the_person_gets_the_summary_then_the_pdf_and_the_json(
    desk: Desk, service: RequestService, directory: SqlDirectory, clock: FrozenClock
) -> None:
    reference = await file_request(desk, service, RequestKind.ACCESS, "kk")
    card = await card_of(desk, reference)
    # Staff see the report's masked preview before approving.
    preview = await Fulfilment(service, directory, clock).preview(reference)
    assert preview is not None
    assert html.escape(preview) in text(card)
    assert IIN not in text(card)

    since = desk.mark()
    answer = await press(desk, DANA, card, "approve", reference)
    assert answer.params.get("show_alert") is not True
    summary = await desk.expect(ALICE_ID, since, lambda c: reference in text(c))
    # Both files arrive: wait for the second.
    second = await desk.api.wait_until(
        lambda calls: next(iter([c for c in calls[since:] if c.method == "sendDocument"][1:]), None)
    )
    assert second is not None
    sent = [c for c in desk.api.calls()[since:] if c.method == "sendDocument"]
    assert len(sent) == 2
    assert {str(c.chat_id) for c in sent} == {str(ALICE_ID)}
    assert desk.api.calls().index(summary) < desk.api.calls().index(sent[0])
    # The message is masked; the files are complete.
    assert IIN not in text(summary)
    ((pdf,), (data,)) = (tuple(sent[0].files.values()), tuple(sent[1].files.values()))
    assert pdf.startswith(b"%PDF")
    content = pdf_text(pdf)
    assert FULL_NAME in content
    assert reference in content
    report = json.loads(data)
    assert report["reference"] == reference
    flat = json.dumps(report, ensure_ascii=False)
    for value in (FULL_NAME, IIN, EMAIL):
        assert value in flat
        assert value in content
    # The desk's own data about the person, beside the customer list's (issue 16 item 5).
    assert str(ALICE_ID) in content
    assert "+77011234567" in content
    assert reference in [r["reference"] for r in report["desk"]["requests"]]
    assert report["desk"]["telegram_user_id"] == str(ALICE_ID)
    assert report["categories"]["telegram"] is True
    assert (await service.get(reference)).status == "completed"


async def test_access_after_an_earlier_request_lists_it_with_its_outcome(
    desk: Desk, service: RequestService
) -> None:
    # Issue 16 item 5: the report tells the desk's own data, earlier requests included.
    since = desk.mark()
    # Leaving mailings is done as soon as the person is verified: no staff press.
    earlier = await file_request(desk, service, RequestKind.UNSUBSCRIBE, "kk")
    await told(desk, since, notice("unsubscribed", "kk", earlier, "unsubscribe"))
    who = Person(ALICE_ID, first_name="Aigerim", language_code="kk")
    await start_kind(desk, who, RequestKind.ACCESS, "kk")
    await answer_questions(desk, who, RequestKind.ACCESS, "kk")
    await share_own_contact_and_confirm(desk, who, "kk")
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID, open_only=True)
    reference = view.reference

    since = desk.mark()
    await press(desk, DANA, await card_of(desk, reference), "approve", reference)
    sent = await desk.api.wait_until(
        lambda calls: next(iter([c for c in calls[since:] if c.method == "sendDocument"][1:]), None)
    )
    assert sent is not None
    (pdf,) = tuple(
        next(c for c in desk.api.calls()[since:] if c.method == "sendDocument").files.values()
    )
    content = pdf_text(pdf)
    assert earlier in content
    assert words("kk", "kind.unsubscribe") in content
    assert status_name("kk", "completed") in content
    assert str(ALICE_ID) in content and "+77011234567" in content


async def test_delete_account_needs_two_staff_and_keeps_the_purchases(
    desk: Desk, service: RequestService, directory: SqlDirectory
) -> None:
    reference = await file_request(desk, service, RequestKind.DELETE_ACCOUNT, "ru")
    card = await card_of(desk, reference)

    since = desk.mark()
    first = await press(desk, DANA, card, "approve", reference)
    assert first.params.get("show_alert") is True
    assert first.params.get("text") == words(
        "ru", "staff.approval.recorded", reference=reference, names="Dana"
    )
    # The card shows who approved and how many approvals are needed.
    approvals = words("ru", "staff.card.approvals", names="Dana", given=1, needed=2)
    await desk.expect(
        STAFF_CHAT, since, lambda c: approvals in text(c), methods=("editMessageText",)
    )

    again = await press(desk, DANA, card, "approve", reference)
    assert again.params.get("show_alert") is True
    assert again.params.get("text") == words("ru", "staff.approval.twice")
    view = await service.get(reference)
    assert (view.status, view.approvals) == ("verified", ("Dana",))
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None and record.full_name == FULL_NAME

    since = desk.mark()
    await press(desk, ARMAN, card, "approve", reference)
    await told(desk, since, notice("account_deleted", "ru", reference, "delete_account"))
    await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: status_name("ru", "completed") in text(c),
        methods=("editMessageText",),
    )

    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None
    erased = (record.full_name, record.phone, record.email, record.iin, record.gender)
    assert erased == (None, None, None, None, None)
    assert (record.birth_date, record.language) == (None, None)
    assert [p.purchase_id for p in record.purchases] == ["P-5001", "P-5002"]
    assert await directory.lookup(phone="+77011234567") is None

    view = await service.get(reference, with_events=True)
    assert view.status == "completed"
    approve = next(e for e in view.events if e.action == "approve")
    assert approve.details["approved_by"] == ["Dana", "Arman"]
    complete = next(e for e in view.events if e.action == "complete")
    assert set(complete.details["erased_fields"]) == {
        "full_name", "iin", "phone", "email", "gender", "birth_date", "language",
    }  # fmt: skip
    assert_no_values_in_audit(view)


async def suppression_list(database_url: str, encryption_key: str, tmp_path: Path) -> Any:
    result = await asyncio.to_thread(
        aina_dsr,
        tmp_path,
        "directory",
        "export-suppressions",
        "--format",
        "json",
        DSR_DATABASE_URL=database_url,
        DSR_ENCRYPTION_KEY=encryption_key,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("kind", "template", "processing"),
    [
        (RequestKind.WITHDRAW_CONSENT, "consent_withdrawn", True),
        (RequestKind.UNSUBSCRIBE, "unsubscribed", False),
    ],
)
async def test_withdrawal_and_unsubscribe_put_the_customer_on_the_suppression_list(
    desk: Desk,
    service: RequestService,
    directory: SqlDirectory,
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
    kind: RequestKind,
    template: str,
    processing: bool,
) -> None:
    assert await directory.suppressions() == []
    since = desk.mark()
    reference = await file_request(desk, service, kind, "en")
    if not DEFAULT_KINDS[kind].at_once:  # leaving mailings is done without an approval
        card = await card_of(desk, reference)
        since = desk.mark()
        await press(desk, DANA, card, "approve", reference)
    await told(desk, since, notice(template, "en", reference, kind.value))

    (entry,) = await suppression_list(database_url, encryption_key, tmp_path)
    assert entry["customer_id"] == CUSTOMER
    assert entry["marketing_stopped_at"] is not None
    assert (entry["processing_stopped_at"] is not None) is processing
    assert entry["processing_scope"] == (ANSWERS["data_concerned"] if processing else None)
    assert entry["blocked_at"] is None and entry["erased_at"] is None
    listing = json.dumps(entry, ensure_ascii=False)
    for value in PERSONAL_VALUES:
        assert value not in listing


async def test_rectify_asks_for_the_values_refuses_a_bad_line_and_tells_what_changed(
    desk: Desk, service: RequestService, directory: SqlDirectory
) -> None:
    reference = await file_request(desk, service, RequestKind.RECTIFY, "ru")
    card = await card_of(desk, reference)

    since = desk.mark()
    await press(desk, DANA, card, "approve", reference)
    prompt = await prompted(desk, since, "staff.correct.prompt", reference)

    refused = await reply(desk, DANA, prompt, "surname: Новое")
    assert refused.params["reply_markup"]["force_reply"] is True
    assert text(refused).startswith(words("ru", "staff.input.bad", reason="~").partition("~")[0])
    assert "line 1" in text(refused)
    assert "full_name" in text(refused) and "birth_date" in text(refused)
    assert (await service.get(reference)).status == "verified"
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None and record.full_name == FULL_NAME

    since = desk.mark()
    done = await reply(desk, DANA, refused, "full_name: Новое Имя")
    assert done.params.get("text") == words(
        "ru", "staff.done", reference=reference, status=status_name("ru", "completed")
    )
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None
    assert (record.full_name, record.iin) == ("Новое Имя", IIN)
    await told(
        desk,
        since,
        notice(
            "data_corrected", "ru", reference, "rectify", fields=field_names("ru", ["full_name"])
        ),
    )
    view = await service.get(reference, with_events=True)
    complete = next(e for e in view.events if e.action == "complete")
    assert complete.details["changed_fields"] == ["full_name"]
    assert "Новое Имя" not in json.dumps([dict(e.details) for e in view.events], ensure_ascii=False)


async def test_a_correction_the_import_would_refuse_is_refused_with_the_imports_words(
    desk: Desk, service: RequestService, directory: SqlDirectory
) -> None:
    reference = await file_request(desk, service, RequestKind.RECTIFY, "ru")
    card = await card_of(desk, reference)
    since = desk.mark()
    await press(desk, DANA, card, "approve", reference)
    prompt = await prompted(desk, since, "staff.correct.prompt", reference)

    banana = await reply(desk, DANA, prompt, "gender: banana")
    future = await reply(desk, DANA, banana, "full_name: Айгерим Сейтқали\nbirth_date: 2999-01-01")

    assert "line 1: gender: not one of m, f, male, female, м, ж" in text(banana)
    assert "line 2: birth_date: in the future" in text(future)
    assert future.params["reply_markup"]["force_reply"] is True
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None
    assert (record.full_name, record.gender, str(record.birth_date)) == (
        FULL_NAME,
        "f",
        "1995-03-14",
    )
    assert (await service.get(reference)).status == "verified"

    done = await reply(desk, DANA, future, "gender: Male")
    assert done.params.get("text") == words(
        "ru", "staff.done", reference=reference, status=status_name("ru", "completed")
    )
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None and record.gender == "m"  # stored as the import stores it


async def test_block_sets_the_blocked_flag(
    desk: Desk, service: RequestService, directory: SqlDirectory
) -> None:
    reference = await file_request(desk, service, RequestKind.BLOCK, "kk")
    card = await card_of(desk, reference)

    since = desk.mark()
    await press(desk, DANA, card, "approve", reference)
    await told(desk, since, notice("processing_blocked", "kk", reference, "block"))

    (entry,) = await directory.suppressions()
    assert entry.customer_id == CUSTOMER
    assert entry.blocked_at is not None
    assert entry.marketing_stopped_at is None and entry.erased_at is None
    # Blocking keeps the data.
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None and record.full_name == FULL_NAME


async def test_destroy_unlawful_erases_the_named_fields_after_two_approvals(
    desk: Desk, service: RequestService, directory: SqlDirectory
) -> None:
    reference = await file_request(desk, service, RequestKind.DESTROY_UNLAWFUL, "ru")
    card = await card_of(desk, reference)

    since = desk.mark()
    await press(desk, DANA, card, "approve", reference)
    prompt = await prompted(desk, since, "staff.destroy.prompt", reference)
    refused = await reply(desk, DANA, prompt, "iin, shoe_size")
    assert "full_name" in text(refused)
    recorded = await reply(desk, DANA, refused, "iin, email")
    assert text(recorded) == words(
        "ru", "staff.approval.recorded", reference=reference, names="Dana"
    )
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None and record.iin == IIN

    # The same person cannot be the second pair of eyes: refused before anything is asked.
    again = await press(desk, DANA, card, "approve", reference)
    assert again.params.get("text") == words("ru", "staff.approval.twice")

    since = desk.mark()
    await press(desk, ARMAN, card, "approve", reference)
    prompt = await prompted(desk, since, "staff.destroy.prompt", reference)
    await reply(desk, ARMAN, prompt, "iin, email")
    await told(
        desk,
        since,
        notice(
            "data_destroyed",
            "ru",
            reference,
            "destroy_unlawful",
            fields=field_names("ru", ["iin", "email"]),
        ),
    )

    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None
    assert (record.iin, record.email) == (None, None)
    assert (record.full_name, record.phone) == (FULL_NAME, "+77011234567")
    view = await service.get(reference, with_events=True)
    complete = next(e for e in view.events if e.action == "complete")
    assert complete.details["erased_fields"] == ["iin", "email"]
    assert_no_values_in_audit(view)


class FailsOnce(SqlDirectory):
    """The desk's directory behind a company link that fails the first erasure (a timeout)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.failures = 1

    async def erase(self, customer_id: str, fields: Sequence[str]) -> list[str]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the directory did not answer")
        return await super().erase(customer_id, fields)


async def test_complete_after_a_failed_erasure_destroys_only_what_both_approved(
    desk: Desk,
    service: RequestService,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    await desk.stop()
    desk.fulfilment = Fulfilment(service, FailsOnce(sessions, vault, clock), clock)
    await desk.start()
    reference = await file_request(desk, service, RequestKind.DESTROY_UNLAWFUL, "ru")
    card = await card_of(desk, reference)
    # Dana and Arman both approve destroying the e-mail address; the erasure fails once.
    for who in (DANA, ARMAN):
        since = desk.mark()
        await press(desk, who, card, "approve", reference)
        prompt = await prompted(desk, since, "staff.destroy.prompt", reference)
        await reply(desk, who, prompt, "email")
    assert (await service.get(reference)).status == "approved"
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None and record.email == EMAIL

    # Dana presses Complete and types six fields: only what both approved is destroyed.
    since = desk.mark()
    answer = await press(desk, DANA, card, "complete", reference)
    await desk.api.offer(
        desk.api.group_message(DANA, STAFF_CHAT, "full_name, iin, phone, email, gender, birth_date")
    )
    done = await desk.expect(ALICE_ID, since, lambda c: reference in text(c))
    assert text(done) == notice(
        "data_destroyed", "ru", reference, "destroy_unlawful", fields=field_names("ru", ["email"])
    )
    assert answer.params.get("text") == words(
        "ru", "staff.done", reference=reference, status=status_name("ru", "completed")
    )
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None
    assert record.email is None
    kept = (record.full_name, record.iin, record.phone, record.birth_date)
    assert kept == (FULL_NAME, IIN, "+77011234567", date(1995, 3, 14))
    view = await service.get(reference, with_events=True)
    assert view.status == "completed"
    complete = next(e for e in view.events if e.action == "complete")
    assert complete.details["erased_fields"] == ["email"]


@pytest.mark.parametrize("kind", [RequestKind.BLOCK, RequestKind.DESTROY_UNLAWFUL])
async def test_staff_cannot_approve_a_request_they_filed_themselves(
    desk: Desk, service: RequestService, directory: SqlDirectory, kind: RequestKind
) -> None:
    # Dana, on the staff list, files a request of her own in the bot.
    dana = Person(DANA.id, first_name="Dana", language_code="ru")
    await start_kind(desk, dana, kind, "ru")
    await answer_questions(desk, dana, kind, "ru")
    await share_own_contact_and_confirm(desk, dana, "ru")
    (view,) = await service.list_requests(telegram_user_id=DANA.id)
    reference = view.reference
    card = await card_of(desk, reference)
    assert words("ru", "staff.card.own") in text(card)

    since = desk.mark()
    refused = await press(desk, DANA, card, "approve", reference)
    assert refused.params.get("show_alert") is True
    assert refused.params.get("text") == words("ru", "staff.approval.own")
    # Nothing asked, nothing recorded, nothing done.
    assert not any("force_reply" in str(c.params) for c in desk.api.calls()[since:]), (
        "no prompt for fields"
    )
    view = await service.get(reference, with_events=True)
    assert (view.status, view.approvals) == ("verified", ())
    record = await directory.lookup(customer_id=CUSTOMER)
    assert record is not None and record.iin == IIN

    # Another staff member may approve it.
    since = desk.mark()
    answer = await press(desk, ARMAN, card, "approve", reference)
    if kind is RequestKind.BLOCK:
        assert answer.params.get("text") == words(
            "ru", "staff.done", reference=reference, status=status_name("ru", "completed")
        )
    else:
        prompt = await prompted(desk, since, "staff.destroy.prompt", reference)
        recorded = await reply(desk, ARMAN, prompt, "iin")
        assert text(recorded) == words(
            "ru", "staff.approval.recorded", reference=reference, names="Arman"
        )


async def test_by_e_mail_the_report_files_are_attached_to_the_letter(
    service: RequestService,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    view = await service.open_request(
        kind="access",
        channel="email",
        language="ru",
        email=EMAIL,
        body="Какие мои данные у вас есть?",
        external_id="<ask@mail.kz>",
        send_code_to_email=True,
    )
    (code,) = [p["code"] for p in await notices(sessions, vault, "request_received_code")]
    check = await service.verify_by_code(view.reference, str(code), Actor.person_email(EMAIL))
    assert check.request.status == "verified"
    await Fulfilment(service, directory, clock).approve(
        view.reference, Actor.staff(STAFF_ID, "Dana")
    )
    sender = sender_for(smtp_server, service, clock)
    dispatcher = OutboxDispatcher(sessions, vault, clock, {Channel.EMAIL: sender})
    while await dispatcher.run_once():
        pass

    (letter,) = [
        r.message for r in smtp_server.letters if r.message.get_content_type() == "multipart/mixed"
    ]
    assert view.reference in str(letter["Subject"])
    files = {part.get_filename(): part for part in letter.iter_attachments()}
    assert set(files) == {f"{view.reference}-access.pdf", f"{view.reference}-access.json"}
    pdf = files[f"{view.reference}-access.pdf"]
    assert pdf.get_content_type() == "application/pdf"
    assert FULL_NAME in pdf_text(pdf.get_content())
    data = json.loads(files[f"{view.reference}-access.json"].get_content())
    assert data["reference"] == view.reference
    assert IIN in json.dumps(data)


async def test_a_failed_fulfilment_is_told_to_the_group_and_complete_tries_again(
    api: BotAPI,
    service: RequestService,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    flaky = FlakyDirectory(sessions, vault, clock)
    desk = Desk(
        api,
        service,
        sessions,
        vault,
        clock,
        STAFF_IDS,
        fulfilment=Fulfilment(service, flaky, clock),
    )
    await desk.start()
    try:
        # Leaving mailings is done at once (tests/e2e/test_unsubscribe_at_once.py): a withdrawal.
        reference = await file_request(desk, service, RequestKind.WITHDRAW_CONSENT, "kk")
        card = await card_of(desk, reference)

        since = desk.mark()
        answer = await press(desk, DANA, card, "approve", reference)

        reason = "ConnectionError: directory unreachable"
        assert answer.params.get("text") == html.unescape(
            words("ru", "staff.work.not_done", reason=reason)
        )
        assert answer.params.get("show_alert") is True
        alert = notice(
            "staff_fulfilment_failed", "ru", reference, "withdraw_consent", reason=reason
        )
        await desk.expect(STAFF_CHAT, since, lambda c: text(c) == alert)
        view = await service.get(reference, with_events=True)
        assert view.status == "approved"
        assert view.events[-1].action == "fulfilment_failed"
        assert view.events[-1].details == {"error": "ConnectionError"}
        assert await directory.suppressions() == []

        # The cause is fixed; Complete on the card, now showing the approved request, does it.
        flaky.down = False
        approved = await desk.expect(
            STAFF_CHAT,
            since,
            lambda c: (
                reference in text(c)
                and StaffAction(action="complete", reference=reference).pack()
                in str(c.params.get("reply_markup"))
            ),
        )
        since = desk.mark()
        await press(desk, DANA, approved, "complete", reference)
        await told(desk, since, notice("consent_withdrawn", "kk", reference, "withdraw_consent"))
        assert (await service.get(reference)).status == "completed"
        (entry,) = await directory.suppressions()
        assert entry.marketing_stopped_at is not None
    finally:
        await desk.stop()
