"""Telegram intake: many people filing an ``access`` request through the Bot API stand-in.

    python -m bench.telegram_intake                 # 1000 people, 3 runs
    python -m bench.telegram_intake --people 300    # fewer people
    python -m bench.telegram_intake --quick         # 200 people, 1 run

The stand-in (``tests/botapi.py``, a real aiohttp server on 127.0.0.1) and the
simulated people run in this process; the bot under test runs in a process of
its own, as in production, and reaches the stand-in over HTTP (long polling):

- the baseline: a bare aiogram echo bot (one reply per update, no storage);
- the floor (issue 18): the echo bot plus one durable dialog write per update,
  through the desk's own engine, dialog storage and group commit (the same
  settings as the desk: ``make_fsm_storage(..., sole_handler=True)``, the write
  committed before the reply by the same middlewares), on each backend;
- the desk: ``bot.channel.TelegramChannel`` with its database FSM storage, the
  outbox and the staff group, on SQLite and on PostgreSQL (a fresh schema on
  the ``test`` database, dropped after).

Every person goes through the whole dialog, four updates: /start, the
``access`` button, their own contact, "confirm". Latency is from an update
being offered to the reply it asks for being recorded by the stand-in.

Two loads: *closed* (every person sends their next update as soon as the
reply arrives: the most the bot can take, updates per second) and *fixed*
(updates offered at ``--rate``, 100 a second by default: the p99 at that load;
people arrive one after another, a person every 4/rate seconds, so the steps of
their dialogs mix, and the load starts once the bot is quiet after the first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aina_dsr.heap import settle_heap
from bench.common import (
    BENCH_KEY,
    Table,
    database,
    machine,
    median,
    migrated,
    percentile,
    ratio,
)
from tests.botapi import BotAPI, Call, Person
from tests.telegram_desk import STAFF_CHAT, buttons, message_id, words

STAFF_IDS = "5001,5002"


def phone_of(person: Person) -> str:
    """A person's own phone number, as in a day's traffic: the desk takes people who share
    a phone for one person, whose every request a staff card's access preview lists."""
    return f"+7701{person.id % 10_000_000:07d}"


FIRST_USER = 800_000_000
READY_SECONDS = 60.0
STATEMENTS = [0]  # SQL statements the desk's process ran (its own count)
# How long each BEGIN took, from the statement's start to its end (seconds): on SQLite a
# writer's BEGIN IMMEDIATE waits there for the database's write lock.
BEGINS: dict[str, list[float]] = {"BEGIN IMMEDIATE": [], "BEGIN": []}
STEP_SECONDS = 60.0  # a reply slower than this counts as lost


# -- the bot under test (its own process) -------------------------------------------


async def _echo(api_url: str, token: str, stop: asyncio.Event) -> None:
    from aiogram import Dispatcher, F
    from aiogram.types import CallbackQuery, Message

    from bot.channel import make_bot

    bot = make_bot(token, api_url)
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def echo(message: Message) -> None:
        await message.answer(message.text or "ok")

    @dispatcher.callback_query(F.message)
    async def pressed(query: CallbackQuery) -> None:
        await query.answer()
        assert query.message is not None
        await bot.send_message(query.message.chat.id, query.data or "ok")

    settle_heap()  # as `aina-dsr run` does once built, for every bot measured here
    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, polling_timeout=10)
    )
    await stop.wait()
    with contextlib.suppress(RuntimeError):
        await dispatcher.stop_polling()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(polling, timeout=15)
    await bot.session.close()


