"""The bot's words: the shared catalogue in the person's language, with the desk's details."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workflows.i18n import LANGUAGES, catalogue, pick_language

COMPANY = {
    "kk": "«Mercury Properties» ЖШС",
    "ru": "ТОО «Mercury Properties»",
    "en": "Mercury Properties LLP",
}
POSTAL_ADDRESS = {
    "kk": "Алматы қ., Бостандық ауданы, Байзақов к-сі, 280 ғимарат, 050400",
    "ru": "г. Алматы, Бостандыкский район, ул. Байзакова, здание 280, 050400",
    "en": "280 Baizakov St, Bostandyk District, Almaty 050400, Kazakhstan",
}


@dataclass(frozen=True)
class DeskInfo:
    """Who runs the desk and where people can write: the settings' values."""

    mail_address: str = "aina.app@mercury.kz"
    policy_url: str = "https://aina-fashion.kz"
    company: dict[str, str] = field(default_factory=lambda: dict(COMPANY))
    postal_address: dict[str, str] = field(default_factory=lambda: dict(POSTAL_ADDRESS))

    def context(self, language: str) -> dict[str, str]:
        return {
            "company": self.company.get(language, self.company["en"]),
            "postal_address": self.postal_address.get(language, self.postal_address["en"]),
            "mail_address": self.mail_address,
            "policy_url": self.policy_url,
        }


class Texts:
    """``texts("msgid", name=value)`` in one language. Values must be escaped already."""

    def __init__(self, language: str, info: DeskInfo) -> None:
        self.language = language if language in LANGUAGES else pick_language(language)
        self._context = info.context(self.language)

    def __call__(self, msgid: str, **params: Any) -> str:
        return catalogue().text(self.language, msgid, **{**self._context, **params})
