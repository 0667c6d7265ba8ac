"""The Telegram channel end to end: a real aiogram Bot over HTTP against the Bot API stand-in.

A person files each kind of request in each language; staff take it to the
end in the group; the outbox tells the person, in their language.
"""

from __future__ import annotations

import html
from datetime import UTC, date, datetime

import pytest
from aiogram.fsm.storage.base import StorageKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aina_dsr.runtime import desk_info
from aina_dsr.settings import load_settings
from bot.callbacks import LanguageChoice, StaffAction, SummaryChoice
from bot.dialog.states import Dialog
from bot.storage import DatabaseStorage
from tests.botapi import BotAPI, Call, Person
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID, STAFF_IDS
from tests.staff_desk import (
    ARMAN,
    DANA,
    answer_prompt,
    press_draft,
    prompt_for,
    staff_presses,
    staff_words,
    the_card,
)
from tests.telegram_desk import STAFF_CHAT, Desk, buttons, message_id, words
from tests.telegram_dialog import (
    ALICE_ID,
    ANSWERS,
    answer_questions,
    code_in_outbox,
    file_access,
    person,
    share_own_contact_and_confirm,
    start_kind,
    text,
)
from workflows.i18n import format_date, kind_name, render_notification, status_name
from workflows.kinds import CLASSIFIED_KINDS, DEFAULT_KINDS, RequestKind
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

STRANGER = Person(999, first_name="Mallory")


async def outbox_reached(desk: Desk, chat_id: int, since: int, needle: str) -> Call:
    return await desk.expect(chat_id, since, lambda c: needle in text(c))


@pytest.mark.parametrize("language", ["kk", "ru", "en"])
@pytest.mark.parametrize("kind", CLASSIFIED_KINDS)
async def test_every_kind_can_be_filed_in_every_language(
    desk: Desk, service: RequestService, kind: RequestKind, language: str
) -> None:
    who = person(language)
    await start_kind(desk, who, kind, language)
    await answer_questions(desk, who, kind, language)
    since = desk.mark()
    summary = await share_own_contact_and_confirm(desk, who, language)
    assert f"<b>{html.escape(kind_name(language, kind.value))}</b>" in text(summary)

    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    # Leaving mailings is done at once once verified (tests/e2e/test_unsubscribe_at_once.py).
    status = "completed" if DEFAULT_KINDS[kind].at_once else "verified"
    assert (view.kind, view.language, view.status) == (kind.value, language, status)
    assert view.missing_fields == ()
    assert view.verified_by == "telegram_contact"
    # The person hears the reference, the kind and the due date, in their language.
    await outbox_reached(desk, ALICE_ID, since, view.reference)
    if view.due_at is not None:
        due = format_date(language, service.calendar.local_date(view.due_at))
        verified = await outbox_reached(desk, ALICE_ID, since, due)
        assert verified.params.get("parse_mode") == "HTML"
    notices = " ".join(text(c) for c in desk.api.sent_to(ALICE_ID))
    assert view.reference in notices
    assert kind_name(language, kind.value) in notices
    # And the staff group gets the card.
    card = await outbox_reached(desk, STAFF_CHAT, 0, view.reference)
    assert kind_name("ru", kind.value) in text(card)


def test_the_questions_cover_what_each_kind_requires() -> None:
    for kind, spec in DEFAULT_KINDS.items():
        asked = {name for name, _ in spec.questions}
        contact_fields = {"phone", "email", "postal_address"} if "contact" in asked else set()
        assert set(spec.required_fields) <= asked, kind
        for group in spec.one_of_fields:
            assert set(group) & contact_fields, kind


