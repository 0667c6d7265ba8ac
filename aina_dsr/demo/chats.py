"""The demo's two Telegram chats as the page shows them, built from what the real Bot called.

The Bot API stand-in records every call the desk's Bot makes; :class:`Chats`
reads them in order and keeps, per chat (the customer's private chat and the
staff group), the messages a Telegram client would show: sent, edited (text
and buttons), deleted, documents, the reply keyboard and button answers. What
a person does in the page (types, presses a button, shares the contact,
answers a prompt) becomes the update Telegram would deliver.

Texts are Telegram HTML; :func:`segments` turns one into runs of plain text
with their styles, so the page builds them with ``textContent``: nothing a
message holds is ever read as HTML by the browser.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from aina_dsr.demo.botapi import BotAPI
from aina_dsr.demo.telegram_types import Call, Person

CUSTOMER = "customer"
STAFF = "staff"
# The Telegram HTML tags a message may hold, and the style each gives its text.
_STYLES = {
    "b": "b",
    "strong": "b",
    "i": "i",
    "em": "i",
    "u": "u",
    "ins": "u",
    "s": "s",
    "strike": "s",
    "del": "s",
    "code": "code",
    "pre": "code",
    "tg-spoiler": "spoiler",
    "blockquote": "quote",
    "a": "a",
}


class _Segments(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.runs: list[dict[str, Any]] = []
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        style = _STYLES.get(tag)
        if style is not None:
            href = dict(attrs).get("href") if tag == "a" else None
            self._open.append((style, href))

    def handle_endtag(self, tag: str) -> None:
        style = _STYLES.get(tag)
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == style:
                del self._open[index]
                break

    def handle_data(self, data: str) -> None:
        run: dict[str, Any] = {"t": data, "s": sorted({style for style, _ in self._open})}
        href = next((h for s, h in reversed(self._open) if s == "a" and h), None)
        if href and href.startswith(("https://", "http://", "mailto:", "tel:")):
            run["href"] = href
        self.runs.append(run)


def segments(text: str, parse_mode: str | None = "HTML") -> list[dict[str, Any]]:
    """Runs ``{"t": text, "s": [styles], "href"?: url}`` of a Telegram text, tags read."""
    if not parse_mode or parse_mode.upper() != "HTML":
        return [{"t": text, "s": []}]
    parser = _Segments()
    parser.feed(text)
    parser.close()
    return parser.runs


@dataclass
class Bubble:
    """One message in a chat pane."""

    id: int  # the page's own number
    author: str  # "bot", or the person's name
    runs: list[dict[str, Any]]
    message_id: int | None = None  # Telegram's, for the bot's messages
    buttons: list[list[dict[str, str]]] = field(default_factory=list)
    force_reply: bool = False
    document: dict[str, str] | None = None
    note: bool = False  # an answer to a button press, shown as a line of its own
    raw: dict[str, Any] | None = None  # the Message as sent, for a reply to it

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "author": self.author,
            "bot": self.author == "bot",
            "runs": self.runs,
            "buttons": self.buttons,
            "force_reply": self.force_reply,
            "document": self.document,
            "note": self.note,
        }


@dataclass
class Conversation:
    """A chat pane: its messages, and the reply keyboard under the customer's input."""

    bubbles: list[Bubble] = field(default_factory=list)
    keyboard: list[list[dict[str, Any]]] = field(default_factory=list)
    one_time: bool = False  # the keyboard hides once used, as Telegram's clients do

    def used_keyboard(self) -> None:
        if self.one_time:
            self.keyboard, self.one_time = [], False

    def by_message(self, message_id: int) -> Bubble | None:
        return next((b for b in self.bubbles if b.message_id == message_id), None)

    def as_json(self) -> dict[str, Any]:
        return {"bubbles": [b.as_json() for b in self.bubbles], "keyboard": self.keyboard}


