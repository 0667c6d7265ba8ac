"""How soon the CLI answers: ``aina-dsr --help`` and ``requests list``, against another checkout.

    python -m bench.cli_start --baseline /path/to/older/checkout   # 7 runs each, alternating
    python -m bench.cli_start --runs 3                              # this checkout alone

Each run is a fresh process (``python -m aina_dsr ...``, with ``PYTHONPATH`` set to
the checkout), timed from launch to exit. ``requests list`` reads an empty SQLite
database migrated once per checkout beforehand, so what is timed is the start and
one query, not Alembic. Runs of the two checkouts alternate so the machine's load
falls on both alike; the figures are medians, and the ratio is this checkout's
against the baseline's in the same run. Also printed: which of aiogram, the
channels, matplotlib, fpdf and rich each command loaded (``-X importtime``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BENCH_KEY, Table, machine, median, ratio

HERE = Path(__file__).resolve().parent.parent
COMMANDS: dict[str, tuple[str, ...]] = {
    "--help": ("--help",),
    "requests list": ("requests", "list"),
}
HEAVY = ("aiogram", "bot", "mail", "matplotlib", "fpdf", "rich")
BOUND_SECONDS = 60.0


def environment(checkout: Path, database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSR_")}
    env.update(
        PYTHONPATH=str(checkout),
        DSR_DATABASE_URL=f"sqlite:///{database}",
        DSR_ENCRYPTION_KEY=BENCH_KEY,
        COLUMNS="120",
    )
    return env


def run(checkout: Path, database: Path, arguments: tuple[str, ...]) -> float:
    started = time.perf_counter()
    subprocess.run(  # noqa: S603 (this interpreter, our own module)
        [sys.executable, "-m", "aina_dsr", *arguments],
        env=environment(checkout, database),
        cwd=database.parent,
        check=True,
        capture_output=True,
        timeout=BOUND_SECONDS,
    )
    return time.perf_counter() - started


def loaded(checkout: Path, database: Path, arguments: tuple[str, ...]) -> str:
    """The heavy packages a command imports, read off ``-X importtime``."""
    result = subprocess.run(  # noqa: S603 (this interpreter, our own module)
        [sys.executable, "-X", "importtime", "-m", "aina_dsr", *arguments],
        env=environment(checkout, database),
        cwd=database.parent,
        check=True,
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS,
    )
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    return ", ".join(name for name in HEAVY if name in names) or "none of them"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    checkouts = {"this": HERE}
    if args.baseline is not None:
        checkouts["baseline"] = args.baseline.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        databases = {}
        for name, checkout in checkouts.items():
            databases[name] = Path(tmp) / name / "desk.db"
            databases[name].parent.mkdir()
            run(checkout, databases[name], ("db", "upgrade"))
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(max(1, min(args.runs, 50))):
            for command, arguments in COMMANDS.items():
                for name, checkout in checkouts.items():
                    seconds = run(checkout, databases[name], arguments)
                    times.setdefault((name, command), []).append(seconds)
        rows = []
        for command, arguments in COMMANDS.items():
            this = median(times["this", command])
            row: list[object] = [command, f"{this:.2f}"]
            if "baseline" in checkouts:
                base = median(times["baseline", command])
                row += [f"{base:.2f}", ratio(this, base)]
            row.append(loaded(HERE, databases["this"], arguments))
            rows.append(row)
    headers = ["command", "this s"]
    if "baseline" in checkouts:
        headers += ["baseline s", "this / baseline"]
    headers.append("heavy imports (this)")
    print(machine())
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; medians of {args.runs} runs")
    print(Table(headers, rows).render())


if __name__ == "__main__":
    main()