async def test_someone_elses_contact_and_a_typed_number_are_refused(
    desk: Desk, service: RequestService
) -> None:
    who = person("ru")
    await start_kind(desk, who, RequestKind.ACCESS, "ru")
    await answer_questions(desk, who, RequestKind.ACCESS, "ru")

    since = desk.mark()
    await desk.api.offer(desk.api.contact_message(who, 4242, "+77779998877"))
    await desk.expect(who.id, since, lambda c: text(c) == words("ru", "identity.not_own"))
    since = desk.mark()
    await desk.api.offer(desk.api.contact_message(who, None, "+77779998877"))
    await desk.expect(who.id, since, lambda c: text(c) == words("ru", "identity.not_own"))
    await desk.send(who, "+7 701 123 45 67", expect=words("ru", "identity.typed_phone"))
    assert await service.list_requests(telegram_user_id=ALICE_ID) == []

    await share_own_contact_and_confirm(desk, who, "ru")
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    assert view.status == "verified"


@pytest.mark.parametrize(
    ("shared", "e164"),
    [
        ("84912345678", "+84912345678"),  # Vietnam, not a Kazakh 8 4912...
        ("85291234567", "+85291234567"),  # Hong Kong
        ("819012345678", "+819012345678"),  # Japan
        ("8613812345678", "+8613812345678"),  # China
        ("821012345678", "+821012345678"),  # South Korea
        ("77011234567", "+77011234567"),  # Kazakhstan
        ("+77011234567", "+77011234567"),
    ],
)
async def test_a_shared_contacts_number_is_read_as_international(
    desk: Desk, service: RequestService, shared: str, e164: str
) -> None:
    # Telegram sends a contact's number international, usually without its "+".
    who = person("en")
    await start_kind(desk, who, RequestKind.ACCESS, "en")
    await answer_questions(desk, who, RequestKind.ACCESS, "en")

    since = desk.mark()
    await desk.api.offer(desk.api.contact_message(who, who.id, shared))
    summary = await desk.expect(
        who.id, since, lambda c: SummaryChoice(action="confirm").pack() in buttons(c).values()
    )
    since = desk.mark()
    await desk.press(who, who.id, message_id(summary), SummaryChoice(action="confirm").pack())
    await desk.expect(who.id, since, lambda c: text(c) == words("en", "summary.sent"))

    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    assert (view.status, view.verified_by) == ("verified", "telegram_contact")
    assert (await service.subject_contacts(view.reference))["phone"] == e164


async def test_identity_by_an_emailed_code(
    desk: Desk,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    who = person("kk")
    await start_kind(desk, who, RequestKind.UNSUBSCRIBE, "kk")
    await answer_questions(desk, who, RequestKind.UNSUBSCRIBE, "kk")
    await desk.send(who, "not an address@", expect=words("kk", "identity.bad_email"))
    since = desk.mark()
    await desk.send(who, "Aigerim@Mail.kz")
    summary = await desk.expect(who.id, since, lambda c: bool(buttons(c)))
    assert "a***@mail.kz" in text(summary)
    since = desk.mark()
    await desk.press(who, who.id, message_id(summary), SummaryChoice(action="confirm").pack())
    await desk.expect(
        who.id, since, lambda c: text(c) == words("kk", "code.sent", email="a***@mail.kz")
    )

    code = await code_in_outbox(sessions, vault)
    wrong = "000000" if code != "000000" else "111111"
    await desk.send(who, wrong, expect=words("kk", "code.wrong", left=4))
    await desk.send(who, f"{code[:3]} {code[3:]}", expect=words("kk", "code.ok"))
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    # Verified, so leaving mailings is done at once.
    assert (view.status, view.verified_by) == ("completed", "email_code")


async def test_staff_take_and_approve_with_the_card_edited_in_place(
    desk: Desk, service: RequestService
) -> None:
    reference = await file_access(desk, service, "ru")
    card = await the_card(desk, reference)
    card_id = message_id(card)
    # The person's words are on the card, escaped.
    assert "&lt;script&gt;" in text(card)
    assert "<script>" not in text(card)

    since = desk.mark()
    await desk.api.offer(
        desk.api.callback_query(
            DANA, STAFF_CHAT, card_id, StaffAction(action="take", reference=reference).pack()
        )
    )
    edited = await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: status_name("ru", "in_review") in text(c),
        methods=("editMessageText",),
    )
    assert message_id(edited) == card_id
    # Approving a complaint asks for its answer; sending the answer approves and closes it.
    since = await staff_presses(desk, DANA, card, "approve", reference)
    prompt = await prompt_for(desk, since, "staff.answer.prompt", reference)
    preview = await answer_prompt(desk, DANA, prompt, "Рассылку отправляем с Вашего согласия.")
    since = desk.mark()
    await press_draft(desk, DANA, preview, "staff.draft.send")
    edited = await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: status_name("ru", "completed", "complaint") in text(c),
        methods=("editMessageText",),
    )
    assert message_id(edited) == card_id
    view = await service.get(reference, with_events=True)
    assert view.status == "completed"
    take = next(e for e in view.events if e.action == "take")
    assert (take.actor_id, take.actor_name) == (str(STAFF_ID), "Dana")
    # Only one card was ever sent for the request (the prompt and the preview are not cards).
    assert (
        len(
            [
                c
                for c in desk.api.calls("sendMessage")
                if text(c).startswith(f"📄 <b>{reference}</b>") and c.chat_id == STAFF_CHAT
            ]
        )
        == 1
    )
    # The person hears that it was considered, and the answer, in Russian.
    answer = "Рассылку отправляем с Вашего согласия."
    params = {"reference": reference, "kind": "complaint", "answer": answer}
    notice = render_notification("complaint_answered", "ru", params)
    await desk.expect(ALICE_ID, 0, lambda c: text(c) == html.escape(notice.text))


