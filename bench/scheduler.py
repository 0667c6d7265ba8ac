"""The scheduler's reconcile with many open requests, on SQLite and PostgreSQL.

    python -m bench.scheduler              # 100,000 open requests, 3 runs per backend
    python -m bench.scheduler --quick      # 10,000 requests, 1 run

Per run: a fresh database with the requests bulk-inserted, then two workers,
each a process of its own so its peak memory (``ru_maxrss``) is its own:

- the baseline: a bare read of what the reconcile has to look at (every open
  request's row and the notices recorded for them) with SQLAlchemy core;
- the reconcile (``DeadlineScheduler.reconcile``, APScheduler running) over a
  queue whose notices are recorded up to now, as all day long, and whose
  requests are not planned yet (``next_notice_at`` NULL, as right after the
  upgrade to 0006): the first pass plans every request, the next one is the
  pass that repeats every 5 minutes;
- a restart: a fresh process whose first pass finds every request planned.

Then the morning: ``--morning`` requests (1,000) whose notices are recorded up
to yesterday and that were planned yesterday evening, so the pass sends
today's notices and the digest; its cost is in the notices written (each with
its audit event and outbox row, a batch of requests to a transaction),
reported as notices per second.

Targets (issue 8): under 2 s a pass and under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from bench.common import (
    BACKENDS,
    BENCH_KEY,
    NOW,
    Table,
    database,
    machine,
    median,
    migrated,
    peak_rss_mb,
    ratio,
    seed_requests,
)
from workflows.persistence.tables import Request

TARGET_SECONDS = 2.0
TARGET_MB = 300.0


# -- the workers (run in their own process) ------------------------------------------


async def _baseline(url: str) -> dict[str, Any]:
    from workflows.persistence.engines import make_engine
    from workflows.persistence.tables import Request, ScheduledNotice

    engine = make_engine(url)
    idle = peak_rss_mb()
    started = time.perf_counter()
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(Request).where(
                    Request.closed_at.is_(None),
                    Request.verified_at.is_not(None),
                    Request.due_at.is_not(None),
                )
            )
        ).all()
        notices = (
            await connection.execute(select(ScheduledNotice.request_id, ScheduledNotice.key))
        ).all()
    seconds = time.perf_counter() - started
    await engine.dispose()
    return {
        "seconds": seconds,
        "rows": len(rows) + len(notices),
        "idle_mb": idle,
        "peak_mb": peak_rss_mb(),
    }


async def _reconcile(url: str, profile: str | None, mode: str) -> dict[str, Any]:
    from tests.clocks import FrozenClock
    from workflows.deadlines.calendar import WorkingCalendar
    from workflows.deadlines.scheduler import scheduler_component
    from workflows.persistence.engines import make_engine, make_sessionmaker
    from workflows.persistence.tables import OutboxItem, ScheduledNotice
    from workflows.privacy.vault import Vault
    from workflows.requests.service import RequestService

    engine = make_engine(url)
    vault = Vault(BENCH_KEY)
    sessions = make_sessionmaker(engine, vault)
    clock = FrozenClock(NOW)
    calendar = WorkingCalendar()
    service = RequestService(sessions, vault, clock, calendar, staff_user_ids=frozenset({5001}))
    component = scheduler_component(
        service=service,
        sessions=sessions,
        engine=engine,
        vault=vault,
        clock=clock,
        calendar=calendar,
    )
    scheduler = component.build_scheduler()
    scheduler.start(paused=True)  # jobs are kept, none fires while we measure
    if mode == "morning":
        # Planned yesterday evening, as a desk running all along would have it.
        clock.set(NOW - timedelta(hours=12))
        await component.reminders.run_due()
        clock.set(NOW)
    async with sessions() as session:
        outbox_before = await session.scalar(select(func.count(OutboxItem.id)))
    idle = peak_rss_mb()
    result: dict[str, Any] = {"idle_mb": idle}
    for name in ("first",) if mode != "reconcile" else ("first", "second"):
        profiler = _profiler(profile)
        started = time.perf_counter()
        plan = await component.reconcile()
        result[f"{name}_seconds"] = time.perf_counter() - started
        result[f"{name}_peak_mb"] = peak_rss_mb()
        if profiler is not None:
            profiler.stop()
            Path(f"{profile}-{name}.txt").write_text(  # noqa: ASYNC240 (after the clock)
                profiler.output_text(unicode=True, color=False, show_all=False), encoding="utf-8"
            )
        result[f"{name}_planned"] = len(plan.requests)
    result["jobs"] = len(scheduler.get_jobs())
    async with sessions() as session:
        result["notices"] = await session.scalar(select(func.count(ScheduledNotice.id)))
        result["outbox"] = (await session.scalar(select(func.count(OutboxItem.id)))) - (
            outbox_before or 0
        )
    scheduler.shutdown(wait=False)
    await engine.dispose()
    return result


def _profiler(target: str | None) -> Any:
    if target is None:
        return None
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="enabled")
    profiler.start()
    return profiler


def _worker(args: argparse.Namespace) -> None:
    if args.worker == "baseline":
        result = asyncio.run(_baseline(args.url))
    else:
        result = asyncio.run(_reconcile(args.url, args.profile, args.worker))
    print(json.dumps(result))


# -- the driver ----------------------------------------------------------------------


def _spawn(mode: str, url: str, profile: str | None = None) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.scheduler", "--worker", mode, "--url", url]
    if profile:
        command += ["--profile", profile]
    done = subprocess.run(  # noqa: S603 (this interpreter, our own module)
        command, capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def _runs(
    backend: str,
    count: int,
    runs: int,
    directory: Path,
    profile: str | None,
    history: str = "now",
) -> list[dict[str, Any]]:
    """Seed once; each run starts from unplanned requests (a steady pass sends nothing)."""
    results = []
    async with database(backend, directory) as url:
        engine = await migrated(url)
        started = time.perf_counter()
        await seed_requests(engine, count, history=history)
        seeded = time.perf_counter() - started
        for run in range(runs):
            async with engine.begin() as connection:
                await connection.execute(update(Request).values(next_notice_at=None))
            traced = profile if run == 0 else None
            if history == "yesterday":
                morning = await asyncio.to_thread(_spawn, "morning", url, traced)
                results.append({"seed_seconds": seeded, **morning})
                continue
            baseline = await asyncio.to_thread(_spawn, "baseline", url)
            reconcile = await asyncio.to_thread(_spawn, "reconcile", url, traced)
            restart = await asyncio.to_thread(_spawn, "restart", url)
            results.append(
                {
                    "seed_seconds": seeded,
                    "baseline": baseline,
                    **reconcile,
                    "restart_seconds": restart["first_seconds"],
                    "restart_peak_mb": restart["first_peak_mb"],
                }
            )
        await engine.dispose()
    return results


async def _drive(args: argparse.Namespace) -> None:
    count = args.requests or (10_000 if args.quick else 100_000)
    runs = args.runs or (1 if args.quick else 3)
    backends = [b for b in args.backends.split(",") if b in BACKENDS]
    print(f"# scheduler reconcile: {count} open requests, {runs} run(s) per backend")
    print(f"# machine: {machine()}")
    table = Table(
        [
            "backend",
            "bare read s",
            "after upgrade s",
            "ratio",
            "second pass s",
            "ratio",
            "after restart s",
            "ratio",
            "bare read MB",
            "reconcile peak MB",
            "jobs",
            "notices sent",
        ],
        [],
    )
    with tempfile.TemporaryDirectory(prefix="aina-bench-") as tmp:
        for backend in backends:
            profile = f"{args.profile}/scheduler-{backend}" if args.profile else None
            results = await _runs(backend, count, runs, Path(tmp), profile)
            for run, result in enumerate(results):
                print(
                    f"  {backend} run {run + 1}: seed {result['seed_seconds']:.1f} s, "
                    f"bare read {result['baseline']['seconds']:.2f} s, "
                    f"after upgrade {result['first_seconds']:.2f} s "
                    f"({result['first_planned']} planned), "
                    f"second {result['second_seconds']:.2f} s "
                    f"({result['second_planned']} planned), "
                    f"after restart {result['restart_seconds']:.2f} s, "
                    f"peak {result['second_peak_mb']:.0f} / {result['restart_peak_mb']:.0f} MB",
                    flush=True,
                )
            bare = median([r["baseline"]["seconds"] for r in results])
            first = median([r["first_seconds"] for r in results])
            second = median([r["second_seconds"] for r in results])
            restart = median([r["restart_seconds"] for r in results])
            table.rows.append(
                [
                    backend,
                    bare,
                    first,
                    ratio(first, bare),
                    second,
                    ratio(second, bare),
                    restart,
                    ratio(restart, bare),
                    median([r["baseline"]["peak_mb"] for r in results]),
                    median([r["second_peak_mb"] for r in results]),
                    results[-1]["jobs"],
                    results[-1]["outbox"],
                ]
            )
        morning = Table(["backend", "requests", "notices sent", "pass s", "notices/s"], [])
        for backend in backends:
            passes = []
            for run in range(runs):
                profile = f"{args.profile}/morning-{backend}" if args.profile and run == 0 else None
                [result] = await _runs(
                    backend, args.morning, 1, Path(tmp), profile, history="yesterday"
                )
                passes.append(result)
                print(
                    f"  {backend} morning run {run + 1}: {result['outbox']} notices in "
                    f"{result['first_seconds']:.2f} s",
                    flush=True,
                )
            seconds = median([r["first_seconds"] for r in passes])
            sent = passes[-1]["outbox"]
            morning.rows.append([backend, args.morning, sent, seconds, sent / seconds])
    print()
    print(table.render())
    print(
        f"\ntargets: a pass under {TARGET_SECONDS} s, peak under {TARGET_MB:.0f} MB "
        "(medians above; ratio = pass / bare read of the same rows)\n"
    )
    print(morning.render())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, help="open requests (default 100000)")
    parser.add_argument("--runs", type=int, help="runs per backend (default 3)")
    parser.add_argument("--quick", action="store_true", help="10,000 requests, one run")
    parser.add_argument("--morning", type=int, default=1000, help="requests of the morning pass")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--profile", help="write pyinstrument profiles of run 1 to this folder")
    parser.add_argument(
        "--worker", choices=["baseline", "reconcile", "restart", "morning"], help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    asyncio.run(_drive(args))


if __name__ == "__main__":
    main()
