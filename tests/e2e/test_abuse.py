"""Abuse and bad input (issue 7, item 2): limits, oversize and odd content, stray buttons, markup.

Each story runs through the real dispatcher against the Bot API stand-in; the
limits move with the test's clock, never with sleeping.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from aiogram.fsm.storage.base import StorageKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.callbacks import CancelPick, KindChoice, LanguageChoice, NewCode, StaffAction
from tests.botapi import Call, Person
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.mail_desk import sender_for
from tests.mailservers import SmtpServer, smtp_server  # noqa: F401
from tests.telegram_desk import STAFF_CHAT, Desk, buttons, message_id, words
from tests.telegram_dialog import (
    ALICE_ID,
    answer_questions,
    person,
    share_own_contact_and_confirm,
    start_kind,
    text,
)
from workflows.kinds import RequestKind
from workflows.outbox.dispatcher import OutboxDispatcher
from workflows.outbox.queue import Channel
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.limits import TooManyCodes, TooManyOpen
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

BOB_ID = 700200
MB = 1024 * 1024


async def open_for(service: RequestService, user_id: int, n: int) -> list[str]:
    references = []
    for i in range(n):
        view = await service.open_request(
            kind="complaint",
            channel="telegram",
            language="en",
            fields={"text": f"complaint {i}"},
            telegram_user_id=user_id,
        )
        references.append(view.reference)
    return references


async def answered(desk: Desk, since: int) -> Call:
    """The next answerCallbackQuery after ``since``."""
    call = await desk.api.wait_until(
        lambda calls: next(
            (c for c in calls[since:] if c.method == "answerCallbackQuery"),
            None,
        )
    )
    assert call is not None, "the button press was not answered"
    return call


def texts_to(desk: Desk, chat_id: int, since: int = 0) -> list[str]:
    return [
        text(c)
        for c in desk.api.calls()[since:]
        if c.method in ("sendMessage", "editMessageText") and str(c.chat_id) == str(chat_id)
    ]


def with_content(desk: Desk, who: Person, **content: Any) -> dict[str, Any]:
    """A private message carrying something other than text (a sticker, a voice message...)."""
    update = desk.api.private_message(who, "x")
    del update["message"]["text"]
    update["message"].update(content)
    return update


STICKER = {
    "sticker": {
        "file_id": "st1",
        "file_unique_id": "st1u",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
    }
}
VOICE = {"voice": {"file_id": "vo1", "file_unique_id": "vo1u", "duration": 3}}
LOCATION = {"location": {"latitude": 43.238, "longitude": 76.945}}
VIDEO = {
    "video": {
        "file_id": "vi1",
        "file_unique_id": "vi1u",
        "width": 640,
        "height": 480,
        "duration": 5,
    }
}
UNSUPPORTED: dict[str, dict[str, Any]] = {
    "sticker": STICKER,
    "voice": VOICE,
    "location": LOCATION,
    "video": VIDEO,
}


# -- open requests at once ----------------------------------------------------------------


async def test_the_service_refuses_a_request_past_the_open_limit_until_one_closes(
    service: RequestService,
) -> None:
    references = await open_for(service, ALICE_ID, service.limits.max_open_requests)

    with pytest.raises(TooManyOpen) as refused:
        await open_for(service, ALICE_ID, 1)
    assert refused.value.limit == 5
    assert len(await service.list_requests(telegram_user_id=ALICE_ID)) == 5
    # Someone else is not affected, and a cancelled request frees a place.
    await open_for(service, BOB_ID, 1)
    await service.cancel(references[0], Actor.person_telegram(ALICE_ID))
    await open_for(service, ALICE_ID, 1)


async def test_an_email_sender_is_not_counted_by_an_unproven_address(
    service: RequestService,
) -> None:
    # A From address proves nothing: counting by it would let anyone block a stranger.
    beyond_the_limit = service.limits.max_open_requests + 1
    for i in range(beyond_the_limit):
        await service.open_request(
            kind="complaint",
            channel="email",
            language="en",
            email="victim@example.kz",
            body=f"letter {i}",
        )

    assert len(await service.list_requests()) == beyond_the_limit


async def test_start_at_the_open_limit_says_so_and_offers_no_kinds(
    desk: Desk, service: RequestService
) -> None:
    await open_for(service, ALICE_ID, 5)
    since = desk.mark()

    await desk.send(person("ru"), "/start", expect=words("ru", "limits.too_many_open", limit=5))

    assert not any(buttons(c) for c in desk.api.sent_to(ALICE_ID)[since:])


async def test_confirming_at_the_open_limit_keeps_the_summary_until_one_is_cancelled(
    desk: Desk, service: RequestService
) -> None:
    who = person("en")
    await start_kind(desk, who, RequestKind.COMPLAINT, "en")
    await answer_questions(desk, who, RequestKind.COMPLAINT, "en")
    # Meanwhile five requests were filed (another device, say).
    references = await open_for(service, ALICE_ID, 5)
    since = desk.mark()
    await desk.api.offer(desk.api.contact_message(who, who.id, "+77011234567"))
    summary = await desk.expect(who.id, since, lambda c: bool(buttons(c)))
    since = desk.mark()
    confirm = buttons(summary)[words("en", "summary.confirm")]
    await desk.press(who, who.id, message_id(summary), confirm)

    refusal = await desk.expect(
        who.id, since, lambda c: text(c) == words("en", "limits.too_many_open", limit=5)
    )
    assert len(await service.list_requests(telegram_user_id=ALICE_ID)) == 5

    await service.cancel(references[0], Actor.person_telegram(ALICE_ID))
    since = desk.mark()
    await desk.press(
        who, who.id, message_id(refusal), buttons(refusal)[words("en", "summary.confirm")]
    )
    await desk.expect(who.id, since, lambda c: text(c) == words("en", "summary.sent"))
    filed = await service.list_requests(telegram_user_id=ALICE_ID, open_only=True)
    assert len(filed) == 5
    assert any(v.fields.get("text") for v in filed if v.reference not in references)


# -- confirmation codes an hour --------------------------------------------------------------


async def test_the_service_sends_three_codes_an_hour_then_says_when_the_next_may_go(
    service: RequestService, clock: FrozenClock
) -> None:
    (reference,) = await open_for(service, ALICE_ID, 1)
    actor = Actor.person_telegram(ALICE_ID)
    for _ in range(3):
        await service.send_email_code(reference, actor, "aigerim@mail.kz")
        clock.advance(minutes=10)

    with pytest.raises(TooManyCodes) as refused:
        await service.send_email_code(reference, actor, "aigerim@mail.kz")
    assert refused.value.minutes == 30  # the first code leaves the hour 30 minutes from now
    # Another request of the same person shares the hour's codes.
    (other,) = await open_for(service, ALICE_ID, 1)
    with pytest.raises(TooManyCodes):
        await service.send_email_code(other, actor, "aigerim@mail.kz")

    clock.advance(minutes=31)
    await service.send_email_code(reference, actor, "aigerim@mail.kz")


async def test_the_bot_answers_politely_when_the_codes_of_the_hour_are_used_up(
    desk: Desk, service: RequestService, clock: FrozenClock
) -> None:
    who = person("kk")
    await start_kind(desk, who, RequestKind.ACCESS, "kk")
    await answer_questions(desk, who, RequestKind.ACCESS, "kk")
    since = desk.mark()
    await desk.send(who, "aigerim@mail.kz")
    summary = await desk.expect(who.id, since, lambda c: bool(buttons(c)))
    since = desk.mark()
    await desk.press(
        who, who.id, message_id(summary), buttons(summary)[words("kk", "summary.confirm")]
    )
    sent = await desk.expect(who.id, since, lambda c: "@" in text(c))
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    again = NewCode(reference=view.reference).pack()
    for _ in range(2):  # the second and third codes of the hour
        clock.advance(minutes=5)
        since = desk.mark()
        await desk.press(who, who.id, message_id(sent), again)
        await desk.expect(who.id, since, lambda c: "@" in text(c))

    since = desk.mark()
    await desk.press(who, who.id, message_id(sent), again)

    polite = words("kk", "limits.codes", limit=3, minutes=50)
    refusal = await desk.expect(who.id, since, lambda c: text(c) == polite)
    assert buttons(refusal) == {words("kk", "code.resend"): again}
    clock.advance(minutes=51)
    since = desk.mark()
    await desk.press(who, who.id, message_id(refusal), again)
    await desk.expect(who.id, since, lambda c: "@" in text(c))


# -- messages a minute -----------------------------------------------------------------------


async def test_past_twenty_messages_a_minute_one_polite_answer_then_silence(
    desk: Desk, clock: FrozenClock
) -> None:
    who = person("ru")
    helped = words("ru", "help")
    for _ in range(20):
        await desk.send(who, "/help", expect=helped)
    since = desk.mark()

    await desk.send(who, "/help", expect=words("ru", "limits.slow_down", seconds=60))
    clock.advance(seconds=30)
    for _ in range(3):
        await desk.api.offer(desk.api.private_message(who, "/help"))
    # A button pressed meanwhile is answered (its spinner stops) and does nothing.
    pressed = desk.mark()
    await desk.press(who, who.id, 1, KindChoice(kind="access").pack())
    quiet = await answered(desk, pressed)
    assert quiet.params.get("text") is None
    # Someone else is not slowed down by it.
    await desk.send(Person(BOB_ID, language_code="en"), "/help", expect=words("en", "help"))

    clock.advance(seconds=31)
    await desk.send(who, "/help", expect=helped)
    assert texts_to(desk, ALICE_ID, since) == [
        words("ru", "limits.slow_down", seconds=60),
        helped,
    ]


async def test_the_staff_group_is_not_slowed_down(desk: Desk) -> None:
    dana = Person(STAFF_ID, first_name="Dana")
    answers = []
    for _ in range(25):  # more than the 20 a minute a person's chat is allowed
        since = desk.mark()
        await desk.api.offer(desk.api.group_message(dana, STAFF_CHAT, "/queue"))
        answers.append(text(await desk.expect(STAFF_CHAT, since)))

    # Every one is answered with the queue (empty here), none with "please wait".
    assert answers == [words("ru", "staff.queue.empty")] * 25


# -- oversize and unsupported content ----------------------------------------------------


async def test_text_over_the_cap_is_refused_and_the_dialog_goes_on(
    desk: Desk, service: RequestService
) -> None:
    who = person("en")
    await start_kind(desk, who, RequestKind.WITHDRAW_CONSENT, "en")
    since = desk.mark()
    await desk.expect(who.id, since - 2, lambda c: text(c) == words("en", "ask.full_name"))
    await desk.send(who, "Aigerim Sadykova", expect=words("en", "ask.data_concerned"))

    await desk.send(who, "x" * 2001, expect=words("en", "too_long", limit=2000))

    await desk.send(who, "all of it", expect=words("en", "ask.contact"))
    await desk.send(who, "+7 701 765 43 21", expect=words("en", "identity.ask"))
    await share_own_contact_and_confirm(desk, who, "en")
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    assert view.fields["full_name"] == "Aigerim Sadykova"
    assert view.fields["data_concerned"] == "all of it"


async def test_a_file_over_the_cap_is_refused_while_documents_are_asked_for(
    desk: Desk, service: RequestService
) -> None:
    who = person("ru")
    await start_kind(desk, who, RequestKind.RECTIFY, "ru")
    since = desk.mark()
    await desk.send(who, "Фамилия Ахметқызы")
    await desk.expect(who.id, since, lambda c: text(c) == words("ru", "ask.evidence"))
    big = desk.api.register_file(b"%PDF-1.4 big")
    update = desk.api.document_message(who, big, file_name="passport.pdf")
    update["message"]["document"]["file_size"] = 11 * MB
    since = desk.mark()
    await desk.api.offer(update)
    await desk.expect(who.id, since, lambda c: text(c) == words("ru", "evidence.too_big", limit=10))

    small = desk.api.register_file(b"%PDF-1.4 small")
    since = desk.mark()
    await desk.api.offer(desk.api.document_message(who, small, file_name="passport.pdf"))
    received = await desk.expect(who.id, since, lambda c: "passport.pdf" in text(c))
    since = desk.mark()
    await desk.press(
        who, who.id, message_id(received), buttons(received)[words("ru", "evidence.done")]
    )
    await desk.expect(who.id, since, lambda c: text(c) == words("ru", "identity.ask"))
    await share_own_contact_and_confirm(desk, who, "ru")
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    assert [e.filename for e in await service.evidence(view.reference)] == ["passport.pdf"]
    assert view.fields["correction"] == "Фамилия Ахметқызы"


async def awaiting_info(desk: Desk, service: RequestService) -> str:
    (reference,) = await open_for(service, ALICE_ID, 1)
    await service.verify_by_contact(
        reference, sender_user_id=ALICE_ID, contact_user_id=ALICE_ID, phone="+77011234567"
    )
    await service.ask_info(reference, Actor.staff(STAFF_ID, "Dana"), "Which order?")
    return reference


async def inbound(service: RequestService, reference: str) -> list[str | None]:
    return [body for direction, _, body in await service.messages(reference) if direction == "in"]


async def test_a_reply_with_a_file_over_the_cap_or_a_long_caption_adds_nothing(
    desk: Desk, service: RequestService
) -> None:
    reference = await awaiting_info(desk, service)
    who = person("en")
    before = await inbound(service, reference)
    big = desk.api.register_file(b"%PDF-1.4 big")
    update = desk.api.document_message(who, big, file_name="order.pdf", caption="my order")
    update["message"]["document"]["file_size"] = 11 * MB
    since = desk.mark()
    await desk.api.offer(update)
    await desk.expect(
        who.id, since, lambda c: text(c) == words("en", "limits.file_too_big", limit=10)
    )
    small = desk.api.register_file(b"%PDF-1.4 small")
    since = desk.mark()
    await desk.api.offer(desk.api.photo_message(who, small, caption="y" * 2001))
    await desk.expect(who.id, since, lambda c: text(c) == words("en", "too_long", limit=2000))

    assert await inbound(service, reference) == before
    assert (await service.get(reference)).status == "awaiting_info"
    # A proper answer still goes through.
    await desk.send(who, "Order 12345", expect=words("en", "reply.added", reference=reference))
    assert (await service.get(reference)).status != "awaiting_info"


@pytest.mark.parametrize("content", list(UNSUPPORTED))
async def test_unsupported_content_is_answered_clearly_in_every_step(
    desk: Desk, service: RequestService, content: str
) -> None:
    who = person("kk")
    # Outside any dialog.
    since = desk.mark()
    await desk.api.offer(with_content(desk, who, **UNSUPPORTED[content]))
    await desk.expect(who.id, since, lambda c: text(c) == words("kk", "limits.unsupported"))
    # Where a document is asked for, and where a text answer is.
    await start_kind(desk, who, RequestKind.RECTIFY, "kk")
    since = desk.mark()
    await desk.expect(who.id, since - 2, lambda c: text(c) == words("kk", "ask.correction"))
    since = desk.mark()
    await desk.api.offer(with_content(desk, who, **UNSUPPORTED[content]))
    expected = words("kk", "expect.text", question=words("kk", "ask.correction"))
    await desk.expect(who.id, since, lambda c: text(c) == expected)
    await desk.send(who, "Фамилия Ахметқызы", expect=words("kk", "ask.evidence"))
    since = desk.mark()
    await desk.api.offer(with_content(desk, who, **UNSUPPORTED[content]))
    asked = await desk.expect(
        who.id, since, lambda c: text(c) == words("kk", "limits.unsupported.file")
    )
    since = desk.mark()
    await desk.press(who, who.id, message_id(asked), buttons(asked)[words("kk", "evidence.skip")])
    await desk.expect(who.id, since, lambda c: text(c) == words("kk", "identity.ask"))
    # And where the identity is asked for; the dialog goes on to the end.
    since = desk.mark()
    await desk.api.offer(with_content(desk, who, **UNSUPPORTED[content]))
    await desk.expect(who.id, since, lambda c: text(c) == words("kk", "identity.expect"))
    await share_own_contact_and_confirm(desk, who, "kk")
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    assert view.fields["correction"] == "Фамилия Ахметқызы"


# -- buttons nobody should press ---------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        "garbage",
        "",
        "kind",  # an old format: no value
        "st:approve",  # a staff button missing its reference
        "sum:confirm:extra:parts",
        "cx:DSR-2026-000001:maybe:0",  # not a boolean
        "\u202e<b>&amp;</b>",
    ],
)
async def test_unknown_button_data_is_answered_and_changes_nothing(
    desk: Desk, service: RequestService, data: str
) -> None:
    (reference,) = await open_for(service, ALICE_ID, 1)
    await desk.expect(ALICE_ID, 0, lambda c: reference in text(c))  # the acknowledgement
    start = desk.mark()
    who = person("en")
    for chat in (ALICE_ID, STAFF_CHAT):
        presser = who if chat == ALICE_ID else Person(STAFF_ID, first_name="Dana")
        since = desk.mark()
        await desk.press(presser, chat, 1, data)
        answer = await answered(desk, since)
        language = "en" if chat == ALICE_ID else "ru"
        assert answer.params.get("text") == words(language, "limits.button_unknown")
    assert (await service.get(reference)).status == "awaiting_verification"
    assert texts_to(desk, ALICE_ID, start) == [] and texts_to(desk, STAFF_CHAT, start) == []


async def test_a_forged_staff_button_from_a_stranger_changes_nothing_in_either_chat(
    desk: Desk, service: RequestService
) -> None:
    (reference,) = await open_for(service, BOB_ID, 1)
    await service.verify_by_contact(
        reference, sender_user_id=BOB_ID, contact_user_id=BOB_ID, phone="+77011234567"
    )
    stranger = person("en")
    for action in ("take", "approve", "reject", "complete", "evidence", "nonsense"):
        forged = StaffAction(action=action, reference=reference).pack()
        since = desk.mark()
        await desk.press(stranger, STAFF_CHAT, 1, forged)
        alert = await answered(desk, since)
        assert alert.params.get("show_alert") is True
        assert alert.params.get("text") == words("ru", "staff.not_allowed")
        since = desk.mark()
        await desk.press(stranger, ALICE_ID, 1, forged)
        answer = await answered(desk, since)
        assert answer.params.get("text") == words("en", "limits.button_unknown")
    view = await service.get(reference, with_events=True)
    assert (view.status, view.assignee_name) == ("verified", None)
    assert texts_to(desk, ALICE_ID) == []
    assert not [c for c in desk.api.calls() if "force_reply" in str(c.params)]


async def test_a_kind_button_with_an_unknown_kind_changes_nothing(
    desk: Desk, service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    who = person("en")
    since = desk.mark()
    await desk.send(who, "/start")
    await desk.expect(who.id, since, lambda c: bool(buttons(c)))
    since = desk.mark()

    await desk.press(who, who.id, 1, KindChoice(kind="delete_everything").pack())

    answer = await answered(desk, since)
    assert answer.params.get("text") == words("en", "limits.button_unknown")
    assert texts_to(desk, ALICE_ID, since) == []
    # Still at the choice of kind: a real kind goes on as usual.
    await desk.press(who, who.id, 1, KindChoice(kind="complaint").pack())
    await desk.expect(who.id, since, lambda c: text(c) == words("en", "ask.text.complaint"))


async def test_cancelling_someone_elses_request_is_refused(
    desk: Desk, service: RequestService
) -> None:
    (reference,) = await open_for(service, BOB_ID, 1)
    mallory = person("en")
    for data in (
        CancelPick(reference=reference).pack(),
        CancelPick(reference=reference, confirm=True).pack(),
        CancelPick(reference=reference, keep=True).pack(),
        CancelPick(reference="DSR-2026-999999", confirm=True).pack(),
    ):
        since = desk.mark()
        await desk.press(mallory, ALICE_ID, 1, data)
        alert = await answered(desk, since)
        assert alert.params.get("text") == words("en", "limits.not_yours")
        assert alert.params.get("show_alert") is True
    assert (await service.get(reference)).status == "awaiting_verification"
    assert texts_to(desk, ALICE_ID) == []
    with pytest.raises(Exception, match="someone else"):
        await service.cancel(reference, Actor.person_telegram(ALICE_ID))


async def test_a_language_button_with_an_unknown_code_changes_nothing(desk: Desk) -> None:
    who = person("ru")
    since = desk.mark()
    await desk.press(who, ALICE_ID, 1, LanguageChoice(code="xx").pack())
    await answered(desk, since)
    await desk.press(who, ALICE_ID, 1, LanguageChoice(code="<b>").pack())
    assert desk.channel is not None
    storage = desk.channel.dispatcher.storage
    bot_id = int(desk.api.token.split(":")[0])
    key = StorageKey(bot_id=bot_id, chat_id=ALICE_ID, user_id=ALICE_ID, destiny="prefs")
    assert (await storage.get_data(key)).get("language") is None
    await desk.send(who, "/help", expect=words("ru", "help"))
    assert texts_to(desk, ALICE_ID, since) == [words("ru", "help")]


# -- markup in every field ---------------------------------------------------------------------

NASTY = '<b>bold</b> <a href="http://evil.example/">x</a> & *star* _under_ `tick` [l](http://e.x)'
TELEGRAM_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "tg-emoji",
    "code",
    "pre",
    "blockquote",
}
_BARE_AMPERSAND = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")


class TelegramHTML(HTMLParser):
    """Checks a text the way Telegram's HTML parse mode reads it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            self.problems.append(f"<{tag}> is not a Telegram tag")
        if tag == "a":
            self.hrefs.extend(value or "" for name, value in attrs if name == "href")
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.problems.append(f"</{tag}> closes nothing open")

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self.problems.append(f"&{name}; is not a Telegram entity")