async def test_a_press_by_someone_outside_the_staff_changes_nothing(
    desk: Desk, service: RequestService
) -> None:
    reference = await file_access(desk, service)
    card = await the_card(desk, reference)
    since = desk.mark()
    await desk.api.offer(
        desk.api.callback_query(
            STRANGER,
            STAFF_CHAT,
            message_id(card),
            StaffAction(action="approve", reference=reference).pack(),
        )
    )
    alert = await desk.api.wait_until(
        lambda calls: next((c for c in calls[since:] if c.method == "answerCallbackQuery"), None)
    )
    assert alert is not None
    assert alert.params.get("show_alert") is True
    assert alert.params.get("text") == words("ru", "staff.not_allowed")
    assert (await service.get(reference)).status == "verified"


async def test_reject_with_a_reason_reaches_the_person_in_their_language(
    desk: Desk, service: RequestService
) -> None:
    reference = await file_access(desk, service, "kk")
    card = await the_card(desk, reference)
    since = await staff_presses(desk, DANA, card, "reject", reference)
    prompt = await prompt_for(desk, since, "staff.reason.prompt", reference)
    reason = "Деректер <заңды> негізде өңделеді"
    preview = await answer_prompt(desk, DANA, prompt, reason)
    assert text(preview) == words(
        "ru", "staff.reason.preview", reference=reference, text=html.escape(reason)
    )
    since = desk.mark()
    await press_draft(desk, DANA, preview, "staff.draft.send")
    rejected = await desk.expect(ALICE_ID, since, lambda c: "Деректер" in text(c))
    assert "&lt;заңды&gt;" in text(rejected)
    assert reference in text(rejected)
    assert (await service.get(reference)).status == "rejected"


async def test_ask_for_info_and_the_answer_returns_to_staff(
    desk: Desk, service: RequestService
) -> None:
    reference = await file_access(desk, service, "en")
    card = await the_card(desk, reference)
    since = await staff_presses(desk, DANA, card, "ask", reference)
    prompt = await prompt_for(desk, since, "staff.question.prompt", reference)
    preview = await answer_prompt(desk, DANA, prompt, "Which order number?")
    since = desk.mark()
    await press_draft(desk, DANA, preview, "staff.draft.send")
    await desk.expect(ALICE_ID, since, lambda c: "Which order number?" in text(c))
    assert (await service.get(reference)).status == "awaiting_info"

    since = desk.mark()
    await desk.send(
        person("en"), "Order 12345", expect=words("en", "reply.added", reference=reference)
    )
    # The answer comes back in the thread of the request's card.
    notice = await desk.expect(
        STAFF_CHAT, since, lambda c: reference in text(c), methods=("sendMessage",)
    )
    assert notice.params["reply_parameters"]["message_id"] == message_id(card)
    # The one who asked has the request now, and it is back with them.
    view = await service.get(reference)
    assert (view.status, view.assignee_name) == ("in_review", "Dana")
    assert any(body == "Order 12345" for _, _, body in await service.messages(reference))


