"""Mail intake: letters in a Dovecot mailbox to stored, acknowledged requests.

    python -m bench.mail_intake                      # 2000 letters, SQLite, 3 runs
    python -m bench.mail_intake --backends sqlite,postgresql
    python -m bench.mail_intake --quick              # 300 letters, 1 run

Per run: a Dovecot of its own on 127.0.0.1 (``tests/mailservers.py``) with
``--mails`` letters appended, made from the shapes of ``tests/data/mail/*.eml``
(requests in kk/ru/en, replies, auto-replies, bounces, spam, broken MIME),
each with a Message-ID and a sender of its own; aiosmtpd (a ``Sink``, in a
process of its own) takes the acknowledgements.

- the baseline: a bare imap-tools fetch of the same mailbox (``MailBox.fetch``,
  every letter parsed into a ``MailMessage`` and its sender, subject and text
  read), over the same plain loopback IMAP;
- the floor (issue 18), measured in the same run: the bare fetch's work (every
  letter read by imap-tools as above) plus the desk's own parse
  (``parse_mail``) and classification (``understand``, the packaged model) plus
  one durable write per letter (a row, committed per batch of 50 as the desk
  commits its batches), the letters fetched as the desk fetches them;
- the desk: the mail channel (``build_mail_channel``: the poller and the
  intake) running until every letter has its ``inbound_mail`` row.
  Acknowledgements are left out of both (they are paced by the SMTP server):
  the outbox sender does not run, and each letter's acknowledgement waits in
  the outbox, stored with the letter. ``--with-acks`` runs the sender too, until
  no e-mail waits in the outbox (issue 8's measurement). Every letter comes from an address
  nobody has verified, so the hour's cap on acknowledgements to such addresses
  (``DSR_LIMIT_ACKS_PER_HOUR``, 300 by default) is raised to the number of
  letters (``--acks-per-hour``): the run measures the intake, not the cap.

Targets: at least half the floor's rate (issue 18); issue 8 asked for half the bare fetch's.
Beside each figure, the resident memory of this process (where the desk runs)
right after the desk took every letter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.common import BENCH_KEY, Table, database, machine, median, migrated
from tests.mailservers import _running_dovecot, free_port, wait_for_port

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "mail"
DRAIN_SECONDS = 600.0


def letters(count: int) -> list[bytes]:
    """``count`` letters cycling through the corpus, each with its own Message-ID and sender."""
    shapes = [path.read_bytes() for path in sorted(CORPUS.glob("*.eml"))]
    made = []
    for number in range(count):
        raw = shapes[number % len(shapes)]
        made.append(_vary(raw, number))
    return made


_HEADER = re.compile(rb"^(?P<name>[A-Za-z-]+):.*(?:\r?\n[ \t].*)*", re.MULTILINE)


def _vary(raw: bytes, number: int) -> bytes:
    split = re.search(rb"\r?\n\r?\n", raw)
    end = split.start() if split else len(raw)
    head, body = raw[:end], raw[end:]
    eol = b"\r\n" if b"\r\n" in head else b"\n"
    message_id = f"Message-ID: <bench-{number}@mail.example.kz>".encode()
    sender = f"From: Person {number} <person{number}@mail.example.kz>".encode()
    seen_id = False

    def replace(match: re.Match[bytes]) -> bytes:
        nonlocal seen_id
        name = match.group("name").lower()
        if name == b"message-id":
            seen_id = True
            return message_id
        if name == b"from" and b"@" in match.group(0):
            return sender
        return match.group(0)

    head = _HEADER.sub(replace, head)
    if not seen_id and number % 2:
        head += eol + message_id  # half of the letters without one keep none
    return head + body


def _bare_fetch(server: Any) -> tuple[int, int]:
    with server.client() as box:
        box.folder.set("INBOX")
        count = size = 0
        for message in box.fetch(mark_seen=False):
            count += 1
            # Read what any client reads: the sender, the subject, the text.
            with contextlib.suppress(Exception):
                size += len(message.from_) + len(message.subject) + len(message.text)
        return count, size


def _append_all(server: Any, made: list[bytes]) -> None:
    with server.client() as box:
        for raw in made:
            box.append(raw, "INBOX")


def _settings(server: Any, smtp_port: int, acks_per_hour: int) -> Any:
    from mail.settings import MailSettings

    return MailSettings(
        imap_host=server.host,
        imap_port=server.port,
        imap_user=server.user,
        imap_password=server.password,
        imap_security="none",
        imap_folder="INBOX",
        poll_seconds=1,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_user=None,
        smtp_password=None,
        smtp_security="none",
        mail_from="aina.app@mercury.kz",
        timeout=30.0,
        max_acks_per_hour=acks_per_hour,
    )


def _rss_mb() -> float:
    """This process's resident memory now (VmRSS; NaN off Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _fetch_and_read(connection: Any, uids: list[int]) -> dict[int, bytes]:
    """The bare fetch's work on a batch: the raw letters, each read by imap-tools."""
    from imap_tools import MailMessage

    raws: dict[int, bytes] = connection.fetch_many(uids)
    for raw in raws.values():
        message = MailMessage.from_bytes(raw)
        with contextlib.suppress(Exception):
            _ = len(message.from_) + len(message.subject) + len(message.text)
    return raws


