"""Dialog state survives a restart: in the database by default, in Redis when configured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import BaseStorage, StorageKey
from aiogram.fsm.storage.memory import SimpleEventIsolation
from aiogram.fsm.storage.redis import RedisEventIsolation, RedisStorage
from aiogram.types import Chat, Message, Update, User
from sqlalchemy import event, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.channel import TelegramChannel, make_bot
from bot.config import BotConfig
from bot.storage import DatabaseStorage, make_events_isolation, make_fsm_storage
from bot.update_cache import AfterDialogWrites, UpdateCacheMiddleware, this_update
from tests.clocks import FrozenClock
from workflows.channel_state.dialogs import DialogRow, DialogStore
from workflows.outbox.queue import Audience, Channel, DeliveryReceipt, OutgoingMessage
from workflows.persistence.engines import make_engine, make_sessionmaker
from workflows.persistence.tables import ConversationState
from workflows.privacy.vault import Vault
from workflows.requests.intake import SharedContact
from workflows.requests.service import RequestService

REDIS_URL = "redis://127.0.0.1:6379/15"
# The file's tests share Redis database 15 (flushed by each): with pytest-xdist they run
# on one worker, one after another (``--dist loadgroup``), never two at once.
pytestmark = pytest.mark.xdist_group("redis-15")
BOT_ID = 42
FULL_NAME = "Айгерим Нурлановна Сейткали"
EMAIL = "aigerim.seitkali@example.kz"


class Form(StatesGroup):
    name = State()
    email = State()


def unique_key(destiny: str = "default") -> StorageKey:
    # Chat and user ids of our own, so a shared Redis holds nothing else under them.
    person = -(10**12 + uuid.uuid4().int % 10**9)
    return StorageKey(bot_id=BOT_ID, chat_id=person, user_id=person, destiny=destiny)


@pytest.fixture
def keys_used() -> list[StorageKey]:
    return []


@pytest.fixture
async def redis_fsm_storage(
    keys_used: list[StorageKey], vault: Vault, clock: FrozenClock
) -> AsyncIterator[BaseStorage]:
    """The storage ``make_fsm_storage`` gives with a Redis URL; cleans up the keys used."""
    pytest.importorskip("redis", reason="the redis package is not installed (aiogram[redis])")
    from redis.exceptions import RedisError

    # With Redis configured, the database's sessions are not used for dialog state.
    storage = make_fsm_storage(REDIS_URL, async_sessionmaker(), vault, clock)
    assert isinstance(storage, RedisStorage)
    try:
        await cast("Awaitable[bool]", storage.redis.ping())
    except (RedisError, OSError) as exc:
        await storage.close()
        pytest.skip(f"Redis is not answering at {REDIS_URL}: {exc}")
    try:
        yield storage
    finally:
        for key in keys_used:
            async for name in storage.redis.scan_iter(match=f"fsm:{key.chat_id}:*"):
                await storage.redis.delete(name)
        await storage.close()


@pytest.fixture(params=["database", "redis"])
def fsm_storage(
    request: pytest.FixtureRequest,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> BaseStorage:
    """The storage the bot runs with: the default one, or Redis when configured."""
    if request.param == "redis":
        storage: BaseStorage = request.getfixturevalue("redis_fsm_storage")
        return storage
    # Closing a DatabaseStorage is a no-op: the engine belongs to the ``engine`` fixture.
    return make_fsm_storage(None, sessions, vault, clock)


def key_for(keys_used: list[StorageKey], destiny: str = "default") -> StorageKey:
    key = unique_key(destiny)
    keys_used.append(key)
    return key


# The contract both storages keep.


async def test_state_and_data_round_trip(
    fsm_storage: BaseStorage, keys_used: list[StorageKey]
) -> None:
    key = key_for(keys_used)

    await fsm_storage.set_state(key, Form.name)
    await fsm_storage.set_data(key, {"full_name": FULL_NAME, "attempts": 1})

    assert await fsm_storage.get_state(key) == "Form:name"
    assert await fsm_storage.get_data(key) == {"full_name": FULL_NAME, "attempts": 1}
    assert await fsm_storage.get_value(key, "full_name") == FULL_NAME

    await fsm_storage.set_state(key, "Form:email")
    assert await fsm_storage.get_state(key) == "Form:email"
    assert await fsm_storage.get_data(key) == {"full_name": FULL_NAME, "attempts": 1}


async def test_an_unknown_person_has_no_state_and_no_data(
    fsm_storage: BaseStorage, keys_used: list[StorageKey]
) -> None:
    key = key_for(keys_used)

    assert await fsm_storage.get_state(key) is None
    assert await fsm_storage.get_data(key) == {}
    assert await fsm_storage.get_value(key, "full_name", "none given") == "none given"


async def test_update_data_merges_into_what_is_there(
    fsm_storage: BaseStorage, keys_used: list[StorageKey]
) -> None:
    key = key_for(keys_used)
    await fsm_storage.set_data(key, {"full_name": FULL_NAME, "email": "old@example.kz"})

    merged = await fsm_storage.update_data(key, {"email": EMAIL})

    expected = {"full_name": FULL_NAME, "email": EMAIL}
    assert merged == expected
    assert await fsm_storage.get_data(key) == expected
    # Starting from nothing works too.
    fresh = key_for(keys_used)
    assert await fsm_storage.update_data(fresh, {"email": EMAIL}) == {"email": EMAIL}


async def test_destinies_are_separate_records(
    fsm_storage: BaseStorage, keys_used: list[StorageKey]
) -> None:
    dialog = key_for(keys_used)
    language = StorageKey(
        bot_id=dialog.bot_id, chat_id=dialog.chat_id, user_id=dialog.user_id, destiny="language"
    )
    await fsm_storage.set_state(dialog, Form.name)
    await fsm_storage.set_data(dialog, {"full_name": FULL_NAME})

    await fsm_storage.set_data(language, {"language": "kk"})
    await fsm_storage.set_state(dialog, None)
    await fsm_storage.set_data(dialog, {})

    assert await fsm_storage.get_data(language) == {"language": "kk"}
    assert await fsm_storage.get_state(language) is None
    assert await fsm_storage.get_state(dialog) is None
    assert await fsm_storage.get_data(dialog) == {}


async def test_clearing_forgets_state_and_data(
    fsm_storage: BaseStorage, keys_used: list[StorageKey]
) -> None:
    key = key_for(keys_used)
    await fsm_storage.set_state(key, Form.email)
    await fsm_storage.set_data(key, {"full_name": FULL_NAME})

    await fsm_storage.set_state(key, None)
    assert await fsm_storage.get_state(key) is None
    assert await fsm_storage.get_data(key) == {"full_name": FULL_NAME}

    await fsm_storage.set_data(key, {})
    assert await fsm_storage.get_data(key) == {}


async def test_data_must_be_a_dict(fsm_storage: BaseStorage, keys_used: list[StorageKey]) -> None:
    key = key_for(keys_used)
    with pytest.raises(DataNotDictLikeError):
        await fsm_storage.set_data(key, [("full_name", FULL_NAME)])  # type: ignore[arg-type]


# The database storage.


async def test_a_restart_finds_the_dialog_where_it_was(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    encryption_key: str,
    vault: Vault,
    clock: FrozenClock,
) -> None:
    key = unique_key()
    before = DatabaseStorage(sessions, vault, clock)
    await before.set_state(key, Form.email)
    await before.set_data(key, {"full_name": FULL_NAME})
    await before.close()
    await engine.dispose()

    # A new process: a new engine on the same database, a vault from the same key.
    restarted = make_engine(database_url)
    try:
        after = DatabaseStorage(make_sessionmaker(restarted), Vault(encryption_key), clock)
        assert await after.get_state(key) == "Form:email"
        assert await after.get_data(key) == {"full_name": FULL_NAME}
    finally:
        await restarted.dispose()


async def test_a_cleared_dialog_leaves_no_row(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, clock: FrozenClock
) -> None:
    storage = DatabaseStorage(sessions, vault, clock)
    key = unique_key()
    await storage.set_state(key, Form.name)
    await storage.set_data(key, {"full_name": FULL_NAME})

    await storage.set_state(key, None)
    await storage.set_data(key, {})

    async with sessions() as session:
        assert (await session.scalars(select(ConversationState))).all() == []


async def test_typed_text_is_not_stored_in_clear(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    storage = DatabaseStorage(sessions, vault, clock)
    key = unique_key()
    await storage.set_state(key, Form.email)
    await storage.update_data(key, {"full_name": FULL_NAME, "email": EMAIL})

    async with sessions() as session:
        row = (await session.execute(text("SELECT * FROM conversation_state"))).one()
        (row_text,) = (
            await session.execute(text("SELECT CAST(t AS text) FROM conversation_state AS t"))
            if engine.dialect.name == "postgresql"
            else await session.execute(text("SELECT key || state FROM conversation_state"))
        ).one()
        stored = (await session.scalars(select(ConversationState))).one()

    assert stored.updated_at == clock.now()
    assert vault.decrypt_json(stored.data_enc) == {"full_name": FULL_NAME, "email": EMAIL}
    for typed in (FULL_NAME, EMAIL):
        assert typed not in row_text
        assert typed.encode() not in bytes(row.data_enc)
        assert typed.encode().hex() not in row_text
    if engine.dialect.name == "sqlite":
        await engine.dispose()
        database = Path(str(make_url(database_url).database))
        on_disk = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
        assert b"Form:email" in on_disk  # the files are the ones the storage wrote to
        for typed in (FULL_NAME, EMAIL):
            assert typed.encode() not in on_disk


async def test_defaults_without_redis(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, clock: FrozenClock
) -> None:
    assert isinstance(make_fsm_storage(None, sessions, vault, clock), DatabaseStorage)
    assert isinstance(make_events_isolation(None), SimpleEventIsolation)


# The storage behind a real dispatcher.


def dialog_router() -> Router:
    router = Router(name="dialog")

    @router.message(F.text == "/start")
    async def start(message: Message, state: FSMContext) -> None:
        await state.set_state(Form.name)

    @router.message(Form.name)
    async def took_name(message: Message, state: FSMContext) -> None:
        await state.update_data(full_name=message.text)
        await state.set_state(Form.email)

    @router.message(Form.email)
    async def took_email(message: Message, state: FSMContext, seen: list[dict[str, Any]]) -> None:
        seen.append(await state.update_data(email=message.text))
        await state.clear()

    return router


def message_update(update_id: int, person: int, typed: str, clock: FrozenClock) -> Update:
    return Update(
        update_id=update_id,
        message=Message(
            message_id=update_id,
            date=clock.now(),
            chat=Chat(id=person, type="private"),
            from_user=User(id=person, is_bot=False, first_name="Aigerim"),
            text=typed,
        ),
    )


async def test_a_dialog_started_before_a_restart_finishes_after_it(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    person = 700200
    bot = Bot(token=f"{BOT_ID}:TEST-TOKEN")
    seen: list[dict[str, Any]] = []
    try:
        before = Dispatcher(
            storage=DatabaseStorage(sessions, vault, clock),
            events_isolation=make_events_isolation(None),
            seen=seen,
        )
        before.include_router(dialog_router())
        await before.feed_update(bot, message_update(1, person, "/start", clock))
        await before.feed_update(bot, message_update(2, person, FULL_NAME, clock))
        await before.fsm.close()
        await engine.dispose()

        restarted = make_engine(database_url)
        try:
            after = Dispatcher(
                storage=DatabaseStorage(make_sessionmaker(restarted), vault, clock), seen=seen
            )
            after.include_router(dialog_router())
            await after.feed_update(bot, message_update(3, person, EMAIL, clock))

            assert seen == [{"full_name": FULL_NAME, "email": EMAIL}]
            context = after.fsm.get_context(bot, chat_id=person, user_id=person)
            assert await context.get_state() is None
            assert await context.get_data() == {}
        finally:
            await restarted.dispose()
    finally:
        await bot.session.close()


# Redis: events isolation across replicas.


async def test_redis_events_isolation_locks_one_person(
    redis_fsm_storage: BaseStorage, keys_used: list[StorageKey]
) -> None:
    isolation = make_events_isolation(REDIS_URL)
    assert isinstance(isolation, RedisEventIsolation)
    key = key_for(keys_used)
    lock_name = f"fsm:{key.chat_id}:{key.user_id}:default:lock"
    try:
        async with isolation.lock(key):
            assert await isolation.redis.exists(lock_name) == 1
        assert await isolation.redis.exists(lock_name) == 0
    finally:
        await isolation.close()


@contextlib.contextmanager
def dialog_statements(engine: AsyncEngine, *verbs: str) -> Iterator[list[str]]:
    """The statements on ``conversation_state`` starting with one of ``verbs``, while open."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        verb = statement.lstrip().split(" ", 1)[0].upper()
        if verb in verbs and "conversation_state" in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