async def test_a_refusal_names_the_authorised_body_the_settings_give(
    api: BotAPI,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    settings = load_settings(
        authority_name_kk="Дербес деректерді қорғау комитеті",
        authority_address_kk="Астана қ., Мәңгілік Ел д-лы, 8",
    )
    desk = Desk(api, service, sessions, vault, clock, STAFF_IDS, info=desk_info(settings))
    await desk.start()
    try:
        reference = await file_access(desk, service, "kk")
        card = await the_card(desk, reference)
        since = await staff_presses(desk, DANA, card, "reject", reference)
        prompt = await prompt_for(desk, since, "staff.reason.prompt", reference)
        preview = await answer_prompt(desk, DANA, prompt, "Негіз жоқ")
        since = desk.mark()
        await press_draft(desk, DANA, preview, "staff.draft.send")
        rejected = text(await desk.expect(ALICE_ID, since, lambda c: "Негіз жоқ" in text(c)))
    finally:
        await desk.stop()
    assert "Дербес деректерді қорғау комитеті (Астана қ., Мәңгілік Ел д-лы, 8)" in rejected
    assert "Жасанды интеллект" not in rejected  # the default name is replaced, not added to


async def test_a_line_typed_after_reject_without_replying_to_the_prompt_is_not_the_reason(
    desk: Desk, service: RequestService
) -> None:
    reference = await file_access(desk, service, "ru")
    card = await the_card(desk, reference)
    since = await staff_presses(desk, DANA, card, "reject", reference)
    prompt = await prompt_for(desk, since, "staff.reason.prompt", reference)

    # Dana says something in the group without replying to the prompt, then asks for the
    # queue: neither is the reason, and the command still works.
    since = desk.mark()
    await desk.api.offer(desk.api.group_message(DANA, STAFF_CHAT, "brb, getting coffee"))
    await desk.api.offer(desk.api.group_message(DANA, STAFF_CHAT, "/queue"))
    await desk.expect(
        STAFF_CHAT, since, lambda c: text(c).startswith(words("ru", "staff.queue.title"))
    )
    assert (await service.get(reference)).status == "verified"
    assert await staff_words(service, reference) == []

    # The reply to the prompt is the reason, shown back before it goes anywhere.
    reason = "Данные обрабатываются на законном основании"
    preview = await answer_prompt(desk, DANA, prompt, reason)
    assert "coffee" not in text(preview)
    assert reason in text(preview)
    assert (await service.get(reference)).status == "verified"
    since = desk.mark()
    await press_draft(desk, DANA, preview, "staff.draft.send")
    rejected = await desk.expect(ALICE_ID, since, lambda c: reason in text(c))
    assert "coffee" not in text(rejected)
    assert not any("coffee" in text(c) for c in desk.api.sent_to(ALICE_ID))
    assert await staff_words(service, reference) == [reason]
    assert (await service.get(reference)).status == "rejected"


async def test_a_question_shown_back_and_cancelled_never_reaches_the_person(
    desk: Desk, service: RequestService
) -> None:
    reference = await file_access(desk, service, "en")
    card = await the_card(desk, reference)
    since = await staff_presses(desk, DANA, card, "ask", reference)
    prompt = await prompt_for(desk, since, "staff.question.prompt", reference)
    question = "Which <b>order</b> number?"
    preview = await answer_prompt(desk, DANA, prompt, question)
    assert text(preview) == words(
        "ru", "staff.question.preview", reference=reference, text=html.escape(question)
    )
    assert set(buttons(preview)) == {
        words("ru", "staff.draft.send"),
        words("ru", "staff.draft.edit"),
        words("ru", "staff.draft.cancel"),
    }
    # Another staff member cannot send Dana's draft.
    refused = await press_draft(desk, ARMAN, preview, "staff.draft.send")
    assert refused.params.get("text") == words("ru", "staff.draft.gone")

    since = desk.mark()
    await press_draft(desk, DANA, preview, "staff.draft.cancel")
    await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: text(c) == words("ru", "staff.draft.cancelled", reference=reference),
    )
    # Its buttons are gone; pressed again anyway (an old client), Send sends nothing.
    cleared = await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: c.params.get("message_id") == message_id(preview),
        methods=("editMessageReplyMarkup",),
    )
    assert not cleared.params.get("reply_markup")
    again = await press_draft(desk, DANA, preview, "staff.draft.send")
    assert again.params.get("text") == words("ru", "staff.draft.gone")

    view = await service.get(reference)
    assert view.status == "verified"
    assert await staff_words(service, reference) == []
    assert not any(html.escape(question) in text(c) for c in desk.api.sent_to(ALICE_ID))