async def _floor(api_url: str, token: str, database_url: str, stop: asyncio.Event) -> None:
    """The echo bot plus one durable dialog write per update, as the desk stores dialogs.

    Each update moves the person's dialog to a new state and keeps what they
    sent in its data (sealed by the vault, as the desk's is), through the
    desk's own storage: read once, written before the reply by
    ``FlushBeforeSending`` and shared with other updates by the group commit.
    """
    from aiogram import Dispatcher, F
    from aiogram.fsm.context import FSMContext
    from aiogram.fsm.storage.memory import SimpleEventIsolation
    from aiogram.types import CallbackQuery, Message

    from bot.channel import make_bot
    from bot.storage import make_fsm_storage
    from bot.update_cache import FlushBeforeSending, UpdateCacheMiddleware
    from workflows.clock import SystemClock
    from workflows.persistence.engines import make_engine, make_sessionmaker
    from workflows.privacy.vault import Vault

    engine = make_engine(database_url)
    _watch(engine)
    vault, clock = Vault(BENCH_KEY), SystemClock()
    sessions = make_sessionmaker(engine, vault)
    storage = make_fsm_storage(None, sessions, vault, clock, sole_handler=True)
    bot = make_bot(token, api_url)
    bot.session.middleware(FlushBeforeSending())
    dispatcher = Dispatcher(storage=storage, events_isolation=SimpleEventIsolation())
    dispatcher.update.outer_middleware(UpdateCacheMiddleware())

    async def step(state: FSMContext, said: str) -> None:
        steps = int((await state.get_data()).get("steps", 0)) + 1
        await state.set_state(f"floor:{steps}")
        await state.set_data({"steps": steps, "said": said})

    @dispatcher.message()
    async def echo(message: Message, state: FSMContext) -> None:
        said = message.text or (message.contact.phone_number if message.contact else "ok")
        await step(state, said)
        await message.answer(message.text or "ok")

    @dispatcher.callback_query(F.message)
    async def pressed(query: CallbackQuery, state: FSMContext) -> None:
        await step(state, query.data or "ok")
        await query.answer()
        assert query.message is not None
        await bot.send_message(query.message.chat.id, query.data or "ok")

    settle_heap()
    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, polling_timeout=10)
    )
    try:
        await stop.wait()
        with contextlib.suppress(RuntimeError):
            await dispatcher.stop_polling()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(polling, timeout=15)
    finally:
        await bot.session.close()
        await storage.close()
        await engine.dispose()


async def _desk(api_url: str, token: str, database_url: str, stop: asyncio.Event) -> None:
    from aiogram.fsm.storage.memory import SimpleEventIsolation

    from bot.channel import TelegramChannel, make_bot
    from bot.config import BotConfig
    from bot.storage import make_fsm_storage
    from tests.telegram_desk import NO_LIMITS
    from workflows.clock import SystemClock
    from workflows.deadlines.calendar import WorkingCalendar
    from workflows.persistence.engines import make_engine, make_sessionmaker
    from workflows.privacy.vault import Vault
    from workflows.requests.service import RequestService

    engine = make_engine(database_url)
    _watch(engine)

    vault, clock = Vault(BENCH_KEY), SystemClock()
    sessions = make_sessionmaker(engine, vault)
    staff = frozenset(int(x) for x in STAFF_IDS.split(","))
    service = RequestService(sessions, vault, clock, WorkingCalendar(), staff_user_ids=staff)
    channel = TelegramChannel(
        bot=make_bot(token, api_url),
        config=BotConfig(staff_chat_id=STAFF_CHAT, staff_user_ids=staff),
        service=service,
        sessions=sessions,
        vault=vault,
        clock=clock,
        storage=make_fsm_storage(None, sessions, vault, clock, sole_handler=True),  # polling
        events_isolation=SimpleEventIsolation(),
        limits=NO_LIMITS,  # Telegram's 30 messages/s is not what this measures
    )
    settle_heap()
    try:
        await channel.run(stop)
    finally:
        await channel.close()
        await engine.dispose()


