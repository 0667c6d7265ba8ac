"""The Bot API stand-in's vocabulary: people, calls, files, Telegram's limits, and updates.

What :mod:`aina_dsr.demo.botapi` records and answers, and :class:`UpdateMaker`, which
writes the updates a person's actions would make (a message, a contact, a button
press), as Telegram would deliver them.
"""

from __future__ import annotations

import html
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TOKEN = "424242:AAH-stand-in-token-for-tests_0123456789"  # noqa: S105 (the stand-in's own)
BOT_ID = 424242
BOT_USERNAME = "aina_privacy_desk_bot"
# Long polls never wait longer than this, whatever timeout the client asks for.
MAX_POLL_SECONDS = 2.0
# Parameters whose values are text even when they look like JSON or a number.
TEXT_FIELDS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_message_id",
        "file_id",
        "data",
        "url",
        "title",
        "description",
        "short_description",
        "name",
        "question",
        "explanation",
        "emoji",
        "phone_number",
        "first_name",
        "last_name",
        "secret_token",
        "query",
        "action",
        "business_connection_id",
        "message_effect_id",
    }
)
# Telegram's limits, in characters of the text after entities parsing.
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
# Methods that write into a chat: refused while the chat's person has blocked the bot.
WRITING = frozenset(
    {
        "sendmessage",
        "senddocument",
        "sendphoto",
        "editmessagetext",
        "editmessagereplymarkup",
        "editmessagecaption",
        "copymessage",
        "forwardmessage",
    }
)
_TAG = re.compile(r"<[^>]*>")
TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: message is not modified",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    500: "Internal Server Error",
}


@dataclass(frozen=True)
class Person:
    """A Telegram user as updates carry them."""

    id: int
    first_name: str = "Aigerim"
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None

    def as_dict(self, language_code: str | None = None) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        if language_code or self.language_code:
            user["language_code"] = language_code or self.language_code
        return user


@dataclass(frozen=True)
class StoredFile:
    """A file the test put on the server; updates refer to it by ``file_id``."""

    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes
    file_name: str | None = None  # as the upload named it


@dataclass(frozen=True)
class Call:
    """One request the bot made: its method, decoded parameters and uploaded files."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes]
    result: Any = None
    error: str | None = None

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")


@dataclass
class Failure:
    """An answer to give instead of success, to the next matching call(s)."""

    method: str
    status: int
    description: str
    retry_after: int | None
    chat_id: int | str | None
    times: int

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if self.method != method or self.times <= 0:
            return False
        return self.chat_id is None or str(params.get("chat_id")) == str(self.chat_id)


@dataclass
class CallLog:
    updates: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    files: dict[str, StoredFile] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)


def decode_param(key: str, value: Any) -> Any:
    if not isinstance(value, str) or key in TEXT_FIELDS:
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, dict | list | bool | int | float) else value


def visible_length(text: str, parse_mode: str | None) -> int:
    """The length Telegram checks: of the text after entities parsing, in characters."""
    if parse_mode and parse_mode.upper() == "HTML":
        text = html.unescape(_TAG.sub("", text))
    return len(text)


def refusal_of(method: str, params: dict[str, Any]) -> str | None:
    """Telegram's 400 for a text or caption over its limit, else ``None``."""
    name = method.lower()
    mode = params.get("parse_mode")
    if name in {"sendmessage", "editmessagetext"}:
        text = str(params.get("text") or "")
        if not text.strip():
            return "Bad Request: message text is empty"
        if visible_length(text, mode) > TEXT_LIMIT:
            return "Bad Request: message is too long"
    caption = params.get("caption")
    if caption is not None and visible_length(str(caption), mode) > CAPTION_LIMIT:
        return "Bad Request: message caption is too long"
    return None


