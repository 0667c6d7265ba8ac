"""The bot's dialogs in Redis: sealed with the desk's key, forgotten in time, never trusted blind.

A real aiogram Bot runs against the Bot API stand-in with the dialog storage
``DSR_REDIS_URL`` gives (Redis database 13 on 127.0.0.1, keys of people made up
for each test and deleted after it). What Redis holds is read raw, as anyone
with access to Redis would read it; what is planted there is written raw, as
anyone with write access to Redis could write it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aiogram.fsm.storage.base import StorageKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.callbacks import LanguageChoice, SummaryChoice
from bot.dialog.states import Dialog
from bot.storage import make_fsm_storage
from tests.botapi import BotAPI, Call, Person
from tests.clocks import FrozenClock
from tests.conftest import STAFF_IDS
from tests.telegram_desk import STAFF_CHAT, Desk, buttons, message_id, words
from tests.telegram_dialog import ANSWERS, answer_questions, start_kind, text
from workflows.kinds import RequestKind
from workflows.privacy.vault import Vault, VaultError
from workflows.requests.service import RequestService

redis_asyncio = pytest.importorskip("redis.asyncio", reason="aiogram[redis] is not installed")

# A database of these tests' own: the bot forgets, when it starts, every dialog record
# in it that has no TTL (see the last tests), which would be another test's in a shared one.
REDIS_URL = "redis://127.0.0.1:6379/13"
# The file's tests share Redis database 13 (flushed by each): with pytest-xdist they run
# on one worker, one after another (``--dist loadgroup``), never two at once.
pytestmark = pytest.mark.xdist_group("redis-13")
DIALOG_TTL = timedelta(hours=336)
RETENTION = timedelta(days=1095)
OWN_PHONE = "+77011234567"
VICTIMS_PHONE = "+77017654321"


def ttl_seconds(ttl: timedelta) -> int:
    return int(ttl.total_seconds())


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    client = redis_asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await cast("Awaitable[bool]", client.ping())
    except (OSError, redis_asyncio.RedisError) as exc:
        await client.aclose()
        pytest.skip(f"Redis is not answering at {REDIS_URL}: {type(exc).__name__}")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def people(redis: Any) -> AsyncIterator[list[int]]:
    """The people a test made up; what Redis holds of them goes when it ends."""
    made: list[int] = []
    try:
        yield made
    finally:
        for person in made:
            async for name in redis.scan_iter(match=f"fsm:{person}:*"):
                await redis.delete(name)


def newcomer(people: list[int], language: str = "ru") -> Person:
    """A person of this test alone, so a shared Redis holds nothing else under their id."""
    person = Person(
        5_000_000_000 + random.randrange(10**9), first_name="Aigerim", language_code=language
    )
    people.append(person.id)
    return person


def redis_storage(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, clock: FrozenClock
) -> Any:
    """The dialog storage ``aina-dsr run`` makes with ``DSR_REDIS_URL`` and the default TTLs."""
    return make_fsm_storage(
        REDIS_URL, sessions, vault, clock, dialog_ttl=DIALOG_TTL, choices_ttl=RETENTION
    )


@pytest.fixture
async def redis_desk(
    api: BotAPI,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    redis: Any,
    people: list[int],
) -> AsyncIterator[Desk]:
    desk = Desk(
        api,
        service,
        sessions,
        vault,
        clock,
        STAFF_IDS,
        storage=lambda: redis_storage(sessions, vault, clock),
    )
    await desk.start()
    try:
        yield desk
    finally:
        await desk.stop()


async def records(redis: Any, person: int) -> dict[str, bytes]:
    """Every record Redis holds for the person, raw."""
    found: dict[str, bytes] = {}
    async for name in redis.scan_iter(match=f"fsm:{person}:*"):
        value = await redis.get(name)
        if value is not None:
            found[name.decode()] = value
    return found


def in_clear(value: str) -> list[bytes]:
    """The forms a typed value takes in a stored record: UTF-8, and JSON's escapes."""
    return [value.encode(), json.dumps(value).strip('"').encode()]