def inline_buttons(markup: Any) -> list[list[dict[str, str]]]:
    """An inline keyboard's rows as ``{"text", "data"}`` or ``{"text", "url"}``."""
    if not isinstance(markup, dict):
        return []
    rows = []
    for row in markup.get("inline_keyboard") or []:
        buttons = []
        for button in row:
            entry = {"text": str(button.get("text", ""))}
            if button.get("callback_data") is not None:
                entry["data"] = str(button["callback_data"])
            elif button.get("url"):
                entry["url"] = str(button["url"])
            buttons.append(entry)
        rows.append(buttons)
    return rows


def reply_keyboard(markup: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """A reply keyboard's rows as ``{"text", "contact"}`` (the button shares the contact)."""
    return [
        [
            {"text": str(b.get("text", "")), "contact": bool(b.get("request_contact"))}
            if isinstance(b, dict)
            else {"text": str(b), "contact": False}
            for b in row
        ]
        for row in markup.get("keyboard") or []
    ]


class Chats:
    """The customer's chat and the staff group, kept up with the Bot's calls (see module)."""

    def __init__(
        self,
        api: BotAPI,
        *,
        customer: Person,
        phone: str,
        staff: tuple[Person, ...],
        staff_chat_id: int,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.api = api
        self.customer = customer
        self.phone = phone
        self.staff = staff
        self.staff_chat_id = staff_chat_id
        self.panes = {CUSTOMER: Conversation(), STAFF: Conversation()}
        self._seen = 0
        self._numbers = itertools.count(1)
        self._presses: dict[str, str] = {}  # callback query id -> pane
        self.on_change = on_change

    # -- what the page reads ---------------------------------------------------

    def sync(self) -> None:
        """Take in the Bot's calls since the last look."""
        calls = self.api.calls()
        new, self._seen = calls[self._seen :], len(calls)
        for call in new:
            self._apply(call)
        if new and self.on_change is not None:
            self.on_change()

    def _pane_of(self, chat_id: Any) -> Conversation | None:
        if str(chat_id) == str(self.customer.id):
            return self.panes[CUSTOMER]
        if str(chat_id) == str(self.staff_chat_id):
            return self.panes[STAFF]
        return None

    def _apply(self, call: Call) -> None:
        method = call.method.lower()
        if method == "answercallbackquery":
            self._answered(call)
            return
        pane = self._pane_of(call.chat_id)
        if pane is None:
            return
        params = call.params
        if method in {"sendmessage", "senddocument", "sendphoto"}:
            self._sent(pane, call)
        elif method in {"editmessagetext", "editmessagecaption", "editmessagereplymarkup"}:
            bubble = pane.by_message(int(params.get("message_id") or 0))
            if bubble is None:
                return
            if method != "editmessagereplymarkup":
                text = params.get("text", params.get("caption", ""))
                bubble.runs = segments(str(text), params.get("parse_mode"))
            # As Telegram does: an edit without a keyboard takes the old one away.
            bubble.buttons = inline_buttons(params.get("reply_markup"))
        elif method == "deletemessage":
            bubble = pane.by_message(int(params.get("message_id") or 0))
            if bubble is not None:
                pane.bubbles.remove(bubble)
        elif method in {"forwardmessage", "copymessage"}:
            pane.bubbles.append(self._bubble("bot", [{"t": "↪ …", "s": ["i"]}], note=True))

    def _sent(self, pane: Conversation, call: Call) -> None:
        params, result = call.params, call.result if isinstance(call.result, dict) else {}
        text = params.get("text", params.get("caption", "")) or ""
        bubble = self._bubble("bot", segments(str(text), params.get("parse_mode")))
        bubble.message_id = int(result.get("message_id") or 0) or None
        bubble.raw = result
        markup = params.get("reply_markup")
        bubble.buttons = inline_buttons(markup)
        if isinstance(markup, dict):
            bubble.force_reply = bool(markup.get("force_reply"))
            if "keyboard" in markup:
                pane.keyboard = reply_keyboard(markup)
                pane.one_time = bool(markup.get("one_time_keyboard"))
            elif markup.get("remove_keyboard"):
                pane.keyboard = []
        for kind in ("document", "photo"):
            sent = result.get(kind)
            if isinstance(sent, list):
                sent = sent[-1] if sent else None
            if isinstance(sent, dict):
                name = sent.get("file_name") or kind
                bubble.document = {"name": str(name), "file_id": str(sent.get("file_id"))}
        pane.bubbles.append(bubble)

    def _answered(self, call: Call) -> None:
        pane_name = self._presses.pop(str(call.params.get("callback_query_id")), None)
        text = call.params.get("text")
        if pane_name is None or not text:
            return
        mark = "⚠ " if call.params.get("show_alert") else "ⓘ "
        self.panes[pane_name].bubbles.append(
            self._bubble("bot", [{"t": mark + str(text), "s": ["i"]}], note=True)
        )

    def _bubble(self, author: str, runs: list[dict[str, Any]], *, note: bool = False) -> Bubble:
        return Bubble(id=next(self._numbers), author=author, runs=runs, note=note)

    def _said(self, pane: str, who: Person, text: str) -> None:
        self.sync()  # what the Bot said before comes first
        self.panes[pane].bubbles.append(self._bubble(who.first_name, [{"t": text, "s": []}]))
        if self.on_change is not None:
            self.on_change()

    # -- what a person does in the page -----------------------------------------

    def staff_member(self, index: int) -> Person:
        return self.staff[index] if 0 <= index < len(self.staff) else self.staff[0]

    async def customer_says(self, text: str) -> None:
        self._said(CUSTOMER, self.customer, text)
        self.panes[CUSTOMER].used_keyboard()
        await self.api.offer(self.api.private_message(self.customer, text))

    async def customer_shares_contact(self) -> None:
        """The contact card Telegram sends from the share button: the chat's own user's."""
        self._said(CUSTOMER, self.customer, f"☎ {self.phone}")
        self.panes[CUSTOMER].used_keyboard()
        await self.api.offer(self.api.contact_message(self.customer, self.customer.id, self.phone))

    async def customer_sends_file(self, name: str, content_type: str, data: bytes) -> None:
        """A photo or a document in the chat, as Telegram delivers it (the Bot fetches it)."""
        self.sync()
        stored = self.api.register_file(data, file_path=f"documents/{name}", file_name=name)
        bubble = self._bubble(self.customer.first_name, [])
        bubble.document = {"name": name, "file_id": stored.file_id}
        self.panes[CUSTOMER].bubbles.append(bubble)
        if self.on_change is not None:
            self.on_change()
        if content_type in {"image/jpeg", "image/png"}:
            update = self.api.photo_message(self.customer, stored)
        else:
            update = self.api.document_message(
                self.customer, stored, file_name=name, mime_type=content_type
            )
        await self.api.offer(update)

    async def staff_says(self, who: int, text: str, reply_to: int | None = None) -> None:
        """A staff member writes in the group; ``reply_to``: the bubble answered (a prompt)."""
        person = self.staff_member(who)
        prompt = next((b for b in self.panes[STAFF].bubbles if b.id == reply_to), None)
        self._said(STAFF, person, text)
        update = self.api.group_message(
            person,
            self.staff_chat_id,
            text,
            reply_to_message=prompt.raw if prompt is not None else None,
        )
        await self.api.offer(update)

    async def press(self, pane: str, bubble_id: int, data: str, who: int = 0) -> bool:
        """A button of the bot's message pressed; False when there is no such button."""
        conversation = self.panes.get(pane)
        if conversation is None:
            return False
        bubble = next((b for b in conversation.bubbles if b.id == bubble_id), None)
        if bubble is None or bubble.message_id is None:
            return False
        if not any(b.get("data") == data for row in bubble.buttons for b in row):
            return False
        person = self.customer if pane == CUSTOMER else self.staff_member(who)
        chat_id = self.customer.id if pane == CUSTOMER else self.staff_chat_id
        update = self.api.callback_query(person, chat_id, bubble.message_id, data)
        self._presses[str(update["callback_query"]["id"])] = pane
        await self.api.offer(update)
        return True

    def as_json(self) -> dict[str, Any]:
        return {name: pane.as_json() for name, pane in self.panes.items()}