async def _floor(server: Any, url: str, total: int) -> dict[str, Any]:
    """The bare fetch plus the desk's own parse and classification plus one durable write
    per letter, in batches of the desk's size, one transaction a batch."""
    from mail.channel import imap_settings
    from mail.classifier import default_classifier
    from mail.imap import ImapConnection
    from mail.poller import _CHUNK
    from workflows.persistence.engines import make_engine, make_sessionmaker
    from workflows.privacy.vault import Vault

    engine = make_engine(url)
    vault = Vault(BENCH_KEY)
    sessions = make_sessionmaker(engine, vault)
    classifier = default_classifier()  # loaded before the clock, as the desk's is at start
    connection = ImapConnection(imap_settings(_settings(server, 0, 1)))
    started = time.perf_counter()
    cpu = time.process_time()
    await asyncio.to_thread(connection.open)
    stored = last = 0
    for _ in range(total + 1):  # bounded; new_uids gives 500 at most, as to the desk's poller
        found = await asyncio.to_thread(connection.new_uids, last)
        if not found:
            break
        last = found[-1]
        for start in range(0, len(found), _CHUNK):  # a batch of 50, as the desk takes them
            raws = await asyncio.to_thread(
                _fetch_and_read, connection, found[start : start + _CHUNK]
            )
            stored += await _store_floor(sessions, vault, classifier, raws)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    await asyncio.to_thread(connection.close)
    await engine.dispose()
    return {"floor_seconds": seconds, "floor_count": stored, "floor_cpu": cpu}


async def _store_floor(sessions: Any, vault: Any, classifier: Any, raws: dict[int, bytes]) -> int:
    """The desk's parse and classification of each letter, and one row a letter, committed."""
    from mail.outcomes import Quarantine
    from mail.parsing import parse_mail
    from mail.understanding import understand
    from workflows.persistence.tables import ConversationState
    from workflows.persistence.upsert import upsert

    rows = []
    now = datetime.now(UTC)
    for uid, raw in raws.items():
        mail = parse_mail(raw)
        try:
            if mail.sender is None:
                raise Quarantine("no usable sender address")
            understood = understand(mail, classifier=classifier)
            state, fields = understood.disposition.value, understood.fields
        except Quarantine:
            state, fields = "quarantined", {}
        rows.append(
            {
                "key": f"bench:mail:{uid}:{mail.mail_key}",
                "state": state,
                "data_enc": vault.encrypt_json({"fields": fields}),
                "updated_at": now,
            }
        )
    if rows:
        async with sessions.begin() as session:
            await session.execute(upsert(session, ConversationState).values(rows))
    return len(rows)