async def test_a_reason_edited_before_sending_reaches_the_person_as_edited(
    desk: Desk,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    reference = await file_access(desk, service, "ru")
    card = await the_card(desk, reference)
    since = await staff_presses(desk, DANA, card, "reject", reference)
    prompt = await prompt_for(desk, since, "staff.reason.prompt", reference)
    first = await answer_prompt(desk, DANA, prompt, "Не знаю")

    since = desk.mark()
    await press_draft(desk, DANA, first, "staff.draft.edit")
    again = await prompt_for(desk, since, "staff.reason.prompt", reference)
    final = await answer_prompt(desk, DANA, again, "Запрос подан повторно: см. DSR-2026-000001")
    # The first preview sends nothing now: only the latest text can go.
    stale = await press_draft(desk, DANA, first, "staff.draft.send")
    assert stale.params.get("text") == words("ru", "staff.draft.gone")
    assert (await service.get(reference)).status == "verified"

    since = desk.mark()
    await press_draft(desk, DANA, final, "staff.draft.send")
    await desk.expect(ALICE_ID, since, lambda c: "DSR-2026-000001" in text(c))
    await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: (
            text(c)
            == words("ru", "staff.done", reference=reference, status=status_name("ru", "rejected"))
        ),
    )
    assert await staff_words(service, reference) == ["Запрос подан повторно: см. DSR-2026-000001"]
    assert not any("Не знаю" in text(c) for c in desk.api.sent_to(ALICE_ID))
    # Nothing of the drafts is left in Dana's record once the reason has gone.
    key = StorageKey(bot_id=int(desk.api.token.split(":")[0]), chat_id=STAFF_CHAT, user_id=DANA.id)
    assert await DatabaseStorage(sessions, vault, clock).get_data(key) == {}


async def test_a_restart_mid_dialog_resumes_where_the_person_was(
    desk: Desk, service: RequestService
) -> None:
    who = person("ru")
    await start_kind(desk, who, RequestKind.WITHDRAW_CONSENT, "ru")
    since = desk.mark()
    await desk.expect(who.id, since - 2, lambda c: text(c) == words("ru", "ask.full_name"))
    await desk.send(who, ANSWERS["full_name"], expect=words("ru", "ask.data_concerned"))

    await desk.stop()
    await desk.start()

    await desk.send(who, ANSWERS["data_concerned"], expect=words("ru", "ask.contact"))
    await desk.send(who, "+7 701 765 43 21", expect=words("ru", "identity.ask"))
    await share_own_contact_and_confirm(desk, who, "ru")
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    assert view.fields["full_name"] == ANSWERS["full_name"]
    assert view.fields["phone"] == "+77017654321"


async def test_language_choice_is_remembered(desk: Desk) -> None:
    who = person("en")
    since = desk.mark()
    await desk.send(who, "/language")
    menu = await desk.expect(who.id, since, lambda c: bool(buttons(c)))
    await desk.press(
        who,
        who.id,
        message_id(menu),
        LanguageChoice(code="kk").pack(),
        expect=words("kk", "language.set"),
    )
    await desk.send(who, "/help", expect=words("kk", "help"))


