"""One message catalogue for Kazakh, Russian and English, shared by both channels.

The texts live in gettext ``.po`` files under ``workflows/locales/<lang>/LC_MESSAGES/``
(every ``*.po`` there is read, so a channel may add its own file beside
``messages.po``). Message ids are keys (``notify.request_taken.text``), not
English sentences, and the English text is a translation like the others.
Placeholders are ``str.format`` fields: ``{reference}``.

The bot can feed aiogram's ``I18n`` from :meth:`Catalogue.translations`;
everything else asks :func:`catalogue` for a text.
"""

from __future__ import annotations

import functools
import gettext
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

from babel.dates import format_date as babel_format_date
from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import write_mo
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po

log = logging.getLogger(__name__)

LANGUAGES = ("kk", "ru", "en")
DEFAULT_LANGUAGE = "en"
LOCALES = Path(__file__).resolve().parent / "locales"

_BABEL_LOCALES = {"kk": "kk_KZ", "ru": "ru_RU", "en": "en_GB"}
_DATE_PATTERNS = {"kk": "y 'жылғы' d MMMM"}
# Telegram gives a user's interface language; Belarusian and Ukrainian speakers
# are better served in Russian than in English.
_ALIASES = {"kk": "kk", "ru": "ru", "be": "ru", "uk": "ru"}
_CONTEXT_MSGIDS = ("company", "authority", "authority_address", "akimat")
# The desk's published details; the settings (DSR_MAIL_FROM, DSR_POLICY_URL) default to these.
DEFAULT_MAIL_ADDRESS = "aina.app@mercury.kz"
DEFAULT_POLICY_URL = "https://aina-fashion.kz"
COMPANY = {
    "kk": "«Mercury Properties» ЖШС",
    "ru": "ТОО «Mercury Properties»",
    "en": "Mercury Properties LLP",
}
# The policy's own words (section 7): the one source of the address the texts name.
POSTAL_ADDRESS = {
    "kk": "Қазақстан Республикасы, Алматы қаласы, Бостандық ауданы, Байзақов көшесі, 280 ғимарат, "
    "пошта индексі 050400",
    "ru": "Республика Казахстан, 050400, г. Алматы, Бостандыкский район, ул. Байзакова, здание 280",
    "en": "280 Baizakov Street, Bostandyk District, Almaty 050400, Republic of Kazakhstan",
}


class MissingMessage(KeyError):
    """A message id has no text (or an empty one) in a language."""

    def __init__(self, msgid: str, language: str, detail: str = "") -> None:
        super().__init__(msgid)
        self.msgid = msgid
        self.language = language
        self.detail = detail

    def __str__(self) -> str:
        text = f"no text for {self.msgid!r} in {self.language!r}"
        return f"{text}: {self.detail}" if self.detail else text


class MissingParameter(MissingMessage):
    """A text names a placeholder the caller did not give."""

    def __init__(self, msgid: str, language: str, name: str) -> None:
        super().__init__(msgid, language, f"the text needs {{{name}}}")
        self.name = name

    def __str__(self) -> str:
        return f"{self.msgid!r} in {self.language!r}: {self.detail}"


class CatalogueError(ValueError):
    """The .po files cannot be merged into one catalogue."""


def pick_language(code: str | None) -> str:
    """The catalogue language for a Telegram ``language_code`` or a Content-Language header."""
    if not code:
        return DEFAULT_LANGUAGE
    first = code.split(",")[0].split(";")[0].strip().lower()
    primary = first.replace("_", "-").split("-")[0]
    return _ALIASES.get(primary, DEFAULT_LANGUAGE)


def _key(message: Message) -> str:
    msgid = message.id if isinstance(message.id, str) else message.id[0]
    # gettext's own convention for a message with a context (pgettext).
    return f"{message.context}\x04{msgid}" if message.context else msgid


def _forms(message: Message) -> tuple[str, ...]:
    string = message.string
    if string is None:
        return ()
    return (string,) if isinstance(string, str) else tuple(string)


def _translated(message: Message) -> bool:
    forms = _forms(message)
    return not message.fuzzy and bool(forms) and all(forms)


@functools.cache
def _plural_rule(language: str) -> Callable[[int], int]:
    return gettext.c2py(get_plural(_BABEL_LOCALES[language]).plural_expr)


def _plural_index(language: str, n: int) -> int:
    """Which of a plural message's forms (0, 1, ...) reads right with the number ``n``."""
    return int(_plural_rule(language)(n))


