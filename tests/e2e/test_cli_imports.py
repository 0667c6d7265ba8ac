"""``aina-dsr customers import`` with the files people have: Excel's charsets, true line
numbers, and a stop part-way that says exactly what was committed."""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from tests.cli_command import aina_dsr_here
from workflows.persistence.tables import Customer

HEADER = ["id", "full_name", "phone", "language"]
RUSSIAN = [
    ["R-1", "Ольга Петровна Иванова", "+7 701 123 45 67", "ru"],
    ["R-2", "Сергей Ёлкин", "87025551234", "ru"],
    ["R-3", "Иван Іванов", "+77071234567", "ru"],
]


def settings(database_url: str, key: str) -> dict[str, str]:
    return {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": key}


def excel_csv(rows: list[list[str]], delimiter: str = ";") -> str:
    """What Excel writes: CRLF line ends, the delimiter of the locale (';' in ru-KZ)."""
    return "".join(delimiter.join(row) + "\r\n" for row in [HEADER, *rows])


async def stored(engine: AsyncEngine) -> int:
    async with async_sessionmaker(engine)() as session:
        return int(await session.scalar(select(func.count()).select_from(Customer)) or 0)


async def names(engine: AsyncEngine, key: str) -> dict[str, str]:
    from workflows.privacy.vault import Vault

    vault = Vault(key)
    async with async_sessionmaker(engine, class_=AsyncSession)() as session:
        found = await session.scalars(select(Customer))
        return {c.external_id: vault.decrypt(c.full_name_enc) or "" for c in found}


@pytest.mark.parametrize(
    ("encoding", "said", "delimiter"),
    [
        ("cp1251", "windows-1251", ";"),
        ("utf-8", "UTF-8", ";"),
        ("utf-8-sig", "UTF-8 with BOM", ","),
        ("utf-16", "UTF-16", "\t"),  # Excel's "Unicode text": a BOM, tabs
    ],
)
async def test_a_file_in_each_charset_excel_writes_is_read_and_said(
    engine: AsyncEngine,
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
    encoding: str,
    said: str,
    delimiter: str,
) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(excel_csv(RUSSIAN, delimiter).encode(encoding))
    if encoding == "utf-16":
        assert path.read_bytes().startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    env = settings(database_url, encryption_key)

    shown = aina_dsr_here(tmp_path, "customers", "import", str(path), **env)
    again = aina_dsr_here(tmp_path, "customers", "import", str(path), "--json", **env)

    assert shown.returncode == 0, shown.stderr
    assert f"read as {said}" in shown.stdout, shown.stdout
    assert json.loads(again.stdout)["charset"] == said
    assert await names(engine, encryption_key) == {row[0]: row[1] for row in RUSSIAN}


async def test_kazakh_letters_excel_turned_into_question_marks_are_pointed_out(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    # Excel's "CSV (разделители - запятые)" on a Russian Windows: cp1251 has no ә, қ, ң, ө, ұ.
    kazakh = [
        ["K-1", "Әлия Сейтқали", "+7 701 123 45 67", "kk"],
        ["K-2", "Ольга Иванова", "+7 702 555 12 34", "ru"],
        ["K-3", "Нұрлан Өтепов", "+7 705 555 00 11", "kk"],
    ]
    path = tmp_path / "customers.csv"
    path.write_bytes(excel_csv(kazakh).encode("cp1251", errors="replace"))
    assert b"?" in path.read_bytes()
    env = settings(database_url, encryption_key)

    shown = aina_dsr_here(tmp_path, "customers", "import", str(path), **env)
    data = json.loads(
        aina_dsr_here(tmp_path, "customers", "import", str(path), "--json", **env).stdout
    )

    assert "read as windows-1251" in shown.stdout
    assert "lines 2, 4" in shown.stdout, shown.stdout
    assert "CSV UTF-8" in shown.stdout
    assert data["letters_lost"] == [2, 4]
    assert shown.returncode == 1


async def test_error_lines_are_the_files_own_after_a_field_on_several_lines(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    # A name typed with Alt+Enter in a cell: Excel quotes it, with a bare LF inside.
    path = tmp_path / "customers.csv"
    path.write_bytes(
        (
            "id;full_name;phone;language\r\n"  # line 1
            'M-1;"Ольга\nПетровна\nИванова";+7 701 123 45 67;ru\r\n'  # lines 2-4
            "M-2;Ерлан;not a phone;ru\r\n"  # line 5
            "\r\n"  # line 6, empty
            'M-3;"Дана\r\nАхметова";+7 702 555 12 34;xx\r\n'  # lines 7-8
            "M-4;Айгерим;+7 705 555 00 11;ru\r\n"  # line 9
            "M-4;Айгерим;+7 705 555 00 11;ru\r\n"  # line 10
        ).encode("cp1251")
    )

    result = aina_dsr_here(
        tmp_path,
        "customers",
        "import",
        str(path),
        "--json",
        **settings(database_url, encryption_key),
    )

    assert result.returncode == 1, result.stderr
    rejected = {r["line"]: r["reason"] for r in json.loads(result.stdout)["rejected"]}
    assert sorted(rejected) == [5, 7, 10], rejected
    assert rejected[10] == "id: the same id as line 9"


def big_file(path: Path, rows: int, bad_line: int, bad_id: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("id,full_name,phone\n")
        for line in range(2, rows + 2):
            ident = bad_id if line == bad_line else f"B-{line}"
            f.write(f"{ident},Клиент {line},+7 701 {line // 10000:03d} {line % 10000:04d}\n")


async def test_a_row_the_database_refuses_stops_the_import_saying_what_was_committed(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL refuses a NUL character in text; SQLite stores it")
    # A NUL in an id (a file damaged in transit): only PostgreSQL refuses it, at the insert.
    path = tmp_path / "customers.csv"
    big_file(path, rows=1200, bad_line=800, bad_id="B-8\x0000")

    result = aina_dsr_here(
        tmp_path, "customers", "import", str(path), **settings(database_url, encryption_key)
    )

    # Batches of 500: lines 2-501 were committed, the batch of lines 502-1001 was not.
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"aina-dsr: {path}: 500 rows committed, stopped at line 502: "), line
    assert "Traceback" not in result.stdout + result.stderr
    assert await stored(engine) == 500


async def test_a_broken_quote_part_way_commits_the_rows_before_it_and_says_so(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    # An opening quote never closed: the rest of the file would be one field.
    path = tmp_path / "customers.csv"
    big_file(path, rows=6000, bad_line=700, bad_id='"B-700')

    result = aina_dsr_here(
        tmp_path, "customers", "import", str(path), **settings(database_url, encryption_key)
    )

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"aina-dsr: {path}: 698 rows committed, stopped at line 700: "), line
    assert await stored(engine) == 698


async def test_ctrl_c_part_way_lets_the_batch_in_hand_finish_and_counts_it(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("needs a row lock to hold the import mid-way: PostgreSQL")
    env = settings(database_url, encryption_key)
    path = tmp_path / "customers.csv"
    big_file(path, rows=1200, bad_line=0, bad_id="")
    assert aina_dsr_here(tmp_path, "customers", "import", str(path), **env).returncode == 0
    # The shop's next export: every name changed, so every row is an update.
    path.write_text(path.read_text(encoding="utf-8").replace("Клиент", "Покупатель"), "utf-8")

    async with engine.connect() as holder:
        # Someone else's transaction holds customer B-700 (the second batch: lines 502-1001).
        await holder.execute(text("SELECT id FROM customer WHERE external_id = 'B-700' FOR UPDATE"))
        me = await holder.scalar(text("SELECT pg_backend_pid()"))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aina_dsr",
            "customers",
            "import",
            str(path),
            cwd=tmp_path,
            env=clean_env(tmp_path, env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            # The import has committed the first batch and waits on our lock.
            await wait_for_blocked_by(holder, me, process)
            process.send_signal(signal.SIGINT)  # the operator presses Ctrl-C
            await holder.rollback()  # the other transaction ends: the batch in hand can finish
            _, err = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()

    assert process.returncode == 130, err
    assert err.decode().splitlines() == [
        f"aina-dsr: {path}: 1000 rows committed, stopped at line 1002: interrupted (Ctrl-C)"
    ]
    renamed = await names(engine, encryption_key)
    assert renamed["B-1001"].startswith("Покупатель") and renamed["B-1002"].startswith("Клиент")


def clean_env(cwd: Path, env: dict[str, str]) -> dict[str, str]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **env}
    if os.environ.get("PYTHONPATH"):
        clean["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return clean


async def wait_for_blocked_by(
    holder: AsyncConnection, pid: int, process: asyncio.subprocess.Process
) -> None:
    """Until a session waits on ``pid``'s locks: PostgreSQL says so, nothing is guessed."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    deadline = time.monotonic() + 60
    async with holder.engine.connect() as watcher:
        while not await watcher.scalar(query, {"pid": pid}):
            assert process.returncode is None, "the import ended before the locked row"
            assert time.monotonic() < deadline, "the import never reached the locked row"
            # pg_stat_activity is a snapshot per transaction: a new one each time.
            await watcher.rollback()
            await asyncio.sleep(0.05)