async def _desk(
    server: Any,
    smtp_port: int,
    url: str,
    total: int,
    profile: str | None,
    acks_per_hour: int,
    with_acks: bool,
) -> dict[str, Any]:
    from mail.channel import build_mail_channel
    from workflows.clock import SystemClock
    from workflows.deadlines.calendar import WorkingCalendar
    from workflows.outbox.queue import Channel, OutboxStatus
    from workflows.persistence.engines import make_engine, make_sessionmaker
    from workflows.persistence.tables import InboundMail, OutboxItem, Request
    from workflows.privacy.vault import Vault
    from workflows.requests.service import RequestService

    engine = make_engine(url)
    vault, clock = Vault(BENCH_KEY), SystemClock()
    sessions = make_sessionmaker(engine, vault)
    service = RequestService(sessions, vault, clock, WorkingCalendar())
    channel = build_mail_channel(
        _settings(server, smtp_port, acks_per_hour),
        service=service,
        sessions=sessions,
        vault=vault,
        clock=clock,
    )

    async def counts() -> tuple[int, int, int, int]:
        async with sessions() as session:
            taken = await session.scalar(select(func.count(InboundMail.id))) or 0
            requests = await session.scalar(select(func.count(Request.id))) or 0
            waiting = await session.scalar(
                select(func.count(OutboxItem.id)).where(
                    OutboxItem.channel == Channel.EMAIL.value,
                    OutboxItem.status.in_([OutboxStatus.PENDING.value, OutboxStatus.SENDING.value]),
                )
            )
            sent = await session.scalar(
                select(func.count(OutboxItem.id)).where(
                    OutboxItem.channel == Channel.EMAIL.value,
                    OutboxItem.status == OutboxStatus.SENT.value,
                )
            )
        return taken, requests, waiting or 0, sent or 0

    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    stop = asyncio.Event()
    handled: list[float] = []  # when the poller reported each letter handled (stored)

    def reported(_result: Any) -> None:
        handled.append(time.perf_counter())

    if not with_acks:
        # The poller reports each letter once its batch is committed and the cursor moved:
        # the run ends at the last report, not at the next look at the counts (up to 0.25 s
        # later, which the first figures of issue 18 included).
        channel.poller.on_mail = reported
    started = time.perf_counter()
    cpu = time.process_time()
    # Without the acknowledgements: the poller and the intake alone (the sender does not run).
    running = asyncio.create_task(channel.run(stop) if with_acks else channel.poller.run(stop))
    taken = requests = waiting = sent = 0
    for _ in range(int(DRAIN_SECONDS / 0.25)):
        await asyncio.sleep(0.25)
        taken, requests, waiting, sent = await counts()
        if taken >= total and (waiting == 0 or not with_acks):
            break
    polled = time.perf_counter() - started
    cpu = time.process_time() - cpu
    seconds = handled[-1] - started if len(handled) >= total and not with_acks else polled
    rss = _rss_mb()
    stop.set()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(running, timeout=30)
    if not with_acks:
        channel.poller.shutdown()
    if profiler is not None:
        profiler.stop()
        Path(profile).write_text(  # noqa: ASYNC240 (after the clock)
            profiler.output_text(unicode=True, color=False), encoding="utf-8"
        )
    await engine.dispose()
    return {
        "seconds": seconds,
        "polled_seconds": polled,
        "cpu": cpu,
        "taken": taken,
        "requests": requests,
        "acks": sent,
        "waiting": waiting,
        "rss_mb": rss,
    }


def _sink(port: int) -> subprocess.Popen[bytes]:
    """aiosmtpd taking and dropping every letter, in a process of its own."""
    return subprocess.Popen(  # noqa: S603 (this interpreter, aiosmtpd's own module)
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-l",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _run(
    backend: str,
    made: list[bytes],
    directory: Path,
    profile: str | None,
    acks_per_hour: int,
    with_acks: bool,
) -> dict[str, Any]:
    smtp_port = free_port()
    sink = _sink(smtp_port)
    try:
        wait_for_port(smtp_port, sink)
        root = Path(tempfile.mkdtemp(prefix="dovecot-", dir=directory))
        with _running_dovecot(root) as server:
            await asyncio.to_thread(_append_all, server, made)
            started = time.perf_counter()
            count, size = await asyncio.to_thread(_bare_fetch, server)
            bare = time.perf_counter() - started
            async with database(backend, directory) as url:
                engine = await migrated(url)
                await engine.dispose()
                floor = await _floor(server, url, len(made))
            async with database(backend, directory) as url:
                engine = await migrated(url)
                await engine.dispose()
                desk = await _desk(
                    server, smtp_port, url, len(made), profile, acks_per_hour, with_acks
                )
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    load = os.getloadavg()[0]
    bare_figures = {"bare_seconds": bare, "bare_count": count, "bare_bytes": size, "load": load}
    return bare_figures | floor | desk