class Catalogue:
    """Every message in every language, read once from the .po files."""

    def __init__(self, messages: Mapping[str, Mapping[str, Message]]) -> None:
        self._messages = {language: dict(messages.get(language, {})) for language in LANGUAGES}

    @classmethod
    def load(cls, directory: Path | None = None) -> Catalogue:
        """Merge every ``<directory>/<lang>/LC_MESSAGES/*.po``; a msgid in two files is an error."""
        root = LOCALES if directory is None else directory
        messages: dict[str, dict[str, Message]] = {}
        origin: dict[tuple[str, str], Path] = {}
        for language in LANGUAGES:
            merged = messages.setdefault(language, {})
            for path in sorted((root / language / "LC_MESSAGES").glob("*.po")):
                with path.open("rb") as file:
                    po = read_po(file, locale=language)
                for message in po:
                    if not message.id:  # the header
                        continue
                    key = _key(message)
                    if key in merged:
                        raise CatalogueError(
                            f"{key!r} ({language}) is defined in both "
                            f"{origin[language, key]} and {path}"
                        )
                    merged[key] = message
                    origin[language, key] = path
        return cls(messages)

    def _template(self, language: str, msgid: str) -> str:
        language = pick_language(language)
        message = self._messages[language].get(msgid)
        if message is None or not _translated(message):
            raise MissingMessage(msgid, language)
        return _forms(message)[0]

    def text(self, language: str, msgid: str, /, **params: object) -> str:
        """The text of ``msgid`` in ``language`` (English for an unknown one), filled in."""
        template = self._template(language, msgid)
        try:
            return template.format_map(params)
        except KeyError as error:
            raise MissingParameter(msgid, pick_language(language), str(error.args[0])) from None

    def plural(self, language: str, msgid: str, n: int, /, **params: object) -> str:
        """The form of ``msgid`` (a message with ``msgid_plural``) for the number ``n``.

        The form is picked by the language's plural rule (CLDR, as gettext numbers
        the forms: Russian has three, Kazakh and English two); ``{n}`` is filled in.
        """
        language = pick_language(language)
        message = self._messages[language].get(msgid)
        if message is None or not _translated(message):
            raise MissingMessage(msgid, language)
        forms = _forms(message)
        template = forms[min(_plural_index(language, n), len(forms) - 1)]
        try:
            return template.format_map({**params, "n": n})
        except KeyError as error:
            raise MissingParameter(msgid, language, str(error.args[0])) from None

    def has(self, msgid: str) -> bool:
        """Whether any language defines ``msgid``."""
        return any(msgid in messages for messages in self._messages.values())

    def msgids(self) -> frozenset[str]:
        """Every message id defined in any language."""
        return frozenset(key for messages in self._messages.values() for key in messages)

    def languages_missing(self, msgid: str) -> list[str]:
        """The languages where ``msgid`` is absent, empty or fuzzy."""
        return [
            language
            for language in LANGUAGES
            if (message := self._messages[language].get(msgid)) is None or not _translated(message)
        ]

    def translations(self) -> dict[str, gettext.GNUTranslations]:
        """A ``GNUTranslations`` per language, compiled in memory (no .mo files on disk)."""
        result: dict[str, gettext.GNUTranslations] = {}
        for language, messages in self._messages.items():
            compiled = Catalog(locale=language, domain="messages", fuzzy=False)
            for message in messages.values():
                compiled[message.id] = message
            buffer = BytesIO()
            write_mo(buffer, compiled)
            buffer.seek(0)
            result[language] = gettext.GNUTranslations(buffer)
        return result

    def notification(
        self,
        template: str,
        language: str,
        params: Mapping[str, Any],
        *,
        escape: Callable[[str], str] = lambda s: s,
        context: Mapping[str, str] | None = None,
    ) -> Notification:
        """Compose an outbox message strictly: a missing text or placeholder raises."""
        values = dict(self._context(language, context))
        values.update(params)
        values.update(self._derived(language, params))
        if values.get("reference") is None:
            values["reference"] = "—"
        filled = {
            name: escape("" if value is None else str(value)) for name, value in values.items()
        }
        text_id = f"notify.{template}.text"
        if not params.get("due_date") and self.has(f"{text_id}.no_due"):
            text_id = f"{text_id}.no_due"
        return Notification(
            subject=self.text(language, f"notify.{template}.subject", **filled),
            text=self.text(language, text_id, **filled).strip(),
        )

    def render(
        self,
        template: str,
        language: str,
        params: Mapping[str, Any],
        *,
        escape: Callable[[str], str] = lambda s: s,
        context: Mapping[str, str] | None = None,
    ) -> Notification:
        """Like :meth:`notification`, but never raises: English, then a neutral line."""
        for attempt in dict.fromkeys((pick_language(language), DEFAULT_LANGUAGE)):
            try:
                return self.notification(template, attempt, params, escape=escape, context=context)
            except Exception:
                log.exception("cannot render %r in %r", template, attempt)
        reference = escape(str(params.get("reference") or ""))
        line = f"AINA Privacy Desk: {reference}" if reference else "AINA Privacy Desk"
        return Notification(subject=reference or "AINA Privacy Desk", text=line)

    def _context(
        self, language: str, overrides: Mapping[str, str] | None
    ) -> Iterator[tuple[str, str]]:
        yield "mail_address", DEFAULT_MAIL_ADDRESS
        for name in _CONTEXT_MSGIDS:
            if f"context.{name}" in self._messages[pick_language(language)]:
                yield name, self.text(language, f"context.{name}")
        yield from (overrides or {}).items()

    def _derived(self, language: str, params: Mapping[str, Any]) -> dict[str, str]:
        derived: dict[str, str] = {}
        if params.get("kind"):
            derived["kind_name"] = self.text(language, f"kind.{params['kind']}")
        if params.get("status"):
            status, kind = params["status"], params.get("kind")
            by_kind = f"status.{status}.{kind}"
            derived["status_name"] = self.text(
                language, by_kind if kind and self.has(by_kind) else f"status.{status}"
            )
        if params.get("due_date"):
            derived["due"] = format_date(language, date.fromisoformat(str(params["due_date"])))
        return derived


