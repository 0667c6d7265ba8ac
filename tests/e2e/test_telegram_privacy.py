"""/privacy and the command menu over the real Bot API stand-in (issue 16, items 4 and 12).

/privacy lists every right the policy grants (sections 2 and 6 to 10): what it
is, how to use it here, and how soon the desk answers, from the kinds table;
then where else the person may turn, the authorised body as the settings name
it. The command menu is one list per language, in the catalogue's words.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aina_dsr.runtime import desk_info
from aina_dsr.settings import load_settings
from bot.commands import COMMANDS
from bot.texts import Texts
from tests.botapi import TEXT_LIMIT, BotAPI, Call, Person, visible_length
from tests.clocks import FrozenClock
from tests.conftest import STAFF_IDS
from tests.telegram_desk import STAFF_CHAT, Desk, words
from workflows.deadlines.calendar import WorkingCalendar
from workflows.i18n import LANGUAGES, DeskInfo, kind_name
from workflows.kinds import CLASSIFIED_KINDS, DEFAULT_KINDS, ClockSpec, DayUnit, RequestKind
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

ALICE_ID = 700200
COURT = {"kk": "сот", "ru": "суд", "en": "court"}
LATIN = re.compile(r"[A-Za-z]")
CYRILLIC = re.compile(r"[А-Яа-яЁё]")
KAZAKH_ONLY = re.compile(r"[ӘәҒғҚқҢңӨөҰұҮүҺһІі]")


def text(call: Call) -> str:
    return str(call.params.get("text", ""))


def visible(call: Call) -> str:
    """The text as the person reads it (tags gone, entities unescaped)."""
    return html.unescape(re.sub(r"<[^>]*>", "", text(call)))


async def ask_privacy(desk: Desk, language: str) -> Call:
    since = desk.mark()
    await desk.send(Person(ALICE_ID, language_code=language), "/privacy")
    return await desk.expect(ALICE_ID, since)


def line_of(answer: str, kind: RequestKind, language: str) -> str:
    """The one line of the answer that names the right ``kind``."""
    lines = [line for line in answer.splitlines() if kind_name(language, kind.value) in line]
    assert len(lines) == 1, (kind, lines)
    return lines[0]


def answer_time(kind: RequestKind, language: str, clock: FrozenClock) -> str:
    """How soon the desk answers a request of ``kind`` filed now, in the catalogue's words."""
    spec = DEFAULT_KINDS[kind]
    running = spec.running_clock(clock.now(), WorkingCalendar())
    texts = Texts(language, DeskInfo())
    days = texts.plural(f"privacy.days.{running.unit.value}", running.length)
    if spec.starts.value == "confirmation":
        return texts("privacy.when.confirmation", days=days)
    return days


@pytest.mark.parametrize("language", LANGUAGES)
async def test_privacy_lists_every_right_with_how_to_use_it_and_the_answer_time(
    desk: Desk, clock: FrozenClock, language: str
) -> None:
    answer = visible(await ask_privacy(desk, language))

    for kind in CLASSIFIED_KINDS:  # every right the desk serves is a kind of request
        line = line_of(answer, kind, language)
        if DEFAULT_KINDS[kind].at_once:  # done once the person is verified: no answer time
            assert not re.search(r"\d", line), (kind, line)
            continue
        assert answer_time(kind, language, clock) in line, (kind, line)
    assert "/start" in answer  # how to use them here
    context = DeskInfo().context(language)
    for where in ("authority", "authority_address", "akimat", "mail_address", "postal_address"):
        assert context[where] in answer, where
    assert COURT[language] in answer
    assert visible_length(text(await ask_privacy(desk, language)), "HTML") <= TEXT_LIMIT


@pytest.mark.parametrize(
    ("language", "kind", "expected"),
    [
        ("en", RequestKind.ACCESS, "Answer within 3 working days."),
        ("ru", RequestKind.BLOCK, "Срок ответа: 1 рабочий день."),
        ("ru", RequestKind.ACCESS, "Срок ответа: 3 рабочих дня."),
        ("ru", RequestKind.WITHDRAW_CONSENT, "Срок ответа: 15 рабочих дней."),
        ("en", RequestKind.UNSUBSCRIBE, "Done at once, as soon as we have confirmed it is you."),
        ("ru", RequestKind.UNSUBSCRIBE, "Выполняется сразу после подтверждения Вашей личности."),
        ("kk", RequestKind.COMPLAINT, "Жауап беру мерзімі: 30 күнтізбелік күн."),
        (
            "kk",
            RequestKind.RECTIFY,
            "Жауап беру мерзімі: растайтын құжаттарды алған күннен бастап 1 жұмыс күні.",
        ),
        (
            "en",
            RequestKind.DESTROY_UNLAWFUL,
            "Answer within 1 working day of receiving the documents that confirm it.",
        ),
    ],
)
async def test_the_answer_time_reads_as_people_write_it(
    desk: Desk, language: str, kind: RequestKind, expected: str
) -> None:
    answer = visible(await ask_privacy(desk, language))

    assert line_of(answer, kind, language).endswith(expected)


