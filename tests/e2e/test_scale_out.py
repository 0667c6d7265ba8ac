"""Two ``aina-dsr run`` replicas on one PostgreSQL schema and one Redis behave as one desk.

People talk to the bot through the webhook, each update going to the other
replica than the one before (what a load balancer does); letters arrive in
the mailbox. Every dialog and every letter becomes one request, every
acknowledgement is sent once, one replica runs the scheduler and reads the
mailbox, and when it is killed the other takes both over.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aina_dsr.settings import Settings
from bot.callbacks import KindChoice, SummaryChoice
from mail.channel import POLLER_LOCK
from tests.botapi import BotAPI, Call, Person
from tests.conftest import STAFF_IDS, postgres_url
from tests.desk_process import (
    DeskProcess,
    PostgresSchema,
    access_letter,
    aina_dsr,
    append_all,
    base_env,
    eventually,
    free_port,
    lock_holders,
    mail_env,
    postgres_schema,
    processes,
)
from tests.mailservers import Dovecot, SmtpServer, dovecot, smtp_server
from tests.metrics_scrape import by_label, scrape
from tests.telegram_desk import STAFF_CHAT, buttons, message_id, words
from workflows.deadlines.leader_lock import SCHEDULER_LOCK, advisory_key
from workflows.kinds import DEFAULT_KINDS, RequestKind
from workflows.persistence.engines import make_engine

__all__ = ["dovecot", "smtp_server"]

REDIS_URL = "redis://127.0.0.1:6379/14"  # a database of its own, flushed before and after
WEBHOOK_PATH = "/telegram"
PHONE = "+77011234567"
ANSWERS = {"full_name": "Серікова Әлия", "data_concerned": "all of it", "contact": "a@b.kz"}
PEOPLE = [
    (Person(710001, language_code="kk"), RequestKind.ACCESS),
    (Person(710002, language_code="ru"), RequestKind.WITHDRAW_CONSENT),
    (Person(710003, language_code="en"), RequestKind.ACCESS),
    (Person(710004, language_code="ru"), RequestKind.DELETE_ACCOUNT),
    (Person(710005, language_code="en"), RequestKind.WITHDRAW_CONSENT),
    (Person(710006, language_code="kk"), RequestKind.UNSUBSCRIBE),
]
LETTERS = 6

pytestmark = [
    pytest.mark.skipif(
        postgres_url() is None,
        reason="scale-out needs PostgreSQL: set DSR_TEST_DATABASE_URL (and run Redis on 6379)",
    ),
    pytest.mark.xdist_group("redis-14"),  # its Redis database: one test of it at a time
]


@pytest.fixture
async def redis_db() -> AsyncIterator[str]:
    """Redis database 14 on 127.0.0.1, empty; skipped with the reason when Redis is not there."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await cast(Awaitable[bool], client.ping())
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"scale-out needs Redis on 127.0.0.1:6379 ({type(exc).__name__})")
    await client.flushdb()
    try:
        yield REDIS_URL
    finally:
        await client.flushdb()
        await client.aclose()


class LoadBalancer:
    """Posts updates to the replicas' webhooks as Telegram would, with the secret header."""

    def __init__(self, api: BotAPI, http: aiohttp.ClientSession, ports: list[int]) -> None:
        self.api = api
        self.http = http
        self.ports = ports
        # No DSR_TELEGRAM_WEBHOOK_SECRET: every replica derives the same one from the token.
        self.secret = Settings(_env_file=None, telegram_bot_token=api.token).webhook_secret()
        self._update_ids = itertools.count(1)

    async def post(self, replica: int, update: dict[str, Any]) -> None:
        url = f"http://127.0.0.1:{self.ports[replica]}{WEBHOOK_PATH}"
        body = {"update_id": next(self._update_ids), **update}
        headers = {"X-Telegram-Bot-Api-Secret-Token": self.secret}
        async with self.http.post(url, json=body, headers=headers) as response:
            assert response.status == 200, await response.text()