async def test_one_update_reads_its_dialog_row_once(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    storage = DatabaseStorage(sessions, vault, clock)
    key = StorageKey(bot_id=1, chat_id=5, user_id=5)
    await storage.set_state(key, "Form:name")
    await storage.set_data(key, {"a": 1})

    async def handler(update: Any, data: dict[str, Any]) -> None:
        assert await storage.get_state(key) == "Form:name"
        assert await storage.get_data(key) == {"a": 1}
        merged = await storage.update_data(key, {"b": 2})
        merged["c"] = 3  # a caller's copy, not the cache
        assert await storage.get_data(key) == {"a": 1, "b": 2}

    with dialog_statements(engine, "SELECT") as reads:
        await UpdateCacheMiddleware()(handler, cast(Any, None), {})
    assert len(reads) == 1
    # Outside an update nothing is cached, and the database holds the merge.
    assert await DatabaseStorage(sessions, vault, clock).get_data(key) == {"a": 1, "b": 2}


# Within an update: one write, before the reply; many updates share a transaction.


async def test_one_update_writes_its_dialog_once(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    storage = DatabaseStorage(sessions, vault, clock)
    key = StorageKey(bot_id=1, chat_id=6, user_id=6)

    async def handler(update: Any, data: dict[str, Any]) -> None:
        await storage.set_state(key, Form.name)
        await storage.set_data(key, {"full_name": FULL_NAME})
        await storage.update_data(key, {"email": EMAIL})
        await storage.set_state(key, Form.email)

    with dialog_statements(engine, "INSERT", "UPDATE", "DELETE") as writes:
        await UpdateCacheMiddleware()(handler, cast(Any, None), {})
    assert len(writes) == 1
    fresh = DatabaseStorage(sessions, vault, clock)
    assert await fresh.get_state(key) == Form.email.state
    assert await fresh.get_data(key) == {"full_name": FULL_NAME, "email": EMAIL}


async def test_the_outbox_is_woken_only_once_the_dialog_write_is_committed(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # A handler files a request (its confirmation waits in the outbox), clears the
    # dialog and wakes the outbox: the outbox must not deliver before the dialog is stored.
    storage = DatabaseStorage(sessions, vault, clock)
    key = StorageKey(bot_id=1, chat_id=9, user_id=9)
    await storage.set_state(key, Form.name)
    wake = AfterDialogWrites()
    stored_when_woken: list[str | None] = []

    async def outbox() -> None:
        await wake.wait()
        stored_when_woken.append(await DatabaseStorage(sessions, vault, clock).get_state(key))

    delivering = asyncio.create_task(outbox())

    async def handler(update: Any, data: dict[str, Any]) -> None:
        await storage.set_state(key, None)
        wake.set()
        for _ in range(20):  # the update goes on (the outbox, woken, would run meanwhile)
            await asyncio.sleep(0)
        assert not wake.is_set()

    await UpdateCacheMiddleware()(handler, cast(Any, None), {})
    await asyncio.wait_for(delivering, timeout=10)
    assert stored_when_woken == [None]
    wake.clear()
    wake.set()  # outside an update (or with nothing owed) the call is made at once
    assert wake.is_set()


async def test_updates_at_the_same_moment_share_one_transaction(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    storage = DatabaseStorage(sessions, vault, clock)
    people = range(700300, 700320)
    arrived, go = asyncio.Event(), asyncio.Event()
    waiting: list[int] = []

    async def update(person: int) -> None:
        key = StorageKey(bot_id=1, chat_id=person, user_id=person)

        async def handler(event_: Any, data: dict[str, Any]) -> None:
            await storage.set_state(key, Form.name)
            await storage.update_data(key, {"full_name": f"{FULL_NAME} {person}"})
            waiting.append(person)
            if len(waiting) == len(people):
                arrived.set()
            await go.wait()

        await UpdateCacheMiddleware()(handler, cast(Any, None), {})

    tasks = [asyncio.create_task(update(person)) for person in people]
    await asyncio.wait_for(arrived.wait(), timeout=10)
    commits: list[int] = []

    def hook(conn: Any) -> None:
        commits.append(1)

    event.listen(engine.sync_engine, "commit", hook)
    try:
        go.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    finally:
        event.remove(engine.sync_engine, "commit", hook)
    # Twenty people's updates ended together: one transaction wrote all their dialogs.
    assert len(commits) == 1
    fresh = DatabaseStorage(sessions, vault, clock)
    for person in people:
        key = StorageKey(bot_id=1, chat_id=person, user_id=person)
        assert await fresh.get_state(key) == Form.name.state
        assert await fresh.get_data(key) == {"full_name": f"{FULL_NAME} {person}"}


async def test_a_failed_write_fails_the_update_and_is_read_again(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    storage = DatabaseStorage(sessions, vault, clock, remember=10)
    key = StorageKey(bot_id=1, chat_id=7, user_id=7)
    await storage.set_state(key, Form.name)

    def refuse(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT") and "conversation_state" in statement:
            raise RuntimeError("the disk is full")

    async def handler(update: Any, data: dict[str, Any]) -> None:
        await storage.set_state(key, Form.email)

    event.listen(engine.sync_engine, "before_cursor_execute", refuse)
    try:
        with pytest.raises(Exception, match="the disk is full"):
            await UpdateCacheMiddleware()(handler, cast(Any, None), {})
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", refuse)
    # Nothing pretends the failed write happened: the state is the one the database holds.
    assert await storage.get_state(key) == Form.name.state


class _Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_polling_desk_remembers_dialogs_between_updates(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    ticks = _Ticks()
    storage = DatabaseStorage(sessions, vault, clock, remember=2, monotonic=ticks)
    assert isinstance(
        make_fsm_storage(None, sessions, vault, clock, sole_handler=True), DatabaseStorage
    )
    keys = [StorageKey(bot_id=1, chat_id=person, user_id=person) for person in (8, 9, 10)]

    async def write(key: StorageKey, name: str) -> None:
        async def handler(update: Any, data: dict[str, Any]) -> None:
            await storage.update_data(key, {"full_name": name})

        await UpdateCacheMiddleware()(handler, cast(Any, None), {})

    await write(keys[0], FULL_NAME)
    with dialog_statements(engine, "SELECT") as reads:
        assert await storage.get_data(keys[0]) == {"full_name": FULL_NAME}
        assert reads == []  # remembered from its own write
        # Changed from outside (another tool): seen once the memory's time is up.
        await DatabaseStorage(sessions, vault, clock).set_data(keys[0], {"full_name": "Dana"})
        reads.clear()
        assert await storage.get_data(keys[0]) == {"full_name": FULL_NAME}
        ticks.now += 601
        assert await storage.get_data(keys[0]) == {"full_name": "Dana"}
        assert len(reads) == 1
        # Two dialogs at most: the oldest is read again.
        await write(keys[1], "B")
        await write(keys[2], "C")
        reads.clear()
        assert await storage.get_data(keys[2]) == {"full_name": "C"}
        assert reads == []
        assert await storage.get_data(keys[0]) == {"full_name": "Dana"}
        assert len(reads) == 1


async def test_a_webhook_replica_does_not_remember_dialogs(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # Behind a webhook another replica may take the person's next update.
    storage = make_fsm_storage(None, sessions, vault, clock, sole_handler=False)
    other = make_fsm_storage(None, sessions, vault, clock, sole_handler=False)
    key = StorageKey(bot_id=1, chat_id=11, user_id=11)
    await storage.set_state(key, Form.name)
    await other.set_state(key, Form.email)
    assert await storage.get_state(key) == Form.email.state


async def test_a_new_persons_dialog_and_choices_are_read_in_one_query(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    storage = make_fsm_storage(None, sessions, vault, clock, sole_handler=True)
    dialog = StorageKey(bot_id=1, chat_id=12, user_id=12)
    prefs = StorageKey(bot_id=1, chat_id=12, user_id=12, destiny="prefs")
    await DatabaseStorage(sessions, vault, clock).set_data(prefs, {"language": "kk"})
    with dialog_statements(engine, "SELECT") as reads:
        assert await storage.get_state(dialog) is None
        assert await storage.get_data(prefs) == {"language": "kk"}
    assert len(reads) == 1


async def test_setting_what_is_there_already_writes_nothing(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    storage = DatabaseStorage(sessions, vault, clock)
    key = StorageKey(bot_id=1, chat_id=13, user_id=13)
    await storage.set_state(key, Form.name)
    await storage.set_data(key, {"full_name": FULL_NAME})

    async def handler(update: Any, data: dict[str, Any]) -> None:
        await storage.set_state(key, Form.name)
        await storage.update_data(key, {"full_name": FULL_NAME})

    with dialog_statements(engine, "INSERT", "UPDATE", "DELETE") as writes:
        await UpdateCacheMiddleware()(handler, cast(Any, None), {})
    assert writes == []
    assert await DatabaseStorage(sessions, vault, clock).get_data(key) == {"full_name": FULL_NAME}


# Redis: what it returns is trusted only when the desk sealed it for that very record.


async def test_redis_holds_dialogs_sealed_with_the_desks_key(
    redis_fsm_storage: BaseStorage, keys_used: list[StorageKey], vault: Vault
) -> None:
    assert isinstance(redis_fsm_storage, RedisStorage)
    key = key_for(keys_used)
    await redis_fsm_storage.set_state(key, Form.email)
    await redis_fsm_storage.set_data(key, {"full_name": FULL_NAME, "email": EMAIL})

    for part in ("state", "data"):
        raw = await redis_fsm_storage.redis.get(f"fsm:{key.chat_id}:{key.user_id}:default:{part}")
        assert raw is not None
        vault.decrypt(raw)  # a token of the desk's key, or VaultError
        for typed in (FULL_NAME, EMAIL, "Form:email"):
            assert typed.encode() not in raw


@pytest.mark.parametrize(
    "planted",
    ["in clear", "not a token", "another key's token", "another person's record", "a state"],
)
async def test_a_redis_value_the_desk_did_not_seal_for_that_record_is_no_dialog(
    redis_fsm_storage: BaseStorage,
    keys_used: list[StorageKey],
    caplog: pytest.LogCaptureFixture,
    planted: str,
) -> None:
    assert isinstance(redis_fsm_storage, RedisStorage)
    redis = redis_fsm_storage.redis
    key, other = key_for(keys_used), key_for(keys_used)
    data, state = (f"fsm:{key.chat_id}:{key.user_id}:default:{part}" for part in ("data", "state"))
    proof = {"proof": {"method": "contact", "phone": "+77017654321", "user_id": key.user_id}}
    if planted == "in clear":
        await redis.set(data, json.dumps({**proof, "full_name": FULL_NAME}))
        await redis.set(state, "Form:email")
    elif planted == "not a token":
        await redis.set(data, b"\x00\xffgAAAA")
        await redis.set(state, b"\x00\xff")
    elif planted == "another key's token":
        stranger = Vault(Vault.generate_key())
        await redis.set(data, stranger.encrypt_json({**proof, "full_name": FULL_NAME}))
        await redis.set(state, stranger.encrypt_json("Form:email"))
    else:
        # Sealed by the desk, but for another record: moved, it proves nothing.
        source = other if planted == "another person's record" else key
        await redis_fsm_storage.set_state(source, Form.email)
        await redis_fsm_storage.set_data(source, {**proof, "full_name": FULL_NAME})
        theirs = f"fsm:{source.chat_id}:{source.user_id}:default:"
        moved = (await redis.get(theirs + "data"), await redis.get(theirs + "state"))
        if planted == "a state":
            moved = (moved[1], moved[0])  # the person's own two records, each in the other's place
        await redis.set(data, cast(bytes, moved[0]))
        await redis.set(state, cast(bytes, moved[1]))
        if source is other:
            assert await redis_fsm_storage.get_data(other) == {**proof, "full_name": FULL_NAME}

    caplog.set_level(logging.WARNING)
    assert await redis_fsm_storage.get_data(key) == {}
    assert await redis_fsm_storage.get_state(key) is None
    assert await redis_fsm_storage.get_value(key, "proof") is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, "an unsealed record is worth a warning"
    logged = " ".join(r.getMessage() for r in warnings)
    for personal in (FULL_NAME, "+77017654321", str(key.user_id)):
        assert personal not in logged
    # The person's next write replaces what was planted.
    await redis_fsm_storage.update_data(key, {"email": EMAIL})
    assert await redis_fsm_storage.get_data(key) == {"email": EMAIL}


async def test_redis_records_expire_dialogs_sooner_than_choices(
    vault: Vault, clock: FrozenClock, keys_used: list[StorageKey]
) -> None:
    pytest.importorskip("redis", reason="the redis package is not installed (aiogram[redis])")
    storage = make_fsm_storage(
        REDIS_URL,
        async_sessionmaker(),
        vault,
        clock,
        dialog_ttl=timedelta(hours=5),
        choices_ttl=timedelta(days=30),
    )
    assert isinstance(storage, RedisStorage)
    try:
        try:
            await cast("Awaitable[bool]", storage.redis.ping())
        except OSError as exc:
            pytest.skip(f"Redis is not answering at {REDIS_URL}: {exc}")
        dialog, prefs = key_for(keys_used), key_for(keys_used, "prefs")
        await storage.set_data(dialog, {"full_name": FULL_NAME})
        await storage.set_state(dialog, Form.name)
        await storage.set_data(prefs, {"language": "kk"})
        for name, seconds in (
            (f"fsm:{dialog.chat_id}:{dialog.user_id}:default:data", 5 * 3600),
            (f"fsm:{dialog.chat_id}:{dialog.user_id}:default:state", 5 * 3600),
            (f"fsm:{prefs.chat_id}:{prefs.user_id}:prefs:data", 30 * 86400),
        ):
            assert seconds - 60 < await storage.redis.ttl(name) <= seconds, name
    finally:
        for key in keys_used:
            async for name in storage.redis.scan_iter(match=f"fsm:{key.chat_id}:*"):
                await storage.redis.delete(name)
        await storage.close()


# The person's confirmation of a filing waits for the filing update's dialog write, whoever
# runs the outbox in between: this process's own round or another replica's.


class GatedDialogs(DialogStore):
    """A dialog store whose save waits at a gate the test opens (its commit is the window)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saving = asyncio.Event()
        self.gate = asyncio.Event()

    async def save(self, rows: dict[str, DialogRow]) -> None:
        self.saving.set()
        await self.gate.wait()
        await super().save(rows)


class RecordingPort:
    """The Telegram port of a desk under test: keeps what it was asked to deliver."""

    channel = Channel.TELEGRAM

    def __init__(self) -> None:
        self.delivered: list[OutgoingMessage] = []

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
        self.delivered.append(message)
        return DeliveryReceipt(external_id=f"ext-{message.id}", body=message.template)

    def to_the_person(self) -> list[str]:
        return [m.template for m in self.delivered if m.audience is Audience.SUBJECT]

    def to_staff(self) -> list[str]:
        return [m.template for m in self.delivered if m.audience is not Audience.SUBJECT]


def telegram_desk(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    port: RecordingPort,
) -> TelegramChannel:
    """One replica of the bot, as production wires it, its deliveries recorded by ``port``."""
    return TelegramChannel(
        bot=make_bot("42:TEST", None),
        config=BotConfig(staff_chat_id=-100777, staff_user_ids=frozenset({5001})),
        service=service,
        sessions=sessions,
        vault=vault,
        clock=clock,
        storage=DatabaseStorage(sessions, vault, clock),
        events_isolation=SimpleEventIsolation(),
        extra_ports=(port,),  # in place of the Bot API
    )


@pytest.mark.parametrize("in_the_window", ["its own round", "another replica"])
async def test_a_filings_confirmation_waits_for_the_dialog_write_whoever_runs_the_outbox(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    in_the_window: str,
) -> None:
    sent, sent_by_replica = RecordingPort(), RecordingPort()
    desk = telegram_desk(service, sessions, vault, clock, sent)
    replica = telegram_desk(service, sessions, vault, clock, sent_by_replica)
    [cache] = [
        m for m in desk.dispatcher.update.outer_middleware if isinstance(m, UpdateCacheMiddleware)
    ]
    dialogs = GatedDialogs(sessions, vault, clock)
    person = 700900
    name = f"42:{person}:{person}"

    async def files_and_clears_the_dialog(update: Any, data: dict[str, Any]) -> None:
        # As bot.dialog.filing does: the filing commits with its outbox rows, then the
        # handler clears the dialog (a write the update owes) and wakes the outbox.
        await service.open_request(
            kind="access",
            channel="telegram",
            language="en",
            telegram_user_id=person,
            contact=SharedContact(user_id=person, phone="77011234567"),  # verified at once
        )
        rows = this_update()
        assert rows is not None
        rows.rows[name] = {"state": None, "data": {}}
        rows.owed[name] = dialogs
        desk.config.outbox_wake.set()

    update = asyncio.create_task(cache(files_and_clears_the_dialog, cast(Any, None), {}))
    await asyncio.wait_for(dialogs.saving.wait(), timeout=10)
    # The window: the filing is committed, the dialog write is not yet.
    outbox = desk.outbox if in_the_window == "its own round" else replica.outbox
    await outbox.run_once()
    assert sent.to_the_person() == []
    assert sent_by_replica.to_the_person() == []
    # The staff card is not held: it went at once, as it always did.
    assert (sent if outbox is desk.outbox else sent_by_replica).to_staff() == ["staff_card"]

    dialogs.gate.set()
    await asyncio.wait_for(update, timeout=10)
    # Right after the write commits (the clock has not moved) this desk delivers it.
    await replica.outbox.run_once()
    await desk.outbox.run_once()
    assert sent.to_the_person() == ["request_verified"]
    assert sent_by_replica.to_the_person() == []
    assert desk.holds.released() == frozenset()  # claimed: forgotten
