"""The demo's parts without a browser: what its chat panes show, and its mail ends.

The whole demo is driven in a browser in tests/e2e/test_demo.py; here the
pieces the page relies on: a Telegram HTML text becomes plain runs (so
nothing a message holds is read as markup), the panes follow edits as a
Telegram client does, and a letter written in the page is one the desk's
parser reads back.
"""

from __future__ import annotations

import threading
from email.message import EmailMessage

from aina_dsr.demo.botapi import BotAPI
from aina_dsr.demo.chats import CUSTOMER, STAFF, Chats, segments
from aina_dsr.demo.mailroom import Mailroom, MemoryMailbox
from aina_dsr.demo.telegram_types import Call, Person
from mail.parsing import parse_mail

AIGERIM = Person(700001, first_name="Aigerim")
DANA = Person(5001, first_name="Dana")
GROUP = -100500


def test_telegram_html_becomes_plain_runs_and_escaped_text_stays_text() -> None:
    runs = segments(
        '<b>DSR-1</b> &lt;script&gt;alert(1)&lt;/script&gt; <a href="javascript:x">go</a>'
    )
    assert runs == [
        {"t": "DSR-1", "s": ["b"]},
        {"t": " <script>alert(1)</script> ", "s": []},
        {"t": "go", "s": ["a"]},  # no href: only web, mail and phone links are kept
    ]
    assert segments("<i>a <code>b</code></i>")[1] == {"t": "b", "s": ["code", "i"]}
    assert segments("1 < 2 <b>", parse_mode=None) == [{"t": "1 < 2 <b>", "s": []}]


def chats(api: BotAPI) -> Chats:
    return Chats(api, customer=AIGERIM, phone="+77011234567", staff=(DANA,), staff_chat_id=GROUP)


def sent(chat_id: int, message_id: int, text: str, markup: object = None) -> Call:
    params: dict[str, object] = {"chat_id": chat_id, "text": text, "parse_mode": "HTML"}
    if markup is not None:
        params["reply_markup"] = markup
    return Call("sendMessage", params, {}, {"message_id": message_id, "chat": {"id": chat_id}})


async def test_the_panes_follow_sends_and_edits_as_a_telegram_client_does() -> None:
    api = BotAPI()
    view = chats(api)
    card = {"inline_keyboard": [[{"text": "Взять", "callback_data": "s:take:DSR-1"}]]}
    api._state.calls += [
        sent(GROUP, 10, "<b>DSR-1</b>", card),
        sent(
            AIGERIM.id,
            11,
            "Поделитесь номером",
            {
                "keyboard": [[{"text": "Поделиться", "request_contact": True}]],
                "one_time_keyboard": True,
            },
        ),
    ]
    view.sync()
    (bubble,) = view.panes[STAFF].bubbles
    assert bubble.buttons == [[{"text": "Взять", "data": "s:take:DSR-1"}]]
    assert view.panes[CUSTOMER].keyboard == [[{"text": "Поделиться", "contact": True}]]
    # A button that is not on the message is not pressed.
    assert not await view.press(STAFF, bubble.id, "s:approve:DSR-1")
    assert await view.press(STAFF, bubble.id, "s:take:DSR-1")
    # Edited without a keyboard, the card has none any more.
    edit = {"chat_id": GROUP, "message_id": 10, "text": "<b>DSR-1</b> taken", "parse_mode": "HTML"}
    api._state.calls.append(Call("editMessageText", edit, {}, True))
    view.sync()
    assert (bubble.buttons, bubble.runs[-1]["t"]) == ([], " taken")
    # Sharing the contact sends the chat's own user's card and hides the one-time keyboard.
    await view.customer_shares_contact()
    assert view.panes[CUSTOMER].keyboard == []
    contact = api._state.updates[-1]["message"]["contact"]
    assert contact == {"phone_number": "+77011234567", "first_name": "Aigerim", "user_id": 700001}


def test_a_letter_written_in_the_page_is_one_the_desks_parser_reads() -> None:
    room = Mailroom("aina.app@mercury.kz")
    room.write("Айгерим <aigerim@example.kz>", "Запрос", "Прошу копию моих данных")
    (uid,) = room.mailbox.new_uids(0)
    parsed = parse_mail(room.mailbox.fetch_many([uid])[uid])
    assert (parsed.sender, parsed.sender_name, parsed.subject) == (
        "aigerim@example.kz",
        "Айгерим",
        "Запрос",
    )
    assert parsed.text.strip() == "Прошу копию моих данных"
    assert room.mailbox.envelopes([uid])[uid].sender == "aigerim@example.kz"


async def test_the_desks_letters_are_kept_with_their_attachments() -> None:
    room = Mailroom("aina.app@mercury.kz")
    letter = EmailMessage()
    letter["From"], letter["To"], letter["Subject"] = "aina.app@mercury.kz", "a@example.kz", "Отчёт"
    letter.set_content("Во вложении")
    letter.add_attachment(b"%PDF-1.7", maintype="application", subtype="pdf", filename="r.pdf")
    await room.take(letter)
    (kept,) = room.letters
    assert (kept.direction, kept.to, kept.text.strip()) == ("out", "a@example.kz", "Во вложении")
    (file,) = kept.attachments
    assert (file.filename, room.attachments[file.key].data) == ("r.pdf", b"%PDF-1.7")


def test_the_mailbox_wakes_a_waiting_poller_and_lets_it_stop() -> None:
    box = MemoryMailbox()
    stop = threading.Event()
    stop.set()
    assert box.wait_for_mail(30, stop) is False  # told to stop: returns at once
    box.put(b"From: a@example.kz\r\n\r\nhi")
    assert box.wait_for_mail(30, threading.Event()) is True


async def test_a_staff_answer_to_a_prompt_is_a_reply_to_the_prompt() -> None:
    api = BotAPI()
    view = chats(api)
    api._state.calls.append(sent(GROUP, 12, "Причина отказа?", {"force_reply": True}))
    view.sync()
    (prompt,) = view.panes[STAFF].bubbles
    assert prompt.force_reply
    await view.staff_says(0, "Нет оснований", reply_to=prompt.id)
    message = api._state.updates[-1]["message"]
    assert (message["chat"]["id"], message["from"]["id"], message["text"]) == (
        GROUP,
        DANA.id,
        "Нет оснований",
    )
    assert message["reply_to_message"]["message_id"] == 12