@dataclass(frozen=True)
class DeskInfo:
    """Who runs the desk and where people can write, as both channels' texts name them.

    Built once from the settings by the composition root and handed to both channels.
    """

    mail_address: str = DEFAULT_MAIL_ADDRESS
    policy_url: str = DEFAULT_POLICY_URL
    company: dict[str, str] = field(default_factory=lambda: dict(COMPANY))
    postal_address: dict[str, str] = field(default_factory=lambda: dict(POSTAL_ADDRESS))
    # The authorised body for personal data protection and where it takes appeals, per
    # language; a language left out reads the catalogue's ``context.authority`` (today's name).
    authority: dict[str, str] = field(default_factory=dict)
    authority_address: dict[str, str] = field(default_factory=dict)

    def context(self, language: str) -> dict[str, str]:
        """The values the catalogue's texts may name, in ``language``."""
        language = pick_language(language)
        texts = catalogue()
        return {
            "company": self.company.get(language, self.company["en"]),
            "postal_address": self.postal_address.get(language, self.postal_address["en"]),
            "mail_address": self.mail_address,
            "policy_url": self.policy_url,
            "authority": self.authority.get(language) or texts.text(language, "context.authority"),
            "authority_address": self.authority_address.get(language)
            or texts.text(language, "context.authority_address"),
            "akimat": texts.text(language, "context.akimat"),
        }


@dataclass(frozen=True)
class Notification:
    """A message ready to send: the e-mail subject line and the text (plain, both channels)."""

    subject: str
    text: str


@functools.cache
def catalogue() -> Catalogue:
    """The package's own catalogue, read once per process."""
    return Catalogue.load()


def format_date(language: str, day: date) -> str:
    """A date as people write it in ``language``: "2026 жылғы 17 желтоқсан",
    "17 декабря 2026 г.", "17 December 2026"."""
    language = pick_language(language)
    # CLDR's long Kazakh date abbreviates the year ("2026 ж."); in a letter it is spelt out.
    pattern = _DATE_PATTERNS.get(language, "long")
    return babel_format_date(day, pattern, locale=_BABEL_LOCALES[language])


def kind_name(language: str, kind: str) -> str:
    """A request kind in plain words."""
    return catalogue().text(language, f"kind.{kind}")


def kind_hint(language: str, kind: str) -> str:
    """One short line explaining a request kind."""
    return catalogue().text(language, f"kind.{kind}.hint")


def status_name(language: str, status: str, kind: str | None = None) -> str:
    """A request status in words; a kind may have its own (a complaint is "considered")."""
    texts = catalogue()
    if kind and texts.has(f"status.{status}.{kind}"):
        return texts.text(language, f"status.{status}.{kind}")
    return texts.text(language, f"status.{status}")


def render_notification(
    template: str,
    language: str,
    params: Mapping[str, Any],
    *,
    escape: Callable[[str], str] = lambda s: s,
    context: Mapping[str, str] | None = None,
) -> Notification:
    """The subject and text of outbox ``template`` for a person or staff.

    Every substituted value, the person's own words included (a reason, a
    question, a note), goes through ``escape``: the bot passes ``html.escape``,
    e-mail the identity. Added here: ``kind_name``, ``status_name``, ``due``
    (from the ISO ``due_date``; without one the ``.no_due`` text is used) and
    the context (company, authority, akimat, mail_address), which ``context``
    overrides. Never raises: a broken text falls back to English, then to a
    neutral line with the reference, and is logged.
    """
    return catalogue().render(template, language, params, escape=escape, context=context)