async def reply(
    api: BotAPI, chat_id: int, since: int, predicate: Callable[[Call], bool], what: str
) -> Call:
    """The first message (or edit) to ``chat_id`` after call ``since`` that matches (bounded)."""

    def find(calls: list[Call]) -> Call | None:
        for call in calls[since:]:
            if (
                call.method in ("sendMessage", "editMessageText")
                and str(call.chat_id) == str(chat_id)
                and predicate(call)
            ):
                return call
        return None

    call = await api.wait_until(find, timeout=20)
    if call is None:
        sent = [str(c.params.get("text"))[:60] for c in api.sent_to(chat_id)]
        raise AssertionError(f"{chat_id} never got {what}; they got {sent}")
    return call


def said(language: str, msgid: str) -> Callable[[Call], bool]:
    return lambda call: call.params.get("text") == words(language, msgid)


async def whole_dialog(
    lb: LoadBalancer, who: Person, kind: RequestKind, replica: Callable[[int], int]
) -> None:
    """/start, the kind, its questions, the phone number, confirm: step ``n`` via ``replica(n)``."""
    api, language = lb.api, who.language_code or "ru"
    steps = itertools.count()
    since = len(api.calls())
    await lb.post(replica(next(steps)), api.private_message(who, "/start"))
    menu = await reply(api, who.id, since, lambda c: bool(buttons(c)), "the menu")
    since = len(api.calls())
    choice = KindChoice(kind=kind.value).pack()
    await lb.post(replica(next(steps)), api.callback_query(who, who.id, message_id(menu), choice))
    for name, question in DEFAULT_KINDS[kind].questions:
        await reply(api, who.id, since, said(language, question), question)
        since = len(api.calls())
        await lb.post(replica(next(steps)), api.private_message(who, ANSWERS[name]))
    await reply(api, who.id, since, said(language, "identity.ask"), "identity.ask")
    since = len(api.calls())
    await lb.post(replica(next(steps)), api.contact_message(who, who.id, PHONE))
    confirm = SummaryChoice(action="confirm").pack()
    summary = await reply(
        api, who.id, since, lambda c: confirm in buttons(c).values(), "the summary"
    )
    since = len(api.calls())
    await lb.post(
        replica(next(steps)), api.callback_query(who, who.id, message_id(summary), confirm)
    )
    await reply(api, who.id, since, said(language, "summary.sent"), "summary.sent")


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar()


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(text(sql), params)).all())


def holds(replica: DeskProcess, key: int) -> bool:
    """Whether the replica's log says it took the advisory lock ``key``."""
    return f"advisory lock {key}" in replica.log()


def replica_env(
    tmp_path: Path,
    pg: PostgresSchema,
    encryption_key: str,
    api: BotAPI,
    imap: Dovecot,
    smtp: SmtpServer,
    redis_url: str,
) -> dict[str, str]:
    return {
        **base_env(tmp_path, pg.url, encryption_key),
        **mail_env(imap, smtp),
        "DSR_REDIS_URL": redis_url,
        "DSR_TELEGRAM_BOT_TOKEN": api.token,
        "DSR_TELEGRAM_API_URL": api.base,
        "DSR_TELEGRAM_WEBHOOK_URL": f"https://desk.example{WEBHOOK_PATH}",
        "DSR_STAFF_CHAT_ID": str(STAFF_CHAT),
        "DSR_STAFF_USER_IDS": ",".join(map(str, sorted(STAFF_IDS))),
    }


