"""What every benchmark shares: figures, the machine, databases on 127.0.0.1, seeded requests.

Benchmarks print figures; they never pass or fail. Each figure is read against
a baseline measured in the same run, because this machine is shared and noisy.
"""

from __future__ import annotations

import os
import platform
import random
import resource
import statistics
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.milestones import ReminderPolicy, milestones
from workflows.kinds import DEFAULT_KINDS, DayUnit, RequestKind
from workflows.persistence.engines import make_engine, upgrade_engine
from workflows.persistence.tables import DataSubject, ReferenceCounter, Request, ScheduledNotice
from workflows.privacy.vault import Vault
from workflows.requests.states import Status

# The PostgreSQL the benchmarks use: a schema of their own on the `test` database, dropped after.
POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
# A fixed key: the benchmarks' data is made up, and runs must be comparable.
BENCH_KEY = "x6S0hJm3B0dVQJ7Q6r5S2kqv8bQWm1yWn3Jc9qS2L4Q="
# Tuesday 24 November 2026, 11:00 in Almaty: a working day, after the digest hour.
NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
BACKENDS = ("sqlite", "postgresql")


# -- figures -------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def peak_rss_mb() -> float:
    """This process's own peak resident memory: VmHWM, which starts afresh at exec.

    ``ru_maxrss`` does not: a worker started by the driver inherits the driver's
    high-water mark (about 250 MB after seeding 100,000 requests), which hid
    the workers' own figures before. Off Linux, ``ru_maxrss`` is what there is.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Table:
    """A plain text table of figures, printed as Markdown so BENCHMARKS.md can take it."""

    headers: Sequence[str]
    rows: list[Sequence[Any]]

    def render(self) -> str:
        cells = [[str(h) for h in self.headers]] + [[_cell(c) for c in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        lines: list[str] = []
        for index, row in enumerate(cells):
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
            lines[-1] += " |"
            if index == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def machine() -> str:
    """The machine the figures come from, read off it now."""
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    total = "?"
    with open("/proc/meminfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                total = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {total} RAM, Python {platform.python_version()}, "
        f"load average {load}"
    )


# -- databases -----------------------------------------------------------------------


@asynccontextmanager
async def database(backend: str, directory: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL: a SQLite file, or a PostgreSQL schema dropped after."""
    if backend == "sqlite":
        path = directory / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite+aiosqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 (cleanup)
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{sep}search_path={schema}"
    finally:
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


async def migrated(url: str) -> AsyncEngine:
    engine = make_engine(url)
    await upgrade_engine(engine)
    return engine


# -- seeded requests -----------------------------------------------------------------

# What a shop's open queue looks like: mostly quick kinds, a few long ones.
KIND_MIX: tuple[tuple[RequestKind, float], ...] = (
    (RequestKind.ACCESS, 0.30),
    (RequestKind.DELETE_ACCOUNT, 0.20),
    (RequestKind.UNSUBSCRIBE, 0.20),
    (RequestKind.WITHDRAW_CONSENT, 0.10),
    (RequestKind.COMPLAINT, 0.10),
    (RequestKind.BLOCK, 0.05),
    (RequestKind.RECTIFY, 0.05),
)
STATUS_MIX = ((Status.VERIFIED, 0.6), (Status.IN_REVIEW, 0.3), (Status.AWAITING_INFO, 0.1))


def _pick(choices: Sequence[tuple[Any, float]], rng: random.Random) -> Any:
    point = rng.random()
    for value, share in choices:
        point -= share
        if point <= 0:
            return value
    return choices[-1][0]


def _clock_days(kind: RequestKind, calendar: WorkingCalendar) -> float:
    """A clock's length in calendar days, roughly (7 calendar days per 5 working days)."""
    spec = DEFAULT_KINDS[kind].running_clock(NOW, calendar)
    return spec.length * (1.4 if spec.unit is DayUnit.WORKING else 1.0)