def _watch(engine: Any) -> None:
    """Counts the engine's statements, and times its BEGINs (the write lock's wait)."""
    from sqlalchemy import event

    started: dict[int, float] = {}

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(_c: Any, cursor: Any, statement: str, *_: Any) -> None:
        STATEMENTS[0] += 1
        if statement.startswith("BEGIN"):
            started[id(cursor)] = time.perf_counter()

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _done(_c: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("BEGIN") and id(cursor) in started:
            BEGINS.setdefault(statement, []).append(time.perf_counter() - started.pop(id(cursor)))


def _serve(args: argparse.Namespace) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001, async_mode="disabled")
            profiler.start()
        if args.serve == "echo":
            await _echo(args.api, args.token, stop)
        elif args.serve == "floor":
            await _floor(args.api, args.token, args.url, stop)
        else:
            await _desk(args.api, args.token, args.url, stop)
        if profiler is not None:
            profiler.stop()
            Path(args.profile).write_text(  # noqa: ASYNC240 (after the clock)
                profiler.output_text(unicode=True, color=False), encoding="utf-8"
            )
        usage = os.times()
        begins = {
            name: {
                "count": len(times),
                "seconds": sum(times),
                "p99_ms": percentile(times, 0.99) * 1000,
                "max_ms": max(times, default=0.0) * 1000,
            }
            for name, times in BEGINS.items()
        }
        print(
            json.dumps(
                {
                    "cpu_seconds": usage.user + usage.system,
                    "statements": STATEMENTS[0],
                    "begins": begins,
                }
            )
        )

    asyncio.run(main())


# -- the people (this process) ----------------------------------------------------------