async def test_two_replicas_take_a_stream_between_them_as_one_desk(
    api: BotAPI,
    dovecot: Dovecot,
    smtp_server: SmtpServer,
    redis_db: str,
    tmp_path: Path,
    encryption_key: str,
) -> None:
    async with postgres_schema() as pg:
        env = replica_env(tmp_path, pg, encryption_key, api, dovecot, smtp_server, redis_db)
        await aina_dsr(env, tmp_path, "db", "upgrade")  # once per release, by the operator
        ports, metrics_ports = [free_port(), free_port()], [free_port(), free_port()]
        a, b = (
            DeskProcess(
                name,
                {
                    **env,
                    "DSR_TELEGRAM_WEBHOOK_LISTEN": f"127.0.0.1:{port}",
                    "DSR_METRICS_PORT": str(metrics_port),
                },
                tmp_path,
            )
            for name, port, metrics_port in zip(
                ("replica-a", "replica-b"), ports, metrics_ports, strict=True
            )
        )
        scheduler_key = advisory_key(SCHEDULER_LOCK, pg.schema)
        poller_key = advisory_key(POLLER_LOCK, pg.schema)
        engine = make_engine(pg.query_url)
        try:
            async with processes(a, b), aiohttp.ClientSession() as http:
                # A first, so that it leads both; then B, which must only wait.
                await a.start()
                await eventually(
                    _async(lambda: holds(a, scheduler_key) and holds(a, poller_key)),
                    timeout=30,
                    what="replica A taking the scheduler and mailbox locks",
                )
                await b.start()
                await eventually(
                    _async(lambda: len(api.calls("setWebhook")) >= 2),
                    timeout=30,
                    what="both replicas registering the webhook",
                )
                lb = LoadBalancer(api, http, ports)

                append_all(dovecot, [access_letter(number) for number in range(LETTERS)])
                # Person i's step n goes to replica (i + n) % 2: consecutive updates of one
                # person always switch replicas, and the FSM state follows them through Redis.
                await asyncio.gather(
                    *(
                        whole_dialog(lb, who, kind, alternating(i))
                        for i, (who, kind) in enumerate(PEOPLE)
                    )
                )
                expected = len(PEOPLE) + LETTERS
                await eventually(
                    lambda: _all_delivered(engine, expected),
                    timeout=60,
                    what=f"{expected} requests with every notice delivered",
                )
                # A straggling duplicate could only come from a round in flight now.
                await every_round_ended(metrics_ports)

                await _one_request_per_dialog_and_letter(engine)
                await _nothing_twice(engine, api, smtp_server)
                # Both replicas handled updates (aiogram logs each); one led.
                assert "is handled" in a.log() and "is handled" in b.log()
                assert await lock_holders(engine, scheduler_key) == 1
                assert await lock_holders(engine, poller_key) == 1
                assert not holds(b, scheduler_key) and not holds(b, poller_key)
                assert "now reads the mailbox" not in b.log()

                # The leader dies without a word; B takes over both within a minute.
                await a.kill()
                started = time.monotonic()
                await eventually(
                    _async(lambda: holds(b, scheduler_key) and holds(b, poller_key)),
                    timeout=60,
                    what="replica B taking over the scheduler and the mailbox",
                )
                taken_over_in = time.monotonic() - started
                assert await lock_holders(engine, scheduler_key) == 1
                assert await lock_holders(engine, poller_key) == 1

                # And B alone now serves everything: a letter and a dialog.
                dovecot.append(access_letter(LETTERS))
                late = Person(710099, language_code="en")
                await whole_dialog(lb, late, RequestKind.ACCESS, lambda _n: 1)
                await eventually(
                    lambda: _all_delivered(engine, expected + 2),
                    timeout=60,
                    what="the letter and dialog after the takeover",
                )
                await every_round_ended(metrics_ports[1:])
                await _one_request_per_dialog_and_letter(engine)
                await _nothing_twice(engine, api, smtp_server)
                assert await b.stop() == 0, b.log()
        finally:
            await engine.dispose()
        assert taken_over_in < 60


async def rounds(port: int) -> tuple[dict[str, float], dict[str, float]]:
    """A replica's loops (outbox dispatchers, mailbox poller): rounds begun, rounds ended."""
    status, body = await scrape(port)
    assert status == 200, body
    return (
        by_label(body, "aina_dsr_rounds_started_total", "loop"),
        by_label(body, "aina_dsr_rounds_finished_total", "loop"),
    )


async def every_round_ended(metrics_ports: list[int]) -> None:
    """Until every round each replica's loops had begun is over (bounded: 30 s).

    A round begun from now on starts from a database where every row is sent
    and every letter taken: anything still to be doubled is in a round begun
    before now. So every loop of every replica (the Telegram and e-mail outbox
    dispatchers, the mailbox poller of the replica that reads it) must have
    ended as many rounds as it had begun; the Telegram outbox, which runs every
    second, one full round more. (The e-mail outbox waits 5 s between idle
    rounds and the poller sits in IMAP IDLE, so a further round of theirs would
    only add waiting, not certainty.)
    """
    begun = [(await rounds(port))[0] for port in metrics_ports]
    assert all(any(loop.startswith("outbox ") for loop in loops) for loops in begun), begun

    async def all_ended() -> bool:
        for port, before in zip(metrics_ports, begun, strict=True):
            _, finished = await rounds(port)
            for loop, count in before.items():
                if finished.get(loop, 0) < (count + 1 if loop == "outbox telegram" else count):
                    return False
        return True

    await eventually(all_ended, timeout=30, every=0.1, what="every replica's rounds ending")


