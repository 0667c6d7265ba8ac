"""The customer directory: the shop's CSV in, customers found by phone, e-mail or IIN."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.access_report_data import valid_iin
from tests.cli_command import aina_dsr, aina_dsr_here
from tests.paths import DATA
from tests.stored import everything_stored
from workflows.directory.csv_file import ImportFileError, Rejected
from workflows.directory.csv_import import import_customers, import_purchases
from workflows.directory.store import find_customer
from workflows.identity import InvalidPhone, iin_check_digit
from workflows.persistence.tables import Customer, Purchase
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

CUSTOMERS = DATA / "customers.csv"
PURCHASES = DATA / "purchases.csv"
NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)

SAMPLE_REJECTS = (
    Rejected(6, "phone: not a valid phone number"),
    Rejected(7, "iin: the check digit of the IIN does not match"),
    Rejected(8, "birth_date: not a date in the form YYYY-MM-DD"),
    Rejected(9, "language: not one of kk, ru, en"),
    Rejected(10, "id: missing"),
    Rejected(11, "id: the same id as line 3"),
)
PURCHASE_REJECTS = (
    Rejected(5, "customer_id: no customer with this id in the directory"),
    Rejected(6, "purchased_at: not an ISO 8601 date or date-time"),
    Rejected(7, "amount: not an amount such as 15990.00"),
)
HEADER = "id,full_name,phone,email,iin,gender,birth_date,language,marketing_consent,created_at"

Sessions = async_sessionmaker[AsyncSession]


def personal_values(path: Path) -> set[str]:
    """Every name, phone, e-mail, IIN and birth date in the sample file, as written."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    columns = ("full_name", "phone", "email", "iin", "birth_date")
    return {row[c] for row in rows for c in columns if row.get(c)}


