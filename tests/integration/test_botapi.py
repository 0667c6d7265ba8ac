"""The Bot API stand-in speaks well enough for a real aiogram Bot and Dispatcher."""

from __future__ import annotations

import asyncio

import pytest
from aiogram import Dispatcher, F, Router
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message

from tests.botapi import BotAPI, Person

ALICE = Person(700100, language_code="kk")


def echo() -> Router:
    router = Router(name=__name__)

    @router.message(F.text)
    async def repeat(message: Message) -> None:
        await message.answer(f"<b>{message.text}</b>", parse_mode="HTML")

    return router


async def test_an_offered_update_reaches_a_polling_dispatcher_and_its_reply_is_recorded(
    api: BotAPI,
) -> None:
    dispatcher = Dispatcher()
    dispatcher.include_router(echo())
    async with api.bot() as bot:
        polling = asyncio.create_task(
            dispatcher.start_polling(
                bot, polling_timeout=1, handle_signals=False, close_bot_session=False
            )
        )
        try:
            await api.offer(api.private_message(ALICE, "сәлем", language_code="kk"))
            call = await api.wait_for("sendMessage", lambda c: c.chat_id == ALICE.id)
        finally:
            await asyncio.wait_for(dispatcher.stop_polling(), timeout=5)
            await asyncio.wait_for(polling, timeout=5)

    assert call.params["text"] == "<b>сәлем</b>"
    assert call.params["parse_mode"] == "HTML"
    assert [c.method for c in api.calls("getMe")] == ["getMe"]


async def test_a_429_reaches_aiogram_as_retry_after(api: BotAPI) -> None:
    api.fail_next("sendMessage", status=429, retry_after=7)
    async with api.bot() as bot:
        with pytest.raises(TelegramRetryAfter) as caught:
            await bot.send_message(ALICE.id, "hello")
        sent = await bot.send_message(ALICE.id, "hello")

    assert caught.value.retry_after == 7
    assert [c.error is None for c in api.attempts("sendMessage")] == [False, True]
    assert sent.message_id == api.calls("sendMessage")[0].result["message_id"]


async def test_failures_can_be_aimed_at_one_chat(api: BotAPI) -> None:
    api.fail_next("sendMessage", status=403, chat_id=ALICE.id)
    async with api.bot() as bot:
        await bot.send_message(-100500, "to the staff")
        with pytest.raises(TelegramForbiddenError, match="blocked"):
            await bot.send_message(ALICE.id, "to Alice")

    assert [c.chat_id for c in api.sent_to(-100500)] == [-100500]
    assert api.sent_to(ALICE.id) == []


async def test_markup_is_decoded_and_edits_keep_the_message_id(api: BotAPI) -> None:
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Take", callback_data="take:1")]]
    )
    async with api.bot() as bot:
        card = await bot.send_message(-100500, "card", reply_markup=keyboard)
        edited = await bot.edit_message_text(
            "card v2", chat_id=-100500, message_id=card.message_id, reply_markup=keyboard
        )

    [sent] = api.calls("sendMessage")
    assert sent.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Take", "callback_data": "take:1"}]]
    }
    assert isinstance(edited, Message) and edited.message_id == card.message_id
    assert api.calls("editMessageText")[0].params["message_id"] == card.message_id


async def test_a_registered_file_can_be_fetched_and_downloaded(api: BotAPI) -> None:
    stored = api.register_file(b"%PDF-1.7 passport scan", file_path="documents/passport.pdf")
    update = api.document_message(ALICE, stored)
    async with api.bot() as bot:
        file = await bot.get_file(update["message"]["document"]["file_id"])
        assert file.file_path is not None
        content = await bot.download_file(file.file_path)

    assert content is not None and content.read() == b"%PDF-1.7 passport scan"


async def test_a_long_poll_returns_when_an_update_arrives(api: BotAPI) -> None:
    async with api.bot() as bot:
        waiting = asyncio.create_task(bot.get_updates(offset=0, timeout=30))
        await api.offer(api.callback_query(ALICE, ALICE.id, 1000, "cancel"))
        [update] = await asyncio.wait_for(waiting, timeout=5)
        assert update.callback_query is not None and update.callback_query.data == "cancel"
        assert await bot.get_updates(offset=update.update_id + 1, timeout=0) == []


async def test_a_text_over_telegrams_limit_after_entities_parsing_is_refused(api: BotAPI) -> None:
    # 4096 visible characters pass however much markup carries them; one more does not.
    at_limit = "<b>" + "&lt;" * 4000 + "</b>" + "x" * 96
    async with api.bot() as bot:
        await bot.send_message(ALICE.id, at_limit, parse_mode="HTML")
        with pytest.raises(TelegramBadRequest, match="message is too long"):
            await bot.send_message(ALICE.id, at_limit + "y", parse_mode="HTML")
        with pytest.raises(TelegramBadRequest, match="caption is too long"):
            await bot.send_photo(ALICE.id, "FILE", caption="c" * 1025)

    assert [c.error is None for c in api.attempts("sendMessage")] == [True, False]


async def test_a_person_who_blocked_the_bot_gets_nothing_until_they_unblock_it(
    api: BotAPI,
) -> None:
    api.block(ALICE.id)
    async with api.bot() as bot:
        with pytest.raises(TelegramForbiddenError, match="blocked"):
            await bot.send_message(ALICE.id, "one")
        with pytest.raises(TelegramForbiddenError, match="blocked"):
            await bot.send_message(ALICE.id, "two")
        await bot.send_message(ALICE.id + 1, "to someone else")
        api.unblock(ALICE.id)
        await bot.send_message(ALICE.id, "three")

    assert [c.params["text"] for c in api.sent_to(ALICE.id)] == ["three"]
