"""The demo page's server on 127.0.0.1, over HTTP: what it serves and what it refuses.

The page itself is driven in Chromium in tests/e2e/test_demo.py; here its
endpoints, without a desk behind them: the page loads nothing from elsewhere,
actions come only as JSON (a form on another site cannot post them), and a
button that is not on the message is not pressed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from aina_dsr.demo.botapi import BotAPI
from aina_dsr.demo.chats import Chats
from aina_dsr.demo.mailroom import Mailroom
from aina_dsr.demo.page import DemoPage
from aina_dsr.demo.telegram_types import Person
from workflows.i18n import catalogue

AIGERIM = Person(700001, first_name="Aigerim")
STAFF = (Person(5001, first_name="Dana"), Person(5002, first_name="Arman"))
GROUP = -100500


@pytest.fixture
async def page() -> AsyncIterator[DemoPage]:
    async with BotAPI() as api:
        page = DemoPage(
            chats=Chats(
                api, customer=AIGERIM, phone="+77011234567", staff=STAFF, staff_chat_id=GROUP
            ),
            mailroom=Mailroom("aina.app@mercury.kz"),
            files=api,
            writer="Aigerim <aigerim@example.kz>",
        )
        await page.start()
        try:
            yield page
        finally:
            await page.stop()


async def test_the_page_loads_nothing_from_elsewhere(page: DemoPage) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", page.url)
    async with aiohttp.ClientSession() as client, client.get(page.url) as answer:
        html = await answer.text()
        policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    # No script, style, font or picture from another address.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)


async def test_actions_come_as_json_only_and_reach_the_desk(page: DemoPage) -> None:
    async with aiohttp.ClientSession() as client:
        form = {"from": "x@example.kz", "subject": "s", "body": "b"}
        async with client.post(page.url + "api/mail", data=form) as answer:
            assert answer.status == 415
        assert page.mailroom.letters == []
        letter = {"from": "Aigerim <aigerim@example.kz>", "subject": "Запрос", "body": "<b>"}
        async with client.post(page.url + "api/mail", json=letter) as answer:
            assert answer.status == 200
        async with client.get(page.url + "api/state") as answer:
            state = await answer.json()
    (shown,) = state["mail"]
    assert (shown["direction"], shown["subject"], shown["text"]) == ("in", "Запрос", "<b>")
    assert page.mailroom.mailbox.new_uids(0) == [1]


async def test_a_button_that_is_not_there_is_not_pressed(page: DemoPage) -> None:
    async with aiohttp.ClientSession() as client:
        press = {"pane": "staff", "bubble": 1, "data": "s:approve:DSR-2026-000001"}
        async with client.post(page.url + "api/press", json=press) as answer:
            assert answer.status == 409
        async with client.get(page.url + "files/telegram/FILE000404") as answer:
            assert answer.status == 404
    assert page.chats.api._state.updates == []


async def test_the_pages_words_in_three_languages(page: DemoPage) -> None:
    async with aiohttp.ClientSession() as client, client.get(page.url + "api/labels") as answer:
        labels = await answer.json()
    assert set(labels) == {"kk", "ru", "en"}
    assert labels["kk"]["staff"] == catalogue().text("kk", "demo.staff")
    assert labels["ru"]["send_letter"] == "Отправить письмо"


async def test_a_file_the_customer_sends_reaches_the_bot_as_telegram_delivers_it(
    page: DemoPage,
) -> None:
    pdf = b"%PDF-1.7 passport scan"
    sent = {
        "name": "passport.pdf",
        "type": "application/pdf",
        "data": base64.b64encode(pdf).decode(),
    }
    async with aiohttp.ClientSession() as client:
        async with client.post(page.url + "api/customer/file", json=sent) as answer:
            assert answer.status == 200
        async with client.post(
            page.url + "api/customer/file", json={**sent, "data": "not base64!"}
        ) as answer:
            assert answer.status == 400
    (update,) = page.chats.api._state.updates
    document = update["message"]["document"]
    assert (document["file_name"], document["mime_type"]) == ("passport.pdf", "application/pdf")
    stored = page.chats.api.file(document["file_id"])
    assert stored is not None and stored.content == pdf
    (bubble,) = page.chats.panes["customer"].bubbles
    assert bubble.document == {"name": "passport.pdf", "file_id": document["file_id"]}