def telegram_problems(value: str) -> list[str]:
    parser = TelegramHTML()
    parser.feed(value)
    parser.close()
    problems = list(parser.problems)
    if parser.open:
        problems.append(f"left open: {parser.open}")
    if _BARE_AMPERSAND.search(value):
        problems.append("a bare &")
    problems += [f"a link to {href}" for href in parser.hrefs if "evil" in href]
    return problems


async def test_markup_in_every_field_reaches_every_chat_escaped(
    desk: Desk, service: RequestService
) -> None:
    who = Person(ALICE_ID, first_name=NASTY, last_name=NASTY, language_code="en")
    staff = Person(STAFF_ID, first_name=NASTY, last_name="& Co")
    # Every question of the withdrawal, then a correction with a file.
    await start_kind(desk, who, RequestKind.WITHDRAW_CONSENT, "en")
    since = desk.mark()
    await desk.expect(who.id, since - 2, lambda c: text(c) == words("en", "ask.full_name"))
    for _ in range(3):
        since = desk.mark()
        await desk.send(who, NASTY)
        await desk.expect(who.id, since)
    await share_own_contact_and_confirm(desk, who, "en")
    await start_kind(desk, who, RequestKind.RECTIFY, "en")
    since = desk.mark()
    await desk.send(who, NASTY)
    await desk.expect(who.id, since, lambda c: text(c) == words("en", "ask.evidence"))
    file = desk.api.register_file(b"%PDF-1.4")
    since = desk.mark()
    await desk.api.offer(desk.api.document_message(who, file, file_name=NASTY, caption=NASTY))
    received = await desk.expect(who.id, since, lambda c: bool(buttons(c)))
    since = desk.mark()
    await desk.press(
        who, who.id, message_id(received), buttons(received)[words("en", "evidence.done")]
    )
    await desk.expect(who.id, since, lambda c: text(c) == words("en", "identity.ask"))
    await share_own_contact_and_confirm(desk, who, "en")
    views = await service.list_requests(telegram_user_id=ALICE_ID)
    assert len(views) == 2
    # Staff take one, ask a question full of markup; the person answers with a captioned photo.
    reference = views[-1].reference
    card = await desk.expect(
        STAFF_CHAT, 0, lambda c: reference in text(c), methods=("sendMessage",)
    )
    since = desk.mark()
    await desk.press(
        staff, STAFF_CHAT, message_id(card), StaffAction(action="take", reference=reference).pack()
    )
    await desk.expect(STAFF_CHAT, since, lambda c: "&amp; Co" in text(c))
    since = desk.mark()
    await desk.press(
        staff, STAFF_CHAT, message_id(card), StaffAction(action="ask", reference=reference).pack()
    )
    prompt = await desk.expect(STAFF_CHAT, since, lambda c: "force_reply" in str(c.params))
    since = desk.mark()
    await desk.api.offer(
        desk.api.group_message(staff, STAFF_CHAT, NASTY, reply_to_message=prompt.result)
    )
    # The question is shown back to staff first; Send passes it on.
    preview = await desk.expect(STAFF_CHAT, since, lambda c: bool(buttons(c)))
    since = desk.mark()
    send = buttons(preview)[words("ru", "staff.draft.send")]
    await desk.press(staff, STAFF_CHAT, message_id(preview), send)
    await desk.expect(
        ALICE_ID, since, lambda c: html.escape(NASTY) in text(c) or "&lt;b&gt;" in text(c)
    )
    photo = desk.api.register_file(b"\xff\xd8\xff jpeg")
    since = desk.mark()
    await desk.api.offer(desk.api.photo_message(who, photo, caption=NASTY))
    await desk.expect(
        ALICE_ID, since, lambda c: text(c) == words("en", "reply.added", reference=reference)
    )
    await desk.expect(STAFF_CHAT, since, lambda c: reference in text(c), methods=("sendMessage",))
    # The lists and the lookups.
    for command in ("/queue", "/overdue", f"/find {reference}", f"/find {NASTY}", "/stats"):
        since = desk.mark()
        await desk.api.offer(desk.api.group_message(staff, STAFF_CHAT, command))
        await desk.expect(STAFF_CHAT, since)
    await desk.send(who, "/status")
    await desk.send(who, "/cancel")
    await desk.expect(ALICE_ID, since, lambda c: text(c) == words("en", "cancel.pick"))

    produced = [
        c
        for c in desk.api.calls()
        if c.method in ("sendMessage", "editMessageText", "sendDocument", "sendPhoto")
    ]
    shown = [str(c.params.get("text") or c.params.get("caption") or "") for c in produced]
    assert {value: telegram_problems(value) for value in shown if telegram_problems(value)} == {}
    assert not any(NASTY in value for value in shown)
    # The person's words are there, escaped: on the summary, the card and the question.
    readable = [html.unescape(value) for value in shown]
    assert sum(NASTY in value for value in readable) >= 3
    assert all(c.params.get("parse_mode") in ("HTML", None) for c in produced)