def sealed(vault: Vault, value: bytes) -> bool:
    """The value is a token of the desk's key (what the database's columns hold)."""
    try:
        vault.decrypt(value)
    except VaultError:
        return False
    return True


async def status_after(desk: Desk, who: Person) -> str:
    """The person's /status, answered after all their earlier updates (one at a time)."""
    since = desk.mark()
    await desk.send(who, "/status")
    return text(await desk.expect(who.id, since))


async def to_summary(desk: Desk, who: Person, phone: str = OWN_PHONE) -> Call:
    """A withdrawal of consent in Russian up to its summary: name, data, e-mail, contact."""
    await start_kind(desk, who, RequestKind.WITHDRAW_CONSENT, "ru")
    await answer_questions(desk, who, RequestKind.WITHDRAW_CONSENT, "ru")
    since = desk.mark()
    await desk.api.offer(desk.api.contact_message(who, who.id, phone))
    return await desk.expect(
        who.id, since, lambda c: SummaryChoice(action="confirm").pack() in buttons(c).values()
    )


async def press_send(desk: Desk, who: Person, on: int) -> int:
    since = desk.mark()
    await desk.press(who, who.id, on, SummaryChoice(action="confirm").pack())
    return since


async def handled(desk: Desk, since: int) -> Call:
    """The press after ``since`` was answered (so whatever it did is done)."""
    call = await desk.api.wait_until(
        lambda calls: next((c for c in calls[since:] if c.method == "answerCallbackQuery"), None)
    )
    assert call is not None, "the button press was not answered"
    return call


# What Redis holds.


async def test_a_dialog_in_redis_shows_no_name_phone_or_email(
    redis_desk: Desk, redis: Any, people: list[int], service: RequestService, vault: Vault
) -> None:
    who = newcomer(people)
    summary = await to_summary(redis_desk, who)

    held = await records(redis, who.id)
    assert set(held) == {f"fsm:{who.id}:{who.id}:default:{part}" for part in ("state", "data")}
    typed = [ANSWERS["full_name"], ANSWERS["data_concerned"], ANSWERS["contact"], OWN_PHONE]
    for value in held.values():
        assert sealed(vault, value)
        for clear in (*typed, OWN_PHONE.lstrip("+"), Dialog.summary.state, "proof", "method"):
            assert not any(form in value for form in in_clear(clear)), clear

    # Sealed is not lost: the dialog goes on and files the person's request, verified.
    since = await press_send(redis_desk, who, message_id(summary))
    await redis_desk.expect(who.id, since, lambda c: text(c) == words("ru", "summary.sent"))
    (view,) = await service.list_requests(telegram_user_id=who.id)
    assert view.status == "verified"
    assert view.fields["full_name"] == ANSWERS["full_name"]
    assert await records(redis, who.id) == {}  # a finished dialog leaves nothing behind


async def test_dialog_records_expire_and_every_step_renews_the_whole_dialog(
    redis_desk: Desk, redis: Any, people: list[int]
) -> None:
    who = newcomer(people)
    since = redis_desk.mark()
    await redis_desk.send(who, "/start")
    await redis_desk.expect(who.id, since, lambda c: bool(buttons(c)))
    state, data = (f"fsm:{who.id}:{who.id}:default:{part}" for part in ("state", "data"))
    for name in (state, data):
        assert ttl_seconds(DIALOG_TTL) - 60 < await redis.ttl(name) <= ttl_seconds(DIALOG_TTL)

    # Days later (as Redis counts them) the person types instead of pressing a button: only
    # the state is written, and the data, which they are still using, is kept as long.
    await redis.expire(data, 100)
    since = redis_desk.mark()
    await redis_desk.send(who, "hello")
    await redis_desk.expect(who.id, since, lambda c: bool(buttons(c)))
    assert await redis.ttl(data) > ttl_seconds(DIALOG_TTL) - 60


