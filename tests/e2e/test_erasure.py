"""What a person had erased or withdrawn stays so, and what was kept is still theirs to see.

An account deleted through two approvals, a marketing consent withdrawn, a
processing stop or a block: the shop's customer file imported again (changed,
or the same file after a key rotation) writes no erased field back and turns
no withdrawn consent back on, and the import says so row by row. An access
request after the deletion still finds the purchase history the deletion kept.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.cli_command import aina_dsr_here, rotate
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID, STAFF_IDS
from tests.paths import DATA
from workflows.deadlines.calendar import WorkingCalendar
from workflows.directory.csv_import import ImportReport, import_customers, import_purchases
from workflows.directory.customer_directory import ACCOUNT_FIELDS
from workflows.directory.sql_directory import SqlDirectory
from workflows.fulfilment.work import Fulfilment
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

CUSTOMERS = DATA / "customers.csv"
PURCHASES = DATA / "purchases.csv"
DANA = Actor.staff(STAFF_ID, "Dana")
ARMAN = Actor.staff(5002, "Arman")
PHONE = "+77011234567"  # C-1001 in tests/data/customers.csv, line 2
ALICE = 700100
HEADER = "id,full_name,phone,email,iin,gender,birth_date,language,marketing_consent,created_at"
# C-1001 as the shop's file still has it, with one column changed (registered a day
# later by default), and a phone number a test may change too.
C1001 = "C-1001,Айгерим Нурланқызы Сейтқали,{phone},Aigerim.Seitkali@mail.kz,950314401237,ж,1995-03-14,kk,иә,{created}"  # noqa: E501
ERASED = (
    "full_name, phone, email, iin, gender, birth_date, language erased on 2026-11-24, not restored"
)
PERSONAL = ("Айгерим", PHONE, "aigerim.seitkali@mail.kz", "950314401237", "1995-03-14")

Sessions = async_sessionmaker[AsyncSession]


def shop_file(
    tmp_path: Path, *, phone: str = "8 701 123 45 67", created: str = "2023-05-11"
) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text(f"{HEADER}\n{C1001.format(phone=phone, created=created)}\n", encoding="utf-8")
    return path


async def filed(service: RequestService, kind: str, who: int = ALICE, **fields: str) -> str:
    view = await service.open_request(
        kind=kind, channel="telegram", language="ru", telegram_user_id=who, fields=fields
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=who, contact_user_id=who, phone=PHONE
    )
    return view.reference


async def delete_account(service: RequestService, desk: Fulfilment) -> None:
    reference = await filed(service, "delete_account")
    await desk.approve(reference, DANA)
    done = await desk.approve(reference, ARMAN)
    assert done.status == "completed"


async def imported(sessions: Sessions, vault: Vault, clock: FrozenClock) -> SqlDirectory:
    await import_customers(sessions, vault, CUSTOMERS, now=clock.now())
    await import_purchases(sessions, vault, PURCHASES)
    return SqlDirectory(sessions, vault, clock)


@pytest.fixture
async def directory(sessions: Sessions, vault: Vault, clock: FrozenClock) -> SqlDirectory:
    return await imported(sessions, vault, clock)


@pytest.fixture
def fulfilment(service: RequestService, directory: SqlDirectory, clock: FrozenClock) -> Fulfilment:
    return Fulfilment(service, directory, clock)


async def assert_erased(directory: SqlDirectory) -> None:
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    assert (record.full_name, record.phone, record.email, record.iin) == (None, None, None, None)
    assert (record.gender, record.birth_date, record.language) == (None, None, None)
    assert len(record.purchases) == 2
    assert await directory.lookup(phone=PHONE) is None
    assert await directory.lookup(iin="950314401237") is None
    (line,) = await directory.suppressions()
    assert line.erased_fields == tuple(sorted(ACCOUNT_FIELDS))


def withheld(report: ImportReport) -> list[tuple[int, str]]:
    """The rows the import did not apply in full, as its JSON lists them."""
    return [(row["line"], row["reason"]) for row in report.as_dict()["withheld"]]


def assert_nothing_personal(report: ImportReport) -> None:
    said = json.dumps(report.as_dict(), ensure_ascii=False)
    for value in PERSONAL:
        assert value not in said, value


# The import after an account deletion


async def test_a_changed_file_does_not_bring_a_deleted_account_back(
    service: RequestService,
    fulfilment: Fulfilment,
    directory: SqlDirectory,
    sessions: Sessions,
    vault: Vault,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    await delete_account(service, fulfilment)
    clock.advance(days=3)

    report = await import_customers(sessions, vault, shop_file(tmp_path), now=clock.now())

    await assert_erased(directory)
    assert withheld(report) == [(2, ERASED)]
    assert (report.created, report.updated, report.rejected) == (0, 1, ())
    assert_nothing_personal(report)
    # The column that is not erased is the shop's to change.
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    assert record.registered_at == datetime(2023, 5, 10, 18, 0, tzinfo=UTC)  # Almaty, UTC+6 then

    # A re-run: still erased, and said again (the shop's file still holds the data).
    again = await import_customers(sessions, vault, shop_file(tmp_path), now=clock.now())
    await assert_erased(directory)
    assert withheld(again) == [(2, ERASED)]
    assert (again.updated, again.unchanged) == (0, 1)


async def test_after_a_key_rotation_the_same_file_brings_nothing_back(
    tmp_path: Path,
    database_url: str,
    sessions: Sessions,
    clock: FrozenClock,
    calendar: WorkingCalendar,
    encryption_key: str,
) -> None:
    old_key, new_key = encryption_key, Vault.generate_key()
    service = RequestService(sessions, Vault(old_key), clock, calendar, staff_user_ids=STAFF_IDS)
    await delete_account(
        service, Fulfilment(service, await imported(sessions, Vault(old_key), clock), clock)
    )
    code, _, err = await asyncio.to_thread(rotate, tmp_path, database_url, f"{new_key},{old_key}")
    assert code == 0, err

    vault = Vault(new_key)
    report = await import_customers(sessions, vault, CUSTOMERS, now=clock.now())

    await assert_erased(SqlDirectory(sessions, vault, clock))
    assert withheld(report) == [(2, ERASED)]
    assert_nothing_personal(report)


async def test_the_import_command_lists_and_counts_what_it_did_not_restore(
    engine: AsyncEngine,
    database_url: str,
    encryption_key: str,
    service: RequestService,
    fulfilment: Fulfilment,
    tmp_path: Path,
) -> None:
    await delete_account(service, fulfilment)
    env = {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": encryption_key}
    path = shop_file(tmp_path)

    as_json = aina_dsr_here(tmp_path, "customers", "import", str(path), "--json", **env)
    as_text = aina_dsr_here(tmp_path, "customers", "import", str(path), COLUMNS="200", **env)

    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["withheld"] == [{"line": 2, "reason": ERASED}]
    assert as_text.returncode == 0, as_text.stderr
    assert re.search(r"│ withheld\s+│\s+1 │", as_text.stdout), as_text.stdout
    assert f"│ 2    │ {ERASED} │" in as_text.stdout
    for value in PERSONAL:
        assert value not in as_json.stdout + as_text.stdout + as_text.stderr, value


# The import after a withdrawal


@pytest.mark.parametrize(
    ("kind", "fields", "reason", "applied"),
    [
        ("unsubscribe", {}, "marketing_consent withdrawn on 2026-11-24, kept withdrawn", True),
        (
            "withdraw_consent",
            {"full_name": "Айгерим", "data_concerned": "всё", "phone": PHONE},
            "marketing_consent withdrawn on 2026-11-24, kept withdrawn; "
            "processing stopped on 2026-11-24, the row's changes not applied",
            False,
        ),
        (
            "block",
            {"text": "you gave my data to a partner"},
            "processing blocked on 2026-11-24, the row's changes not applied",
            False,
        ),
    ],
)
async def test_a_withdrawn_consent_stays_withdrawn_through_an_import(
    kind: str,
    fields: dict[str, str],
    reason: str,
    applied: bool,
    service: RequestService,
    fulfilment: Fulfilment,
    directory: SqlDirectory,
    sessions: Sessions,
    vault: Vault,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    reference = await filed(service, kind, **fields)
    assert (await fulfilment.approve(reference, DANA)).status == "completed"
    (before,) = await directory.suppressions()
    clock.advance(days=3)

    # The shop's file still says yes to marketing, and has a new phone number.
    report = await import_customers(
        sessions, vault, shop_file(tmp_path, phone="+7 777 987 65 43"), now=clock.now()
    )

    (after,) = await directory.suppressions()
    assert after == before
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    assert record.marketing_consent is (kind == "block")
    # Stopped or blocked processing collects nothing new; an unsubscribe stops newsletters only.
    assert (record.phone == "+77779876543") is applied
    assert (record.phone == PHONE) is not applied
    assert withheld(report) == [(2, reason)]
    assert_nothing_personal(report)


# An access request after the deletion


async def test_an_access_request_after_a_deletion_lists_the_purchases_kept(
    service: RequestService,
    fulfilment: Fulfilment,
    sessions: Sessions,
    vault: Vault,
    clock: FrozenClock,
) -> None:
    await delete_account(service, fulfilment)
    clock.advance(days=10)

    reference = await filed(service, "access")

    assert (await service.get(reference)).customer_matched
    preview = await fulfilment.preview(reference)
    assert preview is not None and "C-1001" in preview
    view = await fulfilment.approve(reference, DANA)
    assert view.status == "completed"
    async with sessions() as session:
        row = await session.scalar(select(OutboxItem).where(OutboxItem.template == "access_report"))
    assert row is not None
    notice = vault.decrypt_json(row.params_enc)
    pdf, data = await service.documents(reference, notice["documents"])
    report = json.loads(data.data)
    assert report["customer_found"] is True
    assert [p["purchase_id"] for p in report["purchases"]] == ["P-5001", "P-5002"]
    assert report["data"]["identity"]["full_name"] is None  # erased, not brought back
    text = " ".join(
        "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.data)).pages).split()
    )
    assert "Платье, шёлк" in text and "Туфли-лодочки" in text


async def test_the_same_phone_from_another_telegram_account_finds_the_kept_history_too(
    service: RequestService, fulfilment: Fulfilment, clock: FrozenClock
) -> None:
    await delete_account(service, fulfilment)
    clock.advance(days=10)

    reference = await filed(service, "access", who=ALICE + 1)

    assert (await service.get(reference)).customer_matched
    customer = await fulfilment.customer(await service.get(reference))
    assert customer is not None and customer.id == "C-1001"
    # Someone else's phone finds nobody.
    other = await service.open_request(
        kind="access", channel="telegram", language="ru", telegram_user_id=ALICE + 2
    )
    verified = await service.verify_by_contact(
        other.reference, sender_user_id=ALICE + 2, contact_user_id=ALICE + 2, phone="+77010000000"
    )
    assert not verified.customer_matched