class Stand(BotAPI):
    """The stand-in, telling the benchmark of every call as it is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[int, tuple[Callable[[Call], bool], asyncio.Future[Call]]] = {}
        self.seen = 0
        self.polled = asyncio.Event()

    async def _updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.polled.set()
        return await super()._updates(params)

    async def _record(self, call: Call) -> None:
        self.seen += 1
        chat = call.params.get("chat_id")
        if chat is not None:
            with contextlib.suppress(ValueError):
                waiter = self.waiting.get(int(chat))
                if waiter is not None and waiter[0](call) and not waiter[1].done():
                    waiter[1].set_result(call)
        # The base class keeps every call in a list and wakes its waiters; the benchmark
        # needs neither, and a list of 10,000s of calls scanned by waiters would cost us.
        if call.method in ("getMe", "deleteWebhook", "setMyCommands"):
            await super()._record(call)


@dataclass
class Load:
    """What one load produced."""

    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    seconds: float = 0.0
    driver_cpu: float = 0.0  # this process (stand-in and people): is the driver the limit?

    @property
    def updates(self) -> int:
        return len(self.latencies)


Step = tuple[Callable[[Person, Call | None], dict[str, Any]], Callable[[Call], bool]]


def _desk_steps(api: BotAPI, language: str) -> list[Step]:
    from bot.callbacks import KindChoice, SummaryChoice

    access = KindChoice(kind="access").pack()
    confirm = SummaryChoice(action="confirm").pack()
    asked, sent = words(language, "identity.ask"), words(language, "summary.sent")
    return [
        (
            lambda p, _: api.private_message(p, "/start"),
            lambda c: access in buttons(c).values(),
        ),
        (
            lambda p, prev: api.callback_query(p, p.id, message_id(prev), access),  # type: ignore[arg-type]
            lambda c: c.params.get("text") == asked,
        ),
        (
            lambda p, _: api.contact_message(p, p.id, phone_of(p)),
            lambda c: confirm in buttons(c).values(),
        ),
        (
            lambda p, prev: api.callback_query(p, p.id, message_id(prev), confirm),  # type: ignore[arg-type]
            lambda c: c.method == "editMessageText" and c.params.get("text") == sent,
        ),
    ]


def _echo_steps(api: BotAPI) -> list[Step]:
    def replied(call: Call) -> bool:
        return call.method == "sendMessage"

    return [
        (lambda p, _: api.private_message(p, "/start"), replied),
        (lambda p, prev: api.callback_query(p, p.id, message_id(prev), "access"), replied),  # type: ignore[arg-type]
        (lambda p, _: api.contact_message(p, p.id, phone_of(p)), replied),
        (lambda p, prev: api.callback_query(p, p.id, message_id(prev), "confirm"), replied),  # type: ignore[arg-type]
    ]


async def _person(
    api: Stand,
    who: Person,
    steps: list[Step],
    load: Load,
    gate: Callable[[], Any] | None,
    arrives: float = 0.0,
) -> None:
    if arrives > 0:
        await asyncio.sleep(arrives)  # people come one after another, not all at once
    previous: Call | None = None
    for make, expected in steps:
        if gate is not None:
            await gate()
        future: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        api.waiting[who.id] = (expected, future)
        started = time.perf_counter()
        await api.offer(make(who, previous))
        try:
            previous = await asyncio.wait_for(future, STEP_SECONDS)
        except TimeoutError:
            load.lost += 1
            return
        finally:
            api.waiting.pop(who.id, None)
        load.latencies.append(time.perf_counter() - started)


class Pacer:
    """Lets updates out at a fixed rate, in the order people become ready."""

    def __init__(self, rate: float, total: int) -> None:
        self.interval = 1 / rate
        self.total = total
        self.queue: deque[asyncio.Future[None]] = deque()

    async def gate(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append(future)
        await future

    async def run(self, deadline: float) -> None:
        started = time.perf_counter()
        for n in range(self.total):
            due = started + n * self.interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for _ in range(int(STEP_SECONDS / 0.001)):  # wait for someone ready, bounded
                if self.queue or time.perf_counter() > deadline:
                    break
                await asyncio.sleep(0.001)
            if not self.queue:
                return
            self.queue.popleft().set_result(None)


async def _load(api: Stand, kind: str, people: int, offset: int, rate: float | None) -> Load:
    load = Load()
    languages = ("ru", "kk", "en")
    steps = {
        lang: (_desk_steps(api, lang) if kind == "desk" else _echo_steps(api)) for lang in languages
    }
    pacer = Pacer(rate, people * 4) if rate else None
    cpu = time.process_time()
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(
            _person(
                api,
                Person(FIRST_USER + offset + n, language_code=languages[n % 3]),
                steps[languages[n % 3]],
                load,
                pacer.gate if pacer else None,
                # At a fixed rate, a person arrives every 4/rate seconds (4 updates each),
                # so the steps of a dialog mix as they do in a day's traffic, instead of
                # every person filing in the same few seconds.
                arrives=n * len(steps[languages[n % 3]]) / rate if rate else 0.0,
            )
        )
        for n in range(people)
    ]
    pacing = asyncio.create_task(pacer.run(started + 600)) if pacer else None
    await asyncio.gather(*tasks)
    if pacing is not None:
        pacing.cancel()
    load.seconds = time.perf_counter() - started
    load.driver_cpu = time.process_time() - cpu
    return load


async def _bot_process(
    kind: str, api: Stand, url: str | None, profile: str | None
) -> asyncio.subprocess.Process:
    command = [
        sys.executable,
        "-m",
        "bench.telegram_intake",
        "--serve",
        kind,
        "--api",
        api.base,
        "--token",
        api.token,
        "--url",
        url or "",
    ]
    if profile:
        command += ["--profile", profile]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    api.polled.clear()
    await asyncio.wait_for(api.polled.wait(), READY_SECONDS)
    return process


async def _stop(process: asyncio.subprocess.Process) -> dict[str, Any]:
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"the bot failed:\n{err.decode()[-3000:]}")
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report


async def _settled(api: Stand, quiet: float = 0.5, most: float = 60.0) -> None:
    """Waits (bounded) until the bot has made no Bot API call for ``quiet`` seconds."""
    last, still = api.seen, 0.0
    for _ in range(int(most / 0.1)):
        await asyncio.sleep(0.1)
        if api.seen != last:
            last, still = api.seen, 0.0
            continue
        still += 0.1
        if still >= quiet:
            return


def _rss_mb(pid: int) -> float:
    """A process's resident memory now (VmRSS, Linux ``/proc``; NaN elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_of(pid: int) -> float | None:
    """CPU seconds a process has used so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    kind: str,
    backend: str | None,
    people: int,
    rate: float,
    rate_people: int,
    directory: Path,
    profile: str | None,
) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        url = None
        floor = None
        if backend is not None:
            url = await stack.enter_async_context(database(backend, directory))
            engine = await migrated(url)
            try:
                floor = await _one_write(engine)
            finally:
                await engine.dispose()
        api = await stack.enter_async_context(Stand())
        process = await _bot_process(kind, api, url, profile)
        try:
            # What the bot spends on the closed loop alone: not its start-up, not the rest.
            cpu_before, calls_before = _cpu_of(process.pid), api.seen
            closed = await _load(api, kind, people, 0, None)
            cpu_after, calls_after = _cpu_of(process.pid), api.seen
            rss = _rss_mb(process.pid)  # after the closed loop's dialogs (1,000 by default)
            # The fixed load starts on a quiet bot: the closed loop's staff cards and
            # confirmations (its outbox) delivered, so they do not fall into its latencies.
            await _settled(api)
            fixed = await _load(api, kind, rate_people, people, rate)
        finally:
            report = await _stop(process)
        loop_cpu = None
        if cpu_before is not None and cpu_after is not None:
            loop_cpu = cpu_after - cpu_before
        return {
            "closed": closed,
            "fixed": fixed,
            "bot_cpu": report["cpu_seconds"],
            "floor": floor,
            "loop_cpu": loop_cpu,
            "rss_mb": rss,
            "calls": calls_after - calls_before,
            # Every statement of the run, over every update of both loads.
            "statements": report.get("statements", 0),
            "begins": report.get("begins"),
        }


async def _one_write(engine: Any, count: int = 300) -> float:
    """CPU ms of one committed one-row write through the desk's own engine and sessions.

    The least a desk that keeps each step of a dialog durable must spend per
    update, measured here (the driver is idle meanwhile) to set against the
    echo bot's whole update.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    from workflows.persistence.engines import make_sessionmaker
    from workflows.persistence.tables import ConversationState

    sessions = make_sessionmaker(engine)
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    started = time.process_time()
    for n in range(count):
        statement = insert(ConversationState).values(
            key=f"bench:floor:{n % 10}", state="s", updated_at=datetime.now(UTC)
        )
        async with sessions.begin() as session:
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[ConversationState.key],
                    set_={"state": statement.excluded.state},
                )
            )
    return (time.process_time() - started) / count * 1000


