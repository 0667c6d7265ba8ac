"""The bot's words: the shared catalogue in the person's language, with the desk's details."""

from __future__ import annotations

from typing import Any

from workflows.i18n import LANGUAGES, DeskInfo, catalogue, pick_language


class Texts:
    """``texts("msgid", name=value)`` in one language. Values must be escaped already."""

    def __init__(self, language: str, info: DeskInfo) -> None:
        self.language = language if language in LANGUAGES else pick_language(language)
        self._context = info.context(self.language)

    def __call__(self, msgid: str, **params: Any) -> str:
        return catalogue().text(self.language, msgid, **{**self._context, **params})
