"""The command menu Telegram shows beside the message field: one list per language.

Telegram picks the list whose ``language_code`` matches the person's interface
language, else the list without one; that default list is in the language the
desk speaks to anyone else (English, as :func:`workflows.i18n.pick_language`).
Every description is the catalogue's ``command.<name>`` text. The staff group
has its own list (scoped to that chat), in the staff's language.
"""

from __future__ import annotations

from aiogram.types import BotCommand

from bot.texts import Texts
from workflows.i18n import DEFAULT_LANGUAGE, LANGUAGES, DeskInfo

# The person's commands, in the order the menu shows them.
COMMANDS = ("start", "status", "cancel", "language", "privacy", "help")
# The staff group's commands (bot.staff.queue), described by ``command.staff.<name>``.
STAFF_COMMANDS = ("queue", "overdue", "find", "stats")


def command_menus(info: DeskInfo) -> list[tuple[str | None, list[BotCommand]]]:
    """(language_code, commands) for each language, then the default list (code ``None``)."""
    codes: list[tuple[str | None, str]] = [(language, language) for language in LANGUAGES]
    codes.append((None, DEFAULT_LANGUAGE))
    menus: list[tuple[str | None, list[BotCommand]]] = []
    for code, language in codes:
        texts = Texts(language, info)
        commands = [BotCommand(command=c, description=texts(f"command.{c}")) for c in COMMANDS]
        menus.append((code, commands))
    return menus


def staff_menu(info: DeskInfo, language: str) -> list[BotCommand]:
    """The staff group's commands in ``language`` (DSR_STAFF_LANGUAGE)."""
    texts = Texts(language, info)
    return [BotCommand(command=c, description=texts(f"command.staff.{c}")) for c in STAFF_COMMANDS]