async def test_the_email_acknowledgement_escapes_markup_in_its_html_part(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    view = await service.open_request(
        kind="withdraw_consent",
        channel="email",
        language="en",
        fields={"full_name": NASTY, "data_concerned": NASTY, "postal_address": NASTY},
        email="aigerim@example.kz",
        body=NASTY,
        external_id="<nasty@example.kz>",
        send_code_to_email=True,
    )
    async with sessions() as session:
        acknowledgement = (await session.scalars(select(OutboxItem))).one()
    code = str(vault.decrypt_json(acknowledgement.params_enc)["code"])
    person_by_mail = Actor.person_email("aigerim@example.kz")
    assert (
        await service.verify_by_code(view.reference, code, person_by_mail)
    ).outcome.value == "ok"
    await service.ask_info(view.reference, Actor.staff(STAFF_ID, NASTY), NASTY)
    sender = sender_for(smtp_server, service, clock)
    dispatcher = OutboxDispatcher(sessions, vault, clock, {Channel.EMAIL: sender})
    while await dispatcher.run_once():
        pass

    assert len(smtp_server.letters) == 3  # the acknowledgement, verified, the question
    for received in smtp_server.letters:
        part = received.message.get_body(("html",))
        assert part is not None
        body = part.get_content()
        tags = re.findall(r"<\s*/?\s*([a-zA-Z!][\w-]*)", body)
        assert set(tags) <= {"!DOCTYPE", "html", "head", "meta", "body", "p", "br"}
        assert 'evil.example/">' not in body
        assert not _BARE_AMPERSAND.search(body)
    # The staff member's question is quoted to the person, escaped.
    question = smtp_server.letters[-1].message.get_body(("html",))
    assert question is not None and html.escape(NASTY) in question.get_content()