async def test_status_and_cancel(desk: Desk, service: RequestService) -> None:
    reference = await file_access(desk, service, "en")
    since = desk.mark()
    await desk.send(person("en"), "/status")
    listing = await desk.expect(
        ALICE_ID, since, lambda c: text(c).startswith(words("en", "status.title"))
    )
    assert reference in text(listing)
    assert status_name("en", "verified") in text(listing)

    since = desk.mark()
    await desk.send(person("en"), "/cancel")
    pick = await desk.expect(ALICE_ID, since, lambda c: bool(buttons(c)))
    since = desk.mark()
    await desk.press(person("en"), ALICE_ID, message_id(pick), buttons(pick)[reference])
    confirm = await desk.expect(
        ALICE_ID, since, lambda c: text(c) == words("en", "cancel.confirm", reference=reference)
    )
    since = desk.mark()
    await desk.press(
        person("en"), ALICE_ID, message_id(confirm), buttons(confirm)[words("en", "cancel.yes")]
    )
    # The buttons go once the request is cancelled; the notice follows through the outbox.
    await desk.expect(ALICE_ID, since, methods=("editMessageReplyMarkup",))
    assert (await service.get(reference)).status == "cancelled"
    notice = render_notification(
        "request_cancelled", "en", {"reference": reference, "kind": "complaint"}
    )
    await desk.expect(ALICE_ID, since, lambda c: text(c) == html.escape(notice.text))


async def test_unexpected_input_gets_an_answer(desk: Desk) -> None:
    who = person("en")
    await desk.send(who, "hello?", expect=words("en", "fallback"))
    await start_kind(desk, who, RequestKind.COMPLAINT, "en")
    since = desk.mark()
    await desk.api.offer(desk.api.photo_message(who, desk.api.register_file(b"\xff\xd8jpeg")))
    await desk.expect(
        who.id,
        since,
        lambda c: text(c) == words("en", "expect.text", question=words("en", "ask.text.complaint")),
    )
    await desk.send(who, "x" * 2001, expect=words("en", "too_long", limit=2000))


async def test_documents_for_a_correction_are_kept_as_evidence_and_start_its_clock(
    desk: Desk, service: RequestService, clock: FrozenClock
) -> None:
    # Tuesday 15 December 2026, noon in Almaty: the next day is Independence Day.
    clock.set(datetime(2026, 12, 15, 7, 0, tzinfo=UTC))
    who = person("ru")
    await start_kind(desk, who, RequestKind.RECTIFY, "ru")
    since = desk.mark()
    await desk.expect(who.id, since - 3, lambda c: text(c) == words("ru", "ask.correction"))
    await desk.send(who, ANSWERS["correction"], expect=words("ru", "ask.evidence"))

    too_big = desk.api.register_file(b"x" * (10 * 1024 * 1024 + 1))
    since = desk.mark()
    await desk.api.offer(desk.api.document_message(who, too_big, file_name="huge.pdf"))
    await desk.expect(who.id, since, lambda c: text(c) == words("ru", "evidence.too_big", limit=10))

    scan = desk.api.register_file(b"%PDF-1.4 marriage certificate")
    since = desk.mark()
    await desk.api.offer(desk.api.document_message(who, scan, file_name="certificate.pdf"))
    received = await desk.expect(
        who.id, since, lambda c: text(c) == words("ru", "evidence.received", name="certificate.pdf")
    )
    since = desk.mark()
    await desk.press(
        who, who.id, message_id(received), buttons(received)[words("ru", "evidence.done")]
    )
    await desk.expect(who.id, since, lambda c: text(c) == words("ru", "identity.ask"))
    summary = await share_own_contact_and_confirm(desk, who, "ru")
    assert words("ru", "field.attachments", count=1) in text(summary)

    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    (evidence,) = await service.evidence(view.reference)
    assert (evidence.filename, evidence.data) == (
        "certificate.pdf",
        b"%PDF-1.4 marriage certificate",
    )
    # The documents came in the dialog: the clock runs from their arrival, one working
    # day over the holiday, with nothing for staff to press; the card and the person say so.
    card = await the_card(desk, view.reference)
    assert "certificate.pdf" in text(card)
    assert format_date("ru", date(2026, 12, 17)) in text(card)
    assert words("ru", "staff.left.working", n=1) in text(card)
    pressed = StaffAction(action="evidence", reference=view.reference).pack()
    assert pressed not in buttons(card).values()
    assert service.calendar.local_date(view.due_at) == date(2026, 12, 17)  # type: ignore[arg-type]
    async with desk.sessions() as session:
        rows = await session.scalars(
            select(OutboxItem).where(OutboxItem.template == "request_verified")
        )
        (verified,) = [desk.vault.decrypt_json(row.params_enc) for row in rows]
    assert verified["due_date"] == "2026-12-17"


