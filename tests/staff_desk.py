"""Staff in the group, step by step: a request's card, a press, a prompt answered, a preview."""

from __future__ import annotations

from bot.callbacks import StaffAction
from tests.botapi import Call, Person
from tests.conftest import STAFF_ID
from tests.telegram_desk import STAFF_CHAT, Desk, buttons, message_id, words
from tests.telegram_dialog import text
from workflows.requests.service import RequestService

DANA = Person(STAFF_ID, first_name="Dana")
ARMAN = Person(5002, first_name="Arman")


async def the_card(desk: Desk, reference: str) -> Call:
    """The card the group was first sent for the request."""
    return await desk.expect(
        STAFF_CHAT, 0, lambda c: reference in text(c), methods=("sendMessage",)
    )


async def card_of(desk: Desk, reference: str) -> Call:
    """The first message to the group about the request that has buttons (its card)."""
    return await desk.expect(
        STAFF_CHAT, 0, lambda c: reference in text(c) and "reply_markup" in c.params
    )


async def press_button(desk: Desk, who: Person, message: Call, data: str) -> Call:
    """``who`` presses a button of ``message`` in the staff group; the bot's answer to it."""
    since = desk.mark()
    await desk.api.offer(desk.api.callback_query(who, STAFF_CHAT, message_id(message), data))
    answer = await desk.api.wait_until(
        lambda calls: next((c for c in calls[since:] if c.method == "answerCallbackQuery"), None)
    )
    assert answer is not None
    return answer


async def press(desk: Desk, who: Person, card: Call, action: str, reference: str) -> Call:
    """``who`` presses ``action`` on the card; returns the bot's answer to the press."""
    data = StaffAction(action=action, reference=reference).pack()
    return await press_button(desk, who, card, data)


async def staff_presses(desk: Desk, who: Person, card: Call, action: str, reference: str) -> int:
    """``who`` presses Reject or Ask on the card; returns the mark before the press."""
    since = desk.mark()
    data = StaffAction(action=action, reference=reference).pack()
    await desk.press(who, STAFF_CHAT, message_id(card), data)
    return since


async def prompt_for(desk: Desk, since: int, msgid: str, reference: str) -> Call:
    """The bot's ForceReply prompt for a reason or a question, with its placeholder."""
    prompt = await desk.expect(
        STAFF_CHAT, since, lambda c: text(c) == words("ru", msgid, reference=reference)
    )
    placeholder = msgid.replace(".prompt", ".placeholder")
    assert prompt.params["reply_markup"] == {
        "force_reply": True,
        "input_field_placeholder": words("ru", placeholder),
        "selective": True,
    }
    assert len(words("ru", placeholder)) <= 64  # Telegram's limit for a placeholder
    return prompt


async def answer_prompt(desk: Desk, who: Person, prompt: Call, typed: str) -> Call:
    """``who`` replies to the prompt; returns the preview the bot shows back, with its buttons."""
    since = desk.mark()
    await desk.api.offer(
        desk.api.group_message(who, STAFF_CHAT, typed, reply_to_message=prompt.result)
    )
    send = words("ru", "staff.draft.send")
    # The preview is the message with Send under it (a card re-sent meanwhile has buttons too).
    return await desk.expect(STAFF_CHAT, since, lambda c: send in buttons(c))


async def press_draft(desk: Desk, who: Person, preview: Call, button_msgid: str) -> Call:
    """``who`` presses Send, Edit or Cancel under a preview; returns the answer to the press."""
    return await press_button(desk, who, preview, buttons(preview)[words("ru", button_msgid)])


async def staff_words(service: RequestService, reference: str) -> list[str | None]:
    """What staff said to the person about the request (a reason, a question)."""
    return [
        body for direction, _, body in await service.messages(reference) if direction == "staff"
    ]