async def _drive(args: argparse.Namespace) -> None:
    people = args.people or (200 if args.quick else 1000)
    runs = args.runs or (1 if args.quick else 3)
    rate_seconds = 2 if args.quick else 5
    rate_people = max(1, int(args.rate * rate_seconds / 4))
    backends = [b for b in args.backends.split(",") if b]
    # Each backend's floor right before its desk, in every run: the ratio is read in one run.
    subjects = [("echo", None)] + [(k, b) for b in backends for k in ("floor", "desk")]
    print(
        f"# telegram intake: {people} people x 4 updates (closed loop), then "
        f"{rate_people} people at {args.rate:g} updates/s; {runs} run(s)"
    )
    print(f"# machine: {machine()}")
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="aina-bench-") as tmp:
        for run in range(runs):
            for kind, backend in subjects:
                name = kind if backend is None else f"{kind}/{backend}"
                profile = None
                if args.profile and run == 0:
                    profile = f"{args.profile}/telegram-{name.replace('/', '-')}.txt"
                loads = await _measure(
                    kind, backend, people, args.rate, rate_people, Path(tmp), profile
                )
                loads["load"] = os.getloadavg()[0]
                results.setdefault(name, []).append(loads)
                _print_run(run, name, loads, args.rate)
    _print_table(results, args.rate, people)


def _rate(loads: dict[str, Any]) -> float:
    closed: Load = loads["closed"]
    return closed.updates / closed.seconds


def _print_run(run: int, name: str, loads: dict[str, Any], rate: float) -> None:
    closed, fixed = loads["closed"], loads["fixed"]
    print(
        f"  run {run + 1} {name}: {closed.updates / closed.seconds:.0f} updates/s "
        f"(p50 {percentile(closed.latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(closed.latencies, 0.99) * 1000:.0f} ms, lost "
        f"{closed.lost}); at {rate:g}/s: p50 "
        f"{percentile(fixed.latencies, 0.5) * 1000:.1f} ms, p99 "
        f"{percentile(fixed.latencies, 0.99) * 1000:.1f} ms, lost {fixed.lost}; "
        f"CPU s: bot {loads['bot_cpu']:.1f}, driver {closed.driver_cpu:.1f} over "
        f"{closed.seconds:.1f} s closed loop; per update in the closed loop: "
        f"{_per_update(loads['loop_cpu'], closed.updates, 1000):.2f} ms bot CPU, "
        f"{loads['calls'] / max(1, closed.updates):.2f} Bot API calls, "
        f"{loads['statements'] / max(1, closed.updates + fixed.updates):.1f} SQL; "
        f"RSS {loads['rss_mb']:.0f} MB; load {loads['load']:.2f}"
        + _begins(loads.get("begins"))
        + (
            f"; one committed write: {loads['floor']:.2f} ms CPU"
            if loads["floor"] is not None
            else ""
        ),
        flush=True,
    )