async def test_staff_commands_in_the_group(
    desk: Desk, service: RequestService, clock: FrozenClock
) -> None:
    reference = await file_access(desk, service, "en")
    await the_card(desk, reference)

    async def command(who: Person, line: str) -> Call:
        since = desk.mark()
        await desk.api.offer(desk.api.group_message(who, STAFF_CHAT, line))
        return await desk.expect(STAFF_CHAT, since, methods=("sendMessage",))

    queue = await command(DANA, "/queue")
    assert text(queue).startswith(words("ru", "staff.queue.title"))
    assert reference in text(queue)
    assert text(await command(DANA, "/overdue")) == words("ru", "staff.overdue.empty")
    found = await command(DANA, f"/find {reference.lower()}")
    assert reference in text(found)
    assert buttons(found)
    missing = await command(DANA, "/find DSR-2026-999999")
    assert text(missing) == words("ru", "staff.find.none", reference="DSR-2026-999999")

    clock.advance(days=40)
    overdue = await command(DANA, "/overdue")
    assert reference in text(overdue)
    stats = await command(DANA, "/stats")
    assert text(stats) == words(
        "ru", "staff.stats", open=1, week=0, overdue=1, median=words("ru", "staff.stats.none")
    )

    # Someone in the group who is not staff gets no register.
    since = desk.mark()
    await desk.api.offer(desk.api.group_message(STRANGER, STAFF_CHAT, "/queue"))
    await desk.api.offer(desk.api.group_message(DANA, STAFF_CHAT, "/overdue"))
    replies = [await desk.expect(STAFF_CHAT, since, methods=("sendMessage",))]
    assert reference in text(replies[0])  # the first answer is Dana's; the stranger got none
    answers = [
        c for c in desk.api.calls()[since:] if c.method == "sendMessage" and c.chat_id == STAFF_CHAT
    ]
    assert len(answers) == 1


class _WatchingStandIn(BotAPI):
    """The stand-in, reading the person's dialog state from the database as each reply lands."""

    def __init__(self, storage: DatabaseStorage) -> None:
        super().__init__()
        self.storage = storage
        self.seen: list[tuple[str, str | None]] = []

    async def _record(self, call: Call) -> None:
        if call.method == "sendMessage" and str(call.chat_id) == str(ALICE_ID):
            key = StorageKey(
                bot_id=int(self.token.split(":")[0]), chat_id=ALICE_ID, user_id=ALICE_ID
            )
            self.seen.append((text(call), await self.storage.get_state(key)))
        await super()._record(call)


async def test_a_reply_never_reaches_the_person_before_the_dialog_state_it_belongs_to(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # Were the process to die right after a reply, the person's answer to it must find
    # the dialog at that question: the state is in the database before the reply is sent.
    who = person("en")
    async with _WatchingStandIn(DatabaseStorage(sessions, vault, clock)) as api:
        desk = Desk(api, service, sessions, vault, clock, STAFF_IDS)
        await desk.start()
        try:
            await start_kind(desk, who, RequestKind.ACCESS, "en")
            await answer_questions(desk, who, RequestKind.ACCESS, "en")
            await share_own_contact_and_confirm(desk, who, "en")
        finally:
            await desk.stop()
    states = {reply.split("\n")[0]: state for reply, state in api.seen}
    assert states[words("en", "start.choose").split("\n")[0]] == Dialog.kind.state
    assert states[words("en", "identity.ask").split("\n")[0]] == Dialog.identity.state
    summaries = [state for reply, state in api.seen if state == Dialog.summary.state]
    assert len(summaries) == 1