async def seed_requests(
    engine: AsyncEngine,
    count: int,
    *,
    now: datetime = NOW,
    unverified_share: float = 0.01,
    history: str | None = "yesterday",
    seed: int = 8,
) -> None:
    """``count`` open requests, bulk-inserted: each received within (about) its clock.

    About 5% are past their deadline, as in a queue that staff keep up with but
    not perfectly; ``unverified_share`` wait for identity (the expiry's work).
    Four in five came by Telegram, the rest by e-mail. ``history`` records as
    sent every notice owed before today (``"yesterday"``: the next reconcile is
    a morning's pass, sending today's notices and the digest) or up to now
    (``"now"``: the next reconcile finds nothing due, as all day long).
    """
    rng = random.Random(seed)
    calendar = WorkingCalendar()
    vault = Vault(BENCH_KEY)
    fields = vault.encrypt_json({"data_concerned": "all of it"})
    emails = [vault.encrypt(f"person{i}@mail.kz") for i in range(100)]
    due_cache: dict[tuple[RequestKind, Any], datetime] = {}
    clock_days = {kind: _clock_days(kind, calendar) for kind, _ in KIND_MIX}
    subjects: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    for number in range(1, count + 1):
        kind = _pick(KIND_MIX, rng)
        by_mail = rng.random() < 0.2
        language = rng.choice(("kk", "ru", "en"))
        received = now - timedelta(days=rng.uniform(0, clock_days[kind] * 1.05))
        received = received.replace(microsecond=0)
        subjects.append(
            {
                "id": number,
                "telegram_user_id": None if by_mail else 10_000_000 + number,
                "telegram_unreachable": False,
                "email_enc": emails[number % len(emails)] if by_mail else None,
                "language": language,
                "created_at": received,
            }
        )
        row: dict[str, Any] = {
            "id": number,
            "reference": f"DSR-{received.year}-{number:06d}",
            "kind": kind.value,
            "channel": "email" if by_mail else "telegram",
            "language": language,
            "subject_id": number,
            "customer_id": None,
            "received_at": received,
            "clock_started_at": None,
            "due_at": None,
            "verified_at": None,
            "verified_by": None,
            "assignee_id": None,
            "assignee_name": None,
            "fields_enc": fields,
            "closed_at": None,
            "updated_at": received,
            "version": 1,
            "status": Status.AWAITING_VERIFICATION.value,
        }
        if rng.random() < unverified_share:
            if history == "now":
                # Steady state: older unverified requests were expired by earlier passes.
                received = (now - timedelta(days=rng.uniform(0, 13))).replace(microsecond=0)
                row.update(received_at=received, updated_at=received)
                subjects[-1]["created_at"] = received
        else:
            key = (kind, calendar.local_date(received))
            if key not in due_cache:
                due_cache[key] = DEFAULT_KINDS[kind].due_at(received, calendar)
            row.update(
                status=_pick(STATUS_MIX, rng).value,
                clock_started_at=received,
                due_at=due_cache[key],
                verified_at=received + timedelta(minutes=3),
                verified_by="email_code" if by_mail else "telegram_contact",
            )
            if row["status"] == Status.IN_REVIEW.value:
                row.update(assignee_id=5001, assignee_name="Dana")
        requests.append(row)
    notices = _history(requests, now, calendar, through_now=history == "now") if history else []
    years: dict[int, int] = {}
    for row in requests:
        years[row["received_at"].year] = len(requests)
    chunk = 5000
    async with engine.begin() as connection:
        for start in range(0, count, chunk):
            await connection.execute(insert(DataSubject), subjects[start : start + chunk])
        for start in range(0, count, chunk):
            await connection.execute(insert(Request), requests[start : start + chunk])
        for start in range(0, len(notices), chunk):
            await connection.execute(insert(ScheduledNotice), notices[start : start + chunk])
        await connection.execute(
            insert(ReferenceCounter), [{"year": y, "last": n} for y, n in years.items()]
        )
        if engine.dialect.name == "postgresql":
            for table in ("data_subject", "request", "scheduled_notice"):
                await connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
            await connection.execute(text("ANALYZE"))


def _history(
    requests: Sequence[dict[str, Any]],
    now: datetime,
    calendar: WorkingCalendar,
    *,
    through_now: bool,
) -> list[dict[str, Any]]:
    """The notices a desk running until yesterday (or now) has recorded (default policy)."""
    policy = ReminderPolicy()
    today = calendar.local_date(now)
    until = calendar.local_date(now + timedelta(days=40))
    owed_cache: dict[tuple[Any, Any], list[Any]] = {}
    rows: list[dict[str, Any]] = []
    for request in requests:
        if request["due_at"] is None:
            continue
        key = (
            calendar.local_date(request["clock_started_at"]),
            calendar.local_date(request["due_at"]),
        )
        if key not in owed_cache:
            owed_cache[key] = milestones(
                request["clock_started_at"], request["due_at"], calendar, policy, until
            )
        for milestone in owed_cache[key]:
            if milestone.day > today or (milestone.day == today and not through_now):
                break
            rows.append(
                {
                    "key": f"{request['reference']}/{milestone.name}",
                    "request_id": request["id"],
                    "milestone": milestone.name,
                    "meant_for": milestone.day,
                    "outcome": "sent",
                    "late": False,
                    "recorded_at": policy.instant(milestone.day, calendar),
                }
            )
    if through_now:
        rows.append(
            {
                "key": f"digest/{today.isoformat()}",
                "request_id": None,
                "milestone": "digest",
                "meant_for": today,
                "outcome": "sent",
                "late": False,
                "recorded_at": policy.instant(today, calendar),
            }
        )
    return rows
