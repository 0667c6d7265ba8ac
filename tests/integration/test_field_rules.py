"""One rule per directory field: the import and staff's corrections refuse the same values alike."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.paths import DATA
from workflows.directory.csv_import import import_customers
from workflows.directory.sql_directory import SqlDirectory
from workflows.fulfilment.corrections import parse_corrections
from workflows.fulfilment.failures import FulfilmentError
from workflows.fulfilment.work import Fulfilment
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

DANA = Actor.staff(STAFF_ID, "Dana")
PHONE = "+77011234567"  # C-1001 in tests/data/customers.csv
ALICE = 700100
TODAY = date(2026, 11, 24)  # the clock fixture's day in Almaty

# Each value is wrong for its field; the reason is the import's, word for word.
BAD = [
    ("gender", "banana", "gender: not one of m, f, male, female, м, ж"),
    ("birth_date", "2999-01-01", "birth_date: in the future"),
    ("birth_date", "2026-11-25", "birth_date: in the future"),
    ("birth_date", "14.03.1995", "birth_date: not a date in the form YYYY-MM-DD"),
    ("phone", "8 701 12", "phone: not a valid phone number"),
    ("iin", "950314401238", "iin: the check digit of the IIN does not match"),
    ("email", "aigerim@", "email: not a valid e-mail address"),
    ("language", "de", "language: not one of kk, ru, en"),
]


@pytest.mark.parametrize(("column", "value", "reason"), BAD)
async def test_a_value_the_import_refuses_is_refused_in_a_correction_with_the_same_words(
    column: str,
    value: str,
    reason: str,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    await import_customers(sessions, vault, DATA / "customers.csv", now=clock.now())
    directory = SqlDirectory(sessions, vault, clock)
    before = await directory.lookup(customer_id="C-1001")
    one = tmp_path / "one.csv"
    one.write_text(f"id;{column}\nC-9;{value}\n", encoding="utf-8")

    imported = await import_customers(sessions, vault, one, now=clock.now())

    assert [r.reason for r in imported.rejected] == [reason]
    view = await service.open_request(
        kind="rectify",
        channel="telegram",
        language="ru",
        telegram_user_id=ALICE,
        fields={"correction": "please"},
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=ALICE, contact_user_id=ALICE, phone=PHONE
    )
    with pytest.raises(FulfilmentError) as refused:
        await Fulfilment(service, directory, clock).approve(
            view.reference, DANA, corrections={column: value}
        )
    assert str(refused.value) == reason
    assert await directory.lookup(customer_id="C-1001") == before
    assert (await service.get(view.reference)).status == "verified"
    with pytest.raises(FulfilmentError) as typed:
        parse_corrections(f"full_name: Айгерим Сейтқали\n{column}: {value}", today=TODAY)
    assert str(typed.value) == f"line 2: {reason}"


@pytest.mark.parametrize(
    ("column", "written", "stored"),
    [
        ("gender", "Ж", "f"),
        ("gender", "male", "m"),
        ("language", "KK", "kk"),
        ("phone", "8 (701) 765-43-21", "+77017654321"),
        ("email", "Aigerim.Seitkali@Mail.KZ", "aigerim.seitkali@mail.kz"),
        ("full_name", "Айгерим   Сейтқали", "Айгерим Сейтқали"),
        ("birth_date", "2026-11-24", "2026-11-24"),
    ],
)
async def test_a_good_value_is_stored_the_same_way_by_both(
    column: str,
    written: str,
    stored: str,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    one = tmp_path / "one.csv"
    one.write_text(f"id;{column}\nC-9;{written}\n", encoding="utf-8")

    report = await import_customers(sessions, vault, one, now=clock.now())
    corrected = parse_corrections(f"{column}: {written}", today=TODAY)

    assert report.created == 1
    record = await SqlDirectory(sessions, vault, clock).lookup(customer_id="C-9")
    assert record is not None
    value = getattr(record, column)
    assert (value.isoformat() if isinstance(value, date) else value) == stored
    assert corrected == {column: stored}