def chat_of(chat_id: int | str) -> dict[str, Any]:
    if isinstance(chat_id, str) and not chat_id.lstrip("-").isdigit():
        return {"id": -1000000000001, "type": "channel", "title": chat_id, "username": chat_id}
    number = int(chat_id)
    if number > 0:
        return {"id": number, "type": "private", "first_name": "Aigerim"}
    return {"id": number, "type": "supergroup", "title": "AINA staff"}


class UpdateMaker:
    """The updates a person's actions make, as Telegram delivers them (a mixin of BotAPI)."""

    bot_id: int
    _message_ids: itertools.count[int]
    _callback_ids: itertools.count[int]

    def me(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "AINA Privacy Desk",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _message(
        self, user: Person | int, chat: dict[str, Any], language_code: str | None = None
    ) -> dict[str, Any]:
        person = user if isinstance(user, Person) else Person(user)
        return {
            "message_id": next(self._message_ids),
            "date": int(datetime.now(UTC).timestamp()),
            "chat": chat,
            "from": person.as_dict(language_code),
        }

    def _private_chat(self, user: Person | int) -> dict[str, Any]:
        person = user if isinstance(user, Person) else Person(user)
        return {"id": person.id, "type": "private", "first_name": person.first_name}

    def private_message(
        self, user: Person | int, text: str, *, language_code: str | None = None
    ) -> dict[str, Any]:
        """An update with a text message in the person's private chat with the bot."""
        message = self._message(user, self._private_chat(user), language_code)
        message["text"] = text
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return {"message": message}

    def contact_message(
        self, user: Person | int, contact_user_id: int | None, phone: str
    ) -> dict[str, Any]:
        """The person shares a contact card (their own when ``contact_user_id`` is their id)."""
        message = self._message(user, self._private_chat(user))
        contact: dict[str, Any] = {"phone_number": phone, "first_name": "Aigerim"}
        if contact_user_id is not None:
            contact["user_id"] = contact_user_id
        message["contact"] = contact
        return {"message": message}

    def photo_message(
        self, user: Person | int, file: StoredFile, *, caption: str | None = None
    ) -> dict[str, Any]:
        message = self._message(user, self._private_chat(user))
        message["photo"] = [
            {
                "file_id": file.file_id,
                "file_unique_id": file.file_unique_id,
                "width": 640,
                "height": 480,
                "file_size": len(file.content),
            }
        ]
        if caption is not None:
            message["caption"] = caption
        return {"message": message}

    def document_message(
        self,
        user: Person | int,
        file: StoredFile,
        *,
        file_name: str = "document.pdf",
        mime_type: str = "application/pdf",
        caption: str | None = None,
    ) -> dict[str, Any]:
        message = self._message(user, self._private_chat(user))
        message["document"] = {
            "file_id": file.file_id,
            "file_unique_id": file.file_unique_id,
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": len(file.content),
        }
        if caption is not None:
            message["caption"] = caption
        return {"message": message}

    def group_message(
        self,
        user: Person | int,
        chat_id: int,
        text: str,
        *,
        reply_to_message: dict[str, Any] | None = None,
        title: str = "AINA staff",
    ) -> dict[str, Any]:
        """A text message in a group; ``reply_to_message`` is a message dict (e.g. a sent one)."""
        chat = {"id": chat_id, "type": "supergroup", "title": title}
        message = self._message(user, chat)
        message["text"] = text
        if reply_to_message is not None:
            message["reply_to_message"] = reply_to_message
        return {"message": message}

    def callback_query(
        self, user: Person | int, chat_id: int, message_id: int, data: str
    ) -> dict[str, Any]:
        """A button press on the bot's message ``message_id`` in ``chat_id``."""
        person = user if isinstance(user, Person) else Person(user)
        message = {
            "message_id": message_id,
            "date": int(datetime.now(UTC).timestamp()),
            "chat": chat_of(chat_id),
            "from": self.me(),
            "text": "…",
        }
        return {
            "callback_query": {
                "id": str(next(self._callback_ids)),
                "from": person.as_dict(),
                "chat_instance": f"ci{chat_id}",
                "message": message,
                "data": data,
            }
        }
