"""Start-up: ``aina-dsr run`` to ready with 100,000 requests stored.

    python -m bench.startup                   # 100,000 requests, SQLite, 3 runs
    python -m bench.startup --backends sqlite,postgresql
    python -m bench.startup --quick           # 10,000 requests, 1 run

Each run starts ``aina-dsr run`` (a process of its own, Telegram configured
against the Bot API stand-in on 127.0.0.1) and times, from the launch:

- *ready*: the stand-in sees the first ``getUpdates`` (the bot is polling);
- *answers*: the reply to a ``/start`` offered at launch is recorded (the
  process is ready *and* free: the scheduler's first reconcile runs beside
  the bot in the same event loop).

Baselines from the same run: ``python -c "import aina_dsr.cli"`` (the imports
alone) and ``aina-dsr run`` on an empty database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import BENCH_KEY, Table, database, machine, median, migrated, ratio
from bench.common import seed_requests as seed
from bench.telegram_intake import Stand
from tests.botapi import Person
from tests.telegram_desk import STAFF_CHAT, words

WHO = Person(900_000_001, language_code="ru")
BOUND_SECONDS = 120.0


async def _imports() -> float:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", "import aina_dsr.cli")
    await asyncio.wait_for(process.wait(), BOUND_SECONDS)
    return time.perf_counter() - started


async def _launch(url: str, home: Path) -> dict[str, float]:
    async with Stand() as api:
        greeting = words("ru", "start.greeting")
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        api.waiting[WHO.id] = (lambda c: c.params.get("text") == greeting, answered)
        await api.offer(api.private_message(WHO, "/start"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "DSR_DATABASE_URL": url,
            "DSR_ENCRYPTION_KEY": BENCH_KEY,
            "DSR_TELEGRAM_BOT_TOKEN": api.token,
            "DSR_TELEGRAM_API_URL": api.base,
            "DSR_STAFF_CHAT_ID": str(STAFF_CHAT),
            "DSR_STAFF_USER_IDS": "5001,5002",
        }
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aina_dsr",
            "run",
            cwd=home,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(api.polled.wait(), BOUND_SECONDS)
            ready = time.perf_counter() - started
            await asyncio.wait_for(answered, BOUND_SECONDS)
            answers = time.perf_counter() - started
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.communicate(), 60)
            if process.returncode is None:
                process.kill()
    return {"ready": ready, "answers": answers}


async def _drive(args: argparse.Namespace) -> None:
    count = args.requests or (10_000 if args.quick else 100_000)
    runs = args.runs or (1 if args.quick else 3)
    print(f"# start-up: aina-dsr run with {count} requests stored, {runs} run(s)")
    print(f"# machine: {machine()}")
    table = Table(
        [
            "database",
            "import s",
            "empty: ready s",
            f"{count}: ready s",
            "vs empty",
            "empty: answers s",
            f"{count}: answers s",
            "vs empty",
        ],
        [],
    )
    with tempfile.TemporaryDirectory(prefix="aina-bench-") as tmp:
        home = Path(tmp)
        for backend in args.backends.split(","):
            rows: list[dict[str, float]] = []
            async with database(backend, home) as empty, database(backend, home) as full:
                for url in (empty, full):
                    engine = await migrated(url)
                    if url == full:
                        # Notices recorded up to now: the start-up reconcile is an ordinary one.
                        await seed(engine, count, now=datetime.now(UTC), history="now")
                    await engine.dispose()
                for run in range(runs):
                    imported = await _imports()
                    bare = await _launch(empty, home)
                    loaded = await _launch(full, home)
                    rows.append(
                        {
                            "imports": imported,
                            "empty_ready": bare["ready"],
                            "empty_answers": bare["answers"],
                            "ready": loaded["ready"],
                            "answers": loaded["answers"],
                        }
                    )
                    print(
                        f"  {backend} run {run + 1}: import {imported:.2f} s; empty: ready "
                        f"{bare['ready']:.2f} s, answers {bare['answers']:.2f} s; {count}: "
                        f"ready {loaded['ready']:.2f} s, answers {loaded['answers']:.2f} s",
                        flush=True,
                    )

            def mid(key: str, rows: list[dict[str, float]] = rows) -> float:
                return median([r[key] for r in rows])

            table.rows.append(
                [
                    backend,
                    mid("imports"),
                    mid("empty_ready"),
                    mid("ready"),
                    ratio(mid("ready"), mid("empty_ready")),
                    mid("empty_answers"),
                    mid("answers"),
                    ratio(mid("answers"), mid("empty_answers")),
                ]
            )
    print()
    print(table.render())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, help="requests stored (default 100000)")
    parser.add_argument("--runs", type=int, help="runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="10,000 requests, 1 run")
    parser.add_argument("--backends", default="sqlite")
    args = parser.parse_args()
    asyncio.run(_drive(args))


if __name__ == "__main__":
    main()