async def _drive(args: argparse.Namespace) -> None:
    count = args.mails or (300 if args.quick else 2000)
    runs = args.runs or (1 if args.quick else 3)
    made = letters(count)
    acks_per_hour = args.acks_per_hour or max(count, 1)
    print(
        f"# mail intake: {count} letters ({sum(map(len, made)) / 1e6:.1f} MB), {runs} run(s), "
        + ("acknowledgements sent" if args.with_acks else "acknowledgements left out")
    )
    print(f"# machine: {machine()}")
    table = Table(
        [
            "desk on",
            "bare fetch letters/s",
            "floor letters/s",
            "desk letters/s",
            "vs floor",
            "vs bare fetch",
            "requests",
            "acks sent",
            "floor CPU s",
            "desk CPU s",
            f"RSS MB after {count} letters",
        ],
        [],
    )
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="aina-bench-") as tmp:
        # Backends alternate within a run, and each run measures bare fetch, floor and desk.
        backends = [b for b in args.backends.split(",") if b]
        results: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        for run in range(runs):
            for backend in backends:
                profile = None
                if args.profile and run == 0:
                    profile = f"{args.profile}/mail-{backend}.txt"
                r = await _run(backend, made, Path(tmp), profile, acks_per_hour, args.with_acks)
                results[backend].append(r)
                loads.append(r["load"])
                print(
                    f"  {backend} run {run + 1}: bare fetch {r['bare_count']} in "
                    f"{r['bare_seconds']:.2f} s; floor {r['floor_count']} in "
                    f"{r['floor_seconds']:.2f} s ({r['floor_cpu']:.1f} s CPU); desk {r['taken']} "
                    f"in {r['seconds']:.2f} s (counts saw it at {r['polled_seconds']:.2f} s; "
                    f"{r['cpu']:.1f} s CPU; {r['requests']} requests, "
                    f"{r['acks']} acks sent, {r['waiting']} waiting); RSS {r['rss_mb']:.0f} MB; "
                    f"load {r['load']:.2f}",
                    flush=True,
                )
        for backend, rs in results.items():
            desk = median([r["taken"] / r["seconds"] for r in rs])
            table.rows.append(
                [
                    backend,
                    median([r["bare_count"] / r["bare_seconds"] for r in rs]),
                    median([r["floor_count"] / r["floor_seconds"] for r in rs]),
                    desk,
                    # The ratio of each run (floor and desk one after the other), then the median.
                    f"{median([_desk_rate(r) / _rate_of(r, 'floor') for r in rs]):.2f}x",
                    f"{median([_desk_rate(r) / _rate_of(r, 'bare') for r in rs]):.2f}x",
                    rs[-1]["requests"],
                    rs[-1]["acks"],
                    median([r["floor_cpu"] for r in rs]),
                    median([r["cpu"] for r in rs]),
                    median([r["rss_mb"] for r in rs]),
                ]
            )
    print()
    print(table.render())
    print(f"\nload average (1 min) after each run: {min(loads):.2f} to {max(loads):.2f}")
    print(
        "target (issue 18): the desk at least 0.5x its floor (the bare fetch plus the desk's "
        "parse and classification plus one durable write a letter; the ratio of each run, "
        "median); RSS: this process, where the desk runs, right after it took every letter"
    )


def _desk_rate(result: dict[str, Any]) -> float:
    return float(result["taken"] / result["seconds"])


def _rate_of(result: dict[str, Any], what: str) -> float:
    return float(result[f"{what}_count"] / result[f"{what}_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, help="letters in the mailbox (default 2000)")
    parser.add_argument("--runs", type=int, help="runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="300 letters, 1 run")
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--profile", help="write a pyinstrument profile of run 1 here")
    parser.add_argument(
        "--with-acks",
        action="store_true",
        help="run the outbox sender too, until every acknowledgement is sent (issue 8's run)",
    )
    parser.add_argument(
        "--acks-per-hour",
        type=int,
        help="the desk's cap on acknowledgements to unverified addresses (default: --mails)",
    )
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    asyncio.run(_drive(args))


if __name__ == "__main__":
    main()