def alternating(person: int) -> Callable[[int], int]:
    """Which replica takes a person's ``n``-th update: never the same twice in a row."""
    return lambda n: (person + n) % 2


def _async(condition: Callable[[], bool]) -> Callable[[], Any]:
    async def probe() -> bool:
        return condition()

    return probe


async def _all_delivered(engine: AsyncEngine, requests: int) -> bool:
    count = await scalar(engine, "SELECT count(*) FROM request")
    waiting = await scalar(engine, "SELECT count(*) FROM outbox WHERE status <> 'sent'")
    return bool(count == requests and waiting == 0)


async def _one_request_per_dialog_and_letter(engine: AsyncEngine) -> None:
    per_person = await rows(
        engine,
        "SELECT s.telegram_user_id, count(r.id) FROM request r "
        "JOIN data_subject s ON s.id = r.subject_id "
        "WHERE r.channel = 'telegram' GROUP BY s.telegram_user_id",
    )
    assert all(count == 1 for _, count in per_person), per_person
    mails = await rows(engine, "SELECT request_id FROM inbound_mail")
    assert all(request_id is not None for (request_id,) in mails), mails
    assert len({request_id for (request_id,) in mails}) == len(mails)
    email_requests = await scalar(engine, "SELECT count(*) FROM request WHERE channel = 'email'")
    assert email_requests == len(mails)


async def _nothing_twice(engine: AsyncEngine, api: BotAPI, smtp: SmtpServer) -> None:
    # The database: no message, outbox row or reminder twice.
    for sql in (
        # A staff card is one message edited in place: its edits (verified, approved,
        # completed: a kind done at once has all three) share its id, each its own outbox row.
        "SELECT m.request_id, m.direction, m.external_id, count(*) FROM message m "
        "LEFT JOIN outbox o ON o.id = m.outbox_id "
        "WHERE m.external_id IS NOT NULL AND (o.template IS NULL OR o.template <> 'staff_card') "
        "GROUP BY m.request_id, m.direction, m.external_id HAVING count(*) > 1",
        "SELECT outbox_id, count(*) FROM message WHERE outbox_id IS NOT NULL "
        "GROUP BY outbox_id HAVING count(*) > 1",
        "SELECT idempotency_key, count(*) FROM outbox GROUP BY idempotency_key HAVING count(*) > 1",
        # Every notice once; the card is refreshed once per event (see above), never
        # twice for one: the idempotency keys above hold that.
        "SELECT request_id, template, audience, channel, count(*) FROM outbox "
        "WHERE template <> 'staff_card' "
        "GROUP BY request_id, template, audience, channel HAVING count(*) > 1",
        "SELECT key, count(*) FROM scheduled_notice GROUP BY key HAVING count(*) > 1",
    ):
        assert await rows(engine, sql) == [], sql
    # Each outbox row delivered once: as many messages out as rows, and no text twice.
    sent = Counter((str(c.chat_id), c.params.get("text")) for c in api.calls("sendMessage"))
    assert [key for key, times in sent.items() if times > 1] == []
    telegram_rows = await scalar(
        engine, "SELECT count(*) FROM outbox WHERE channel = 'telegram' AND status = 'sent'"
    )
    email_rows = await scalar(
        engine, "SELECT count(*) FROM outbox WHERE channel = 'email' AND status = 'sent'"
    )
    assert len(smtp.letters) == email_rows
    letters = Counter(letter.message["Message-ID"] for letter in smtp.letters)
    assert [key for key, times in letters.items() if times > 1] == []
    acknowledged = Counter(tuple(letter.recipients) for letter in smtp.letters)
    assert all(times == 1 for times in acknowledged.values()), acknowledged
    assert telegram_rows > 0