def _begins(begins: dict[str, Any] | None) -> str:
    """How long the BEGINs took: a writer's (BEGIN IMMEDIATE, the write lock's wait on
    SQLite, plus the event loop's delay) beside a reader's (the loop's delay alone)."""
    return "".join(
        f"; {name} x{b['count']}: {b['seconds']:.1f} s in all, p99 {b['p99_ms']:.1f} ms, "
        f"max {b['max_ms']:.0f} ms"
        for name, b in (begins or {}).items()
        if b["count"]
    )


def _print_table(results: dict[str, list[dict[str, Any]]], rate: float, people: int) -> None:
    table = Table(
        [
            "bot",
            "updates/s",
            "vs echo",
            "vs floor",
            f"p50 ms @{rate:g}/s",
            f"p99 ms @{rate:g}/s",
            "lost",
            "bot CPU ms/update",
            "API calls/update",
            "SQL/update",
            f"RSS MB after {people} dialogs",
        ],
        [],
    )
    echo_rate = median([_rate(r) for r in results["echo"]])
    for name, loads in results.items():
        vs_floor = "-"
        if name.startswith("desk/"):
            floors = results[name.replace("desk/", "floor/")]
            # The ratio of each run (the floor measured just before), then their median.
            vs_floor = (
                f"{median([_rate(d) / _rate(f) for d, f in zip(loads, floors, strict=True)]):.2f}x"
            )
        table.rows.append(
            [
                name,
                median([_rate(r) for r in loads]),
                ratio(median([_rate(r) for r in loads]), echo_rate),
                vs_floor,
                median([percentile(r["fixed"].latencies, 0.5) * 1000 for r in loads]),
                median([percentile(r["fixed"].latencies, 0.99) * 1000 for r in loads]),
                sum(r["closed"].lost + r["fixed"].lost for r in loads),
                median([_per_update(r["loop_cpu"], r["closed"].updates, 1000) for r in loads]),
                median([r["calls"] / max(1, r["closed"].updates) for r in loads]),
                median(
                    [
                        r["statements"] / max(1, r["closed"].updates + r["fixed"].updates)
                        for r in loads
                    ]
                ),
                median([r["rss_mb"] for r in loads]),
            ]
        )
    print()
    print(table.render())
    loads_seen = [r["load"] for rs in results.values() for r in rs]
    print(
        f"\nload average (1 min) at the end of each bot's run: {min(loads_seen):.2f} to "
        f"{max(loads_seen):.2f}"
    )
    print(
        "targets (issue 18): the desk at least 0.7x its floor's updates/s (the ratio of each "
        f"run, median); p99 under 100 ms at {rate:g} updates/s on SQLite (median of the runs)"
    )
    print(
        "floor: the echo bot plus one durable dialog write per update through the desk's own "
        "storage and group commit; bot CPU ms/update: the bot process's CPU over the closed "
        "loop; SQL/update: statements over both loads; RSS: the "
        "bot process's resident memory right after the closed loop"
    )


def _per_update(seconds: float | None, updates: int, scale: float = 1.0) -> float:
    return float("nan") if seconds is None or not updates else seconds / updates * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, help="people in the closed loop (default 1000)")
    parser.add_argument("--runs", type=int, help="runs (default 3)")
    parser.add_argument("--rate", type=float, default=100.0, help="updates/s of the fixed load")
    parser.add_argument("--quick", action="store_true", help="200 people, 1 run")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--profile", help="write pyinstrument profiles of the bots to this folder")
    parser.add_argument("--serve", choices=["echo", "floor", "desk"], help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args)
        return
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    asyncio.run(_drive(args))


if __name__ == "__main__":
    main()