async def test_a_remembered_language_lasts_as_long_as_retention_allows(
    redis_desk: Desk, redis: Any, people: list[int], vault: Vault
) -> None:
    who = newcomer(people, "en")
    since = redis_desk.mark()
    await redis_desk.send(who, "/language")
    menu = await redis_desk.expect(who.id, since, lambda c: bool(buttons(c)))
    choice = LanguageChoice(code="kk").pack()
    chosen = words("kk", "language.set")
    await redis_desk.press(who, who.id, message_id(menu), choice, expect=chosen)

    name = f"fsm:{who.id}:{who.id}:prefs:data"
    assert ttl_seconds(RETENTION) - 60 < await redis.ttl(name) <= ttl_seconds(RETENTION)
    assert sealed(vault, await redis.get(name))
    await redis_desk.send(who, "/help", expect=words("kk", "help"))


# What is planted in Redis.


async def test_a_verified_phone_planted_in_clear_verifies_nothing(
    redis_desk: Desk, redis: Any, people: list[int], service: RequestService
) -> None:
    # Whoever can write to Redis, but has not the key, gives their dialog a victim's
    # phone "shared" as their own, and the summary's Send.
    who = newcomer(people)
    await start_kind(redis_desk, who, RequestKind.ACCESS, "ru")
    await answer_questions(redis_desk, who, RequestKind.ACCESS, "ru")
    (asked, *_) = [
        c for c in redis_desk.api.sent_to(who.id) if text(c) == words("ru", "identity.ask")
    ]
    planted = {
        "kind": "access",
        "queue": [],
        "fields": {},
        "evidence": [],
        "evidence_asked": False,
        "open_checked": True,
        "proof": {"method": "contact", "phone": VICTIMS_PHONE, "user_id": who.id},
    }
    await redis.set(f"fsm:{who.id}:{who.id}:default:state", Dialog.summary.state)
    await redis.set(f"fsm:{who.id}:{who.id}:default:data", json.dumps(planted))

    await handled(redis_desk, await press_send(redis_desk, who, message_id(asked)))

    assert await status_after(redis_desk, who) == words("ru", "status.none")
    assert await service.list_requests(telegram_user_id=who.id) == []
    assert redis_desk.api.sent_to(STAFF_CHAT) == []


@pytest.mark.parametrize("contact_user_id", ["another person's", "none"])
async def test_a_planted_phone_without_the_senders_own_contact_does_not_verify(
    redis_desk: Desk,
    redis: Any,
    people: list[int],
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    contact_user_id: str,
) -> None:
    # Worse: someone with the key too, writing as the desk itself would. A phone whose
    # contact card was someone else's, or is not said, proves nothing about the sender.
    who = newcomer(people)
    summary = await to_summary(redis_desk, who)
    planter = redis_storage(sessions, vault, clock)
    key = StorageKey(bot_id=redis_desk.api.bot_id, chat_id=who.id, user_id=who.id)
    try:
        proof: dict[str, Any] = {"method": "contact", "phone": VICTIMS_PHONE}
        if contact_user_id != "none":
            proof["user_id"] = 4242
        await planter.update_data(key, {"proof": proof})
    finally:
        await planter.close()

    since = await press_send(redis_desk, who, message_id(summary))
    await status_after(redis_desk, who)

    (view,) = await service.list_requests(telegram_user_id=who.id)
    assert (view.status, view.verified_by) == ("awaiting_verification", None)
    shown = await service.get(view.reference, with_events=True)
    assert "contact_refused" in [event.action for event in shown.events]
    # The person is told, and asked to prove who they are for the request now filed.
    refused = words("ru", "identity.refused", reference=view.reference)
    await redis_desk.expect(who.id, since, lambda c: text(c) == refused)
    await redis_desk.expect(who.id, since, lambda c: text(c) == words("ru", "identity.expect"))
    assert not any(view.reference in text(c) for c in redis_desk.api.sent_to(STAFF_CHAT))

    # Their own contact card then verifies that same request: no second one is filed.
    since = redis_desk.mark()
    await redis_desk.api.offer(redis_desk.api.contact_message(who, who.id, OWN_PHONE))
    await redis_desk.expect(who.id, since, lambda c: text(c) == words("ru", "code.ok"))
    (view,) = await service.list_requests(telegram_user_id=who.id)
    assert (view.status, view.verified_by) == ("verified", "telegram_contact")
    await redis_desk.expect(STAFF_CHAT, 0, lambda c: view.reference in text(c))


