"""The bot's words: the shared catalogue in the person's language, with the desk's details."""

from __future__ import annotations

import html
from typing import Any

from workflows.i18n import LANGUAGES, DeskInfo, catalogue, pick_language


class Texts:
    """``texts("msgid", name=value)`` in one language. Values must be escaped already."""

    def __init__(self, language: str, info: DeskInfo) -> None:
        self.language = language if language in LANGUAGES else pick_language(language)
        # Every text the bot sends is Telegram HTML: the desk's details (a setting may
        # hold "&" or "<") are escaped like any other value.
        self._context = {
            name: html.escape(value, quote=False)
            for name, value in info.context(self.language).items()
        }

    def __call__(self, msgid: str, **params: Any) -> str:
        return catalogue().text(self.language, msgid, **{**self._context, **params})

    def plural(self, msgid: str, n: int, **params: Any) -> str:
        """The form of a plural message that reads right with the number ``n``."""
        return catalogue().plural(self.language, msgid, n, **{**self._context, **params})