@pytest.fixture
async def desk_with_a_longer_access_clock(
    api: BotAPI,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> AsyncIterator[Desk]:
    kinds = dict(DEFAULT_KINDS)
    kinds[RequestKind.ACCESS] = dataclasses.replace(
        kinds[RequestKind.ACCESS], law=None, policy=ClockSpec(10, DayUnit.CALENDAR)
    )
    service = RequestService(
        sessions, vault, clock, WorkingCalendar(), staff_user_ids=STAFF_IDS, kinds=kinds
    )
    desk = Desk(api, service, sessions, vault, clock, STAFF_IDS)
    await desk.start()
    try:
        yield desk
    finally:
        await desk.stop()


async def test_the_answer_time_comes_from_the_kinds_table(
    desk_with_a_longer_access_clock: Desk,
) -> None:
    answer = visible(await ask_privacy(desk_with_a_longer_access_clock, "en"))

    assert line_of(answer, RequestKind.ACCESS, "en").endswith("Answer within 10 calendar days.")


async def test_privacy_names_the_authorised_body_the_settings_give_in_each_language(
    api: BotAPI,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # Long on purpose: the answer must still fit in one Telegram message.
    names = {
        "kk": "Дербес деректерді қорғау комитеті " + " ".join(["(Қазақстан Республикасы)"] * 8),
        "ru": "Комитет по защите персональных данных " + " ".join(["(Республика Казахстан)"] * 8),
        "en": "the Personal Data Protection Committee & Co "
        + " ".join(["(Republic of Kazakhstan)"] * 8),
    }
    addresses = {
        "kk": "Астана қ., Мәңгілік Ел д-лы, 8",
        "ru": "г. Астана, пр. Мангилик Ел, 8",
        "en": "8 Mangilik El Ave, Astana",
    }
    settings = load_settings(
        **{f"authority_name_{lang}": name for lang, name in names.items()},
        **{f"authority_address_{lang}": address for lang, address in addresses.items()},
    )
    desk = Desk(api, service, sessions, vault, clock, STAFF_IDS, info=desk_info(settings))
    await desk.start()
    try:
        answers = {language: await ask_privacy(desk, language) for language in LANGUAGES}
    finally:
        await desk.stop()
    for language, call in answers.items():
        answer = visible(call)
        assert f"{names[language]} ({addresses[language]})" in answer, language
        assert "Жасанды интеллект" not in answer  # the default name is replaced
        assert "искусственного интеллекта" not in answer
        assert "Artificial Intelligence" not in answer
        assert visible_length(text(call), "HTML") <= TEXT_LIMIT
    assert "&amp; Co" in text(answers["en"])  # a setting's text is escaped for Telegram's HTML


# -- the command menu ---------------------------------------------------------


def menus(api: BotAPI) -> dict[str | None, dict[str, str]]:
    """Each setMyCommands list by its language_code (None: the default list)."""
    found: dict[str | None, dict[str, str]] = {}
    for call in api.calls("setMyCommands"):
        scope = call.params.get("scope") or {"type": "default"}
        if scope["type"] == "chat":  # the staff group's own list (see below)
            continue
        assert scope == {"type": "default"}, scope
        code = call.params.get("language_code")
        assert code not in found, f"two lists for {code!r}"
        found[code] = {c["command"]: c["description"] for c in call.params["commands"]}
    return found


async def test_the_command_menu_is_one_list_per_language_from_the_catalogue(desk: Desk) -> None:
    await desk.api.wait_for("setMyCommands", lambda c: c.params.get("language_code") == "en")
    await desk.api.wait_for("setMyCommands", lambda c: "language_code" not in c.params)

    lists = menus(desk.api)

    assert set(lists) == {None, "kk", "ru", "en"}
    for code, menu in lists.items():
        language = code or "en"  # people whose language the desk does not speak read English
        assert list(menu) == list(COMMANDS)
        assert menu == {name: words(language, f"command.{name}") for name in COMMANDS}
    assert not any(CYRILLIC.search(d) for d in lists["en"].values())
    assert not any(LATIN.search(d) or KAZAKH_ONLY.search(d) for d in lists["ru"].values())
    assert not any(LATIN.search(d) for d in lists["kk"].values())
    assert lists["kk"] != lists["ru"]
    assert not any("/" in d for menu in lists.values() for d in menu.values())


async def test_the_staff_group_has_its_own_menu_of_staff_commands_in_the_staff_language(
    desk: Desk,
) -> None:
    call = await desk.api.wait_for(
        "setMyCommands", lambda c: (c.params.get("scope") or {}).get("type") == "chat"
    )

    assert call.params["scope"] == {"type": "chat", "chat_id": STAFF_CHAT}
    assert "language_code" not in call.params  # the staff read one language, whatever theirs
    staff = {c["command"]: c["description"] for c in call.params["commands"]}
    assert list(staff) == ["queue", "overdue", "find", "stats"]
    assert staff == {name: words("ru", f"command.staff.{name}") for name in staff}
    assert not any(LATIN.search(d) for d in staff.values())
    # The person's commands stay out of the staff group's menu, and the staff's out of theirs.
    assert not set(staff) & set(COMMANDS)
    assert all(not set(staff) & set(menu) for menu in menus(desk.api).values())