# What an earlier version left in Redis.


async def test_records_left_without_a_ttl_are_forgotten_when_the_bot_starts(
    api: BotAPI,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    redis: Any,
    people: list[int],
) -> None:
    # Written in clear and for ever (by the desk before this version, or by someone
    # else): nobody may ever come back to read them, so they would stay for good.
    gone, kept = newcomer(people), newcomer(people)
    left = {
        f"fsm:{gone.id}:{gone.id}:default:state": Dialog.identity.state,
        f"fsm:{gone.id}:{gone.id}:default:data": json.dumps({"full_name": ANSWERS["full_name"]}),
        f"fsm:{gone.id}:{gone.id}:prefs:data": json.dumps({"language": "kk"}),
    }
    for name, value in left.items():
        await redis.set(name, value)
    current = redis_storage(sessions, vault, clock)
    try:
        key = StorageKey(bot_id=api.bot_id, chat_id=kept.id, user_id=kept.id)
        await current.set_state(key, Dialog.kind)
        await current.set_data(key, {"kind": "access"})
    finally:
        await current.close()
    since = len(api.calls())

    desk = Desk(
        api,
        service,
        sessions,
        vault,
        clock,
        STAFF_IDS,
        storage=lambda: redis_storage(sessions, vault, clock),
    )
    await desk.start()
    try:
        # Polling starts with deleteWebhook: the bot is ready for the person by then.
        started = await api.wait_until(
            lambda calls: next((c for c in calls[since:] if c.method == "deleteWebhook"), None),
            timeout=15,
        )
        assert started is not None
    finally:
        await desk.stop()

    assert await records(redis, gone.id) == {}
    assert len(await records(redis, kept.id)) == 2


# ``aina-dsr run`` with DSR_REDIS_URL: the TTLs come from the settings.


async def test_run_seals_dialogs_in_redis_with_the_configured_ttls(
    api: BotAPI, redis: Any, people: list[int], tmp_path: Path, encryption_key: str
) -> None:
    who = newcomer(people, "en")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "DSR_ENCRYPTION_KEY": encryption_key,
        "DSR_TELEGRAM_BOT_TOKEN": api.token,
        "DSR_TELEGRAM_API_URL": api.base,
        "DSR_STAFF_CHAT_ID": str(STAFF_CHAT),
        "DSR_STAFF_USER_IDS": ",".join(map(str, sorted(STAFF_IDS))),
        "DSR_REDIS_URL": REDIS_URL,
        "DSR_DIALOG_TTL_HOURS": "5",
        "DSR_RETENTION_DAYS": "30",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aina_dsr",
        "run",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await api.wait_for("getMe", timeout=30)
        await api.offer(api.private_message(who, "/language"))
        menu = await api.wait_for("sendMessage", lambda c: c.chat_id == who.id, timeout=15)
        choice = LanguageChoice(code="ru").pack()
        await api.offer(api.callback_query(who, who.id, message_id(menu), choice))
        await api.wait_for(
            "editMessageText", lambda c: text(c) == words("ru", "language.set"), timeout=15
        )
        await api.offer(api.private_message(who, "/start"))
        await api.wait_for(
            "sendMessage", lambda c: text(c).startswith(words("ru", "start.choose")), timeout=15
        )
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()

    held = await records(redis, who.id)
    dialog = [name for name in held if ":default:" in name]
    assert dialog and held[f"fsm:{who.id}:{who.id}:prefs:data"]
    for name in dialog:
        assert 5 * 3600 - 60 < await redis.ttl(name) <= 5 * 3600
    assert 30 * 86400 - 60 < await redis.ttl(f"fsm:{who.id}:{who.id}:prefs:data") <= 30 * 86400
    for value in held.values():
        assert sealed(Vault(encryption_key), value)