async def count(sessions: Sessions, table: type[Customer] | type[Purchase]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


# Importing customers


async def test_the_sample_list_imports_and_each_bad_row_says_why(
    sessions: Sessions, vault: Vault
) -> None:
    report = await import_customers(sessions, vault, CUSTOMERS, now=NOW)

    assert (report.created, report.updated, report.unchanged) == (5, 0, 0)
    assert report.rejected == SAMPLE_REJECTS
    assert await count(sessions, Customer) == 5
    reasons = json.dumps(report.as_dict(), ensure_ascii=False)
    for value in personal_values(CUSTOMERS):
        assert value not in reasons, value


async def test_importing_the_same_file_again_changes_nothing(
    sessions: Sessions, vault: Vault
) -> None:
    await import_customers(sessions, vault, CUSTOMERS, now=NOW)
    again = await import_customers(sessions, vault, CUSTOMERS, now=datetime(2027, 1, 1, tzinfo=UTC))

    assert (again.created, again.updated, again.unchanged) == (0, 0, 5)
    assert again.rejected == SAMPLE_REJECTS
    assert await count(sessions, Customer) == 5
    found = await find_customer(sessions, vault, phone="+77011234567")
    assert found is not None and found.updated_at == NOW


async def test_a_changed_row_updates_that_customer_only(
    sessions: Sessions, vault: Vault, tmp_path: Path
) -> None:
    await import_customers(sessions, vault, CUSTOMERS, now=NOW)
    # Aigerim changed her number and withdrew marketing consent; the same phone of
    # Ерлан written another way is no change.
    changed = tmp_path / "customers.csv"
    changed.write_text(
        f"{HEADER}\n"
        "C-1001,Айгерим Нурланқызы Сейтқали,+7 777 987 65 43,Aigerim.Seitkali@mail.kz,"
        "950314401237,ж,1995-03-14,kk,жоқ,2023-05-10T14:30:00+05:00\n"
        "C-1002,Ерлан Бекұлы Жұмабаев,87025551234,erlan.zh@gmail.com,880721304571,м,"
        "1988-07-21,ru,да,2022-11-01\n",
        encoding="utf-8",
    )
    later = datetime(2026, 12, 1, tzinfo=UTC)

    report = await import_customers(sessions, vault, changed, now=later)

    assert (report.created, report.updated, report.unchanged, report.rejected) == (0, 1, 1, ())
    assert await find_customer(sessions, vault, phone="8 701 123 45 67") is None
    aigerim = await find_customer(sessions, vault, phone="+77779876543")
    assert aigerim is not None and aigerim.id == "C-1001"
    assert aigerim.marketing_consent is False
    assert (aigerim.imported_at, aigerim.updated_at) == (NOW, later)


async def test_a_customer_is_found_by_phone_email_or_iin_in_any_spelling(
    sessions: Sessions, vault: Vault
) -> None:
    await import_customers(sessions, vault, CUSTOMERS, now=NOW)

    by_phone = await find_customer(sessions, vault, phone="+7 701 123 45 67")
    by_email = await find_customer(sessions, vault, email="AIGERIM.SEITKALI@MAIL.KZ")
    by_iin = await find_customer(sessions, vault, iin="950314 401237")
    both = await find_customer(sessions, vault, phone="87011234567", iin="950314401237")

    assert by_phone is not None
    assert by_phone == by_email == by_iin == both
    assert by_phone.id == "C-1001"
    assert by_phone.full_name == "Айгерим Нурланқызы Сейтқали"
    assert by_phone.phone == "+77011234567"
    assert by_phone.email == "aigerim.seitkali@mail.kz"
    assert by_phone.iin == "950314401237"
    assert (by_phone.gender, by_phone.birth_date) == ("f", date(1995, 3, 14))
    assert (by_phone.language, by_phone.marketing_consent) == ("kk", True)
    assert by_phone.registered_at == datetime(2023, 5, 10, 9, 30, tzinfo=UTC)
    assert "Айгерим" not in repr(by_phone) and "+7701" not in repr(by_phone)
    # Identifiers that belong to two different people find nobody.
    assert await find_customer(sessions, vault, phone="87011234567", iin="880721304571") is None
    with pytest.raises(InvalidPhone):
        await find_customer(sessions, vault, phone="not a phone")


async def test_blank_and_missing_columns_leave_the_fields_empty(
    sessions: Sessions, vault: Vault
) -> None:
    await import_customers(sessions, vault, CUSTOMERS, now=NOW)

    madina = await find_customer(sessions, vault, phone="+7 700 400 50 60")
    assert madina is not None and madina.id == "C-1009"
    assert (madina.email, madina.iin, madina.gender, madina.birth_date) == (None, None, None, None)
    assert madina.marketing_consent is False
    assert madina.registered_at == NOW  # a blank created_at is the time of the import


async def test_the_database_holds_no_name_phone_email_or_iin_in_clear(
    sessions: Sessions, vault: Vault, engine: AsyncEngine, database_url: str
) -> None:
    await import_customers(sessions, vault, CUSTOMERS, now=NOW)
    await import_purchases(sessions, vault, PURCHASES)

    stored = await everything_stored(engine, database_url)

    assert b"C-1001" in stored  # the dump does see the rows
    secrets = [
        "7011234567", "+77011234567", "aigerim.seitkali@mail.kz", "Aigerim.Seitkali",
        "950314401237", "Айгерим", "Сейтқали", "1995-03-14", "Платье",
    ]  # fmt: skip
    for secret in secrets:
        assert secret.encode() not in stored, secret


async def test_an_imported_customer_is_matched_when_a_request_is_verified(
    sessions: Sessions, vault: Vault, service: RequestService
) -> None:
    await import_customers(sessions, vault, CUSTOMERS, now=NOW)
    view = await service.open_request(
        kind="access", channel="telegram", language="ru", telegram_user_id=77
    )

    verified = await service.verify_by_contact(
        view.reference, sender_user_id=77, contact_user_id=77, phone="77025551234"
    )

    assert verified.customer_matched is True


# The file as a whole


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("full_name,phone\nАйгерим,+77011234567\n", "the column(s) id are required"),
        ("id,phone,telegram,nickname\n1,,,\n", "unknown column(s) telegram, nickname"),
        ("id;phone;phone\n", "phone given twice"),
    ],
)
async def test_a_file_with_a_bad_header_is_refused_whole(
    sessions: Sessions, vault: Vault, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ImportFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await import_customers(sessions, vault, path, now=NOW)
    assert await count(sessions, Customer) == 0


async def test_an_open_text_file_with_commas_and_a_short_row_imports(
    sessions: Sessions, vault: Vault
) -> None:
    text = io.StringIO(
        "\ufeffID, Phone ,Email\n"
        "A-1,8 (747) 321-65-49,timur.kim@inbox.ru\n"
        "A-2,+77761112233\n"
        '"A-3","+7 (776) 111-22-34","asel.t@mail.kz"\n'
    )

    report = await import_customers(sessions, vault, text, now=NOW)

    assert (report.created, report.rejected) == (
        2,
        (Rejected(3, "the row has 2 fields, the header has 3"),),
    )
    assert await find_customer(sessions, vault, email="Timur.Kim@inbox.ru") is not None


async def test_a_row_with_several_problems_names_them_all(sessions: Sessions, vault: Vault) -> None:
    text = io.StringIO(
        "id;phone;email;language;marketing_consent\n;+7 701 12;aigerim@@mail;kz;может быть\n"
    )

    report = await import_customers(sessions, vault, text, now=NOW)

    assert report.rejected == (
        Rejected(
            2,
            "id: missing; phone: not a valid phone number; email: not a valid e-mail address; "
            "language: not one of kk, ru, en; "
            "marketing_consent: not one of true/false, yes/no, 1/0, да/нет, иә/жоқ",
        ),
    )


async def test_a_large_file_is_committed_in_batches_with_progress(
    sessions: Sessions, vault: Vault, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(f"{HEADER}\n")
        for n in range(5000):
            iin = (
                valid_iin(f"9001013{n:04d}")
                if iin_check_digit(f"9001013{n:04d}") is not None
                else ""
            )
            f.write(
                f"K-{n},Клиент {n},8 (701) {n // 10000:03d}-{n // 100 % 100:02d}-{n % 100:02d},"
                f"client{n}@mail.kz,{iin},,,ru,да,2024-01-01\n"
            )
    seen: list[int] = []

    report = await import_customers(
        sessions, vault, path, now=NOW, batch_size=500, progress=seen.append
    )

    assert (report.created, report.rejected) == (5000, ())
    assert len(seen) > 1
    assert seen == sorted(set(seen)) and seen[-1] == 5000
    assert await count(sessions, Customer) == 5000
    found = await find_customer(sessions, vault, phone="+7 701 000 49 99")
    assert found is not None and found.id == "K-4999"


# Purchases


async def test_purchases_link_to_their_customers_and_reimport_changes_nothing(
    sessions: Sessions, vault: Vault, tmp_path: Path
) -> None:
    await import_customers(sessions, vault, CUSTOMERS, now=NOW)

    first = await import_purchases(sessions, vault, PURCHASES)
    again = await import_purchases(sessions, vault, PURCHASES)

    assert (first.created, first.updated, first.unchanged) == (4, 0, 0)
    assert first.rejected == PURCHASE_REJECTS
    assert (again.created, again.updated, again.unchanged) == (0, 0, 4)
    assert await count(sessions, Purchase) == 4
    aigerim = await find_customer(sessions, vault, iin="950314401237")
    assert aigerim is not None
    assert [(p.purchase_id, p.description, p.amount) for p in aigerim.purchases] == [
        ("P-5001", "Платье, шёлк", Decimal("45990.00")),
        ("P-5002", "Туфли-лодочки", Decimal("29990.00")),
    ]
    # A date without a time is local midnight in Almaty.
    assert aigerim.purchases[1].purchased_at == datetime(2024, 2, 29, 19, 0, tzinfo=UTC)

    corrected = tmp_path / "purchases.csv"
    corrected.write_text(
        'customer_id;purchase_id;amount\nC-1001;P-5002;"27 990,00"\n', encoding="utf-8"
    )
    fixed = await import_purchases(sessions, vault, corrected)
    assert (fixed.created, fixed.updated) == (0, 1)
    aigerim = await find_customer(sessions, vault, iin="950314401237")
    assert aigerim is not None and aigerim.purchases[-1].amount == Decimal("27990.00")


# The command


def settings(database_url: str, key: str) -> dict[str, str]:
    return {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": key}


async def test_the_import_command_reports_in_json_and_exits_1_on_rejects(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    env = settings(database_url, encryption_key)
    args = ("customers", "import", str(CUSTOMERS), "--purchases", str(PURCHASES), "--json")

    first = aina_dsr(tmp_path, *args, **env)
    second = aina_dsr_here(tmp_path, *args, **env)

    assert first.returncode == 1, first.stderr
    data = json.loads(first.stdout)
    assert (data["created"], data["updated"], data["unchanged"]) == (5, 0, 0)
    assert [(r["line"], r["reason"]) for r in data["rejected"]] == [
        (r.line, r.reason) for r in SAMPLE_REJECTS
    ]
    assert data["purchases"]["created"] == 4
    assert [r["line"] for r in data["purchases"]["rejected"]] == [5, 6, 7]
    again = json.loads(second.stdout)
    assert (again["created"], again["unchanged"], again["purchases"]["unchanged"]) == (0, 5, 4)
    for value in personal_values(CUSTOMERS):
        assert value not in first.stdout + first.stderr, value

    found = aina_dsr_here(
        tmp_path, "customers", "find", "--phone", "8 701 123 45 67", "--json", **env
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == {
        "id": "C-1001",
        "phone": "+7701*****67",
        "email": "a***@mail.kz",
        "iin": "**********37",
        "language": "kk",
        "marketing_consent": True,
        "registered_at": "2023-05-10T15:30:00+06:00",
        "purchases": 2,
    }
    nobody = aina_dsr_here(
        tmp_path, "customers", "find", "--email", "nobody@mail.kz", "--json", **env
    )
    assert (nobody.returncode, nobody.stdout.strip()) == (1, "null")


async def test_a_clean_file_exits_0_with_a_summary(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    path = tmp_path / "clean.csv"
    path.write_text("id;phone\nC-1;+7 701 123 45 67\n", encoding="utf-8")

    result = aina_dsr_here(
        tmp_path, "customers", "import", str(path), **settings(database_url, encryption_key)
    )

    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout and "rejected" in result.stdout


async def test_a_missing_file_or_a_bad_header_is_one_line_and_exit_code_2(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    env = settings(database_url, encryption_key)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,shoe_size\n1,38\n", encoding="utf-8")

    missing = aina_dsr_here(tmp_path, "customers", "import", "nowhere.csv", **env)
    unknown = aina_dsr_here(
        tmp_path, "customers", "import", str(CUSTOMERS), "--purchases", str(bad), **env
    )

    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        "aina-dsr: cannot read nowhere.csv: No such file or directory"
    ]
    assert unknown.returncode == 2
    [line] = unknown.stderr.splitlines()
    assert line.startswith(f"aina-dsr: {bad}: header: unknown column(s) id, shoe_size; ")
    assert "Traceback" not in unknown.stdout + unknown.stderr
    # The customers were not imported either: both headers are checked first.
    assert (
        aina_dsr_here(tmp_path, "customers", "find", "--iin", "950314401237", **env).returncode == 1
    )


async def test_find_refuses_an_identifier_that_cannot_be_one(
    engine: AsyncEngine, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    env = settings(database_url, encryption_key)

    result = aina_dsr_here(tmp_path, "customers", "find", "--iin", "950314401238", **env)
    nothing = aina_dsr_here(tmp_path, "customers", "find", **env)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "aina-dsr: --iin: the check digit of the IIN does not match"
    ]
    assert nothing.returncode == 2 and "--phone" in nothing.stderr
