"""The access report tells what section 6 promises: the desk's own data, recipients, categories.

Issue 16 item 5: the desk's data about the person always (not only without a
customer account), recipients and processors by name with their countries,
retention per category from the operator's processing file, and every
category of the policy marked held or not held; item 13: the desk's own
contact details (DSR_MAIL_FROM) in the report, never a hardcoded address.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.access_report_data import (
    EMAIL,
    IIN,
    NAME,
    NOW,
    PHONE,
    REFERENCE,
    customer,
    pdf_text,
)
from workflows.fulfilment.access_report import build_access_report
from workflows.fulfilment.processing import (
    CATEGORIES,
    ProcessingFacts,
    ProcessingFileError,
)
from workflows.i18n import LANGUAGES, DeskInfo, catalogue
from workflows.requests.holdings import DeskHoldings, HeldFile, HeldMessage, HeldRequest

TELEGRAM_ID = "5123456789"
OTHER_EMAIL = "aliya.work@example.kz"
EARLIER = "DSR-2026-000007"
LETTER = "Менің деректерім туралы білгім келеді"


def holdings(**changes: object) -> DeskHoldings:
    base: dict[str, object] = {
        "telegram_user_id": TELEGRAM_ID,
        "phones": (PHONE,),
        "emails": (OTHER_EMAIL,),
        "names": (),
        "requests": (
            HeldRequest(
                EARLIER,
                "unsubscribe",
                datetime(2026, 3, 2, 6, 0, tzinfo=UTC),
                "completed",
                datetime(2026, 3, 4, 6, 0, tzinfo=UTC),
            ),
            HeldRequest(REFERENCE, "access", datetime(2026, 11, 20, 6, 0, tzinfo=UTC), "approved"),
        ),
        "messages": (
            HeldMessage(REFERENCE, "telegram", datetime(2026, 11, 20, 6, 1, tzinfo=UTC), LETTER),
        ),
        "files": (
            HeldFile(
                REFERENCE, "passport-scan.pdf", 24_576, datetime(2026, 11, 20, 6, 2, tzinfo=UTC)
            ),
        ),
    }
    base.update(changes)
    return DeskHoldings(**base)  # type: ignore[arg-type]


def words(language: str, msgid: str, **params: object) -> str:
    return catalogue().text(language, msgid, **params)


NO_DATA = ("access.processing.none",)


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_person_the_directory_does_not_know_reads_what_the_desk_holds(language: str) -> None:
    built = build_access_report(
        None, reference=REFERENCE, language=language, now=NOW, desk=holdings()
    )

    text = pdf_text(built.as_pdf())
    for value in (TELEGRAM_ID, PHONE, OTHER_EMAIL, EARLIER, LETTER, "passport-scan.pdf"):
        assert value in text
    assert words(language, "kind.unsubscribe") in text
    assert words(language, "status.completed") in text
    company = DeskInfo().context(language)["company"]
    assert words(language, "access.processing.none", company=company) not in text
    assert built.processes_data is True
    document = json.loads(built.as_json())
    assert document["desk"]["telegram_user_id"] == TELEGRAM_ID
    assert document["desk"]["emails"] == [OTHER_EMAIL]
    assert [r["reference"] for r in document["desk"]["requests"]] == [EARLIER, REFERENCE]
    assert document["desk"]["files"][0] == {
        "reference": REFERENCE,
        "name": "passport-scan.pdf",
        "size": 24_576,
        "received_at": "2026-11-20T11:02:00+05:00",
    }
    # The chat message shows the desk's data too, masked.
    assert TELEGRAM_ID not in built.summary()
    assert PHONE not in built.summary()


def test_the_file_contents_are_not_in_the_report() -> None:
    built = build_access_report(None, reference=REFERENCE, language="en", now=NOW, desk=holdings())

    assert "24 KB" in pdf_text(built.as_pdf()) or "24.0 KB" in pdf_text(built.as_pdf())


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_known_customer_reads_the_directorys_data_and_the_desks(language: str) -> None:
    built = build_access_report(
        customer(), reference=REFERENCE, language=language, now=NOW, desk=holdings()
    )

    text = pdf_text(built.as_pdf())
    for value in (NAME, IIN, EMAIL, TELEGRAM_ID, OTHER_EMAIL, EARLIER, LETTER, "P-5001"):
        assert value in text
    document = json.loads(built.as_json())
    assert document["data"]["identity"]["iin"] == IIN
    assert document["desk"]["telegram_user_id"] == TELEGRAM_ID


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_category_of_the_policy_is_marked_held_or_not(language: str) -> None:
    known = build_access_report(
        customer(), reference=REFERENCE, language=language, now=NOW, desk=holdings()
    )
    unknown = build_access_report(
        None, reference=REFERENCE, language=language, now=NOW, desk=holdings()
    )

    held = json.loads(known.as_json())["categories"]
    assert set(held) == set(CATEGORIES)
    assert held["iin"] is True and held["purchases"] is True and held["telegram"] is True
    assert held["payment_card"] is False and held["geolocation"] is False
    not_known = json.loads(unknown.as_json())["categories"]
    assert not_known["iin"] is False and not_known["account"] is False
    assert not_known["phone"] is True and not_known["requests"] is True
    text = pdf_text(unknown.as_pdf())
    assert words(language, "access.section.categories") in text
    for key in CATEGORIES:
        assert words(language, f"access.category.{key}") in text
    assert words(language, "access.held.yes") in text
    assert words(language, "access.held.no") in text


PROCESSING_TOML = """
[[recipients]]
name = "Example Cloud GmbH"
role = "processor"
country = "DE"
location = "Frankfurt am Main"
purpose = { kk = "Бұлттық хостинг", ru = "Облачный хостинг", en = "Cloud hosting" }

[[recipients]]
name = "KazPost JSC"
role = "recipient"
country = "KZ"
location = "Astana"
purpose = "Delivery"

[retention]
purchases = { kk = "Бес жыл", ru = "Пять лет", en = "Five years after the purchase" }

[held_for_customers]
geolocation = true
"""


@pytest.mark.parametrize("language", LANGUAGES)
def test_recipients_countries_and_retention_come_from_the_operators_file(
    language: str, tmp_path: Path
) -> None:
    path = tmp_path / "processing.toml"
    path.write_text(PROCESSING_TOML, encoding="utf-8")
    facts = ProcessingFacts.from_file(path)

    built = build_access_report(
        customer(),
        reference=REFERENCE,
        language=language,
        now=NOW,
        desk=holdings(),
        processing=facts,
    )

    text = pdf_text(built.as_pdf())
    for value in ("Example Cloud GmbH", "Frankfurt am Main", "KazPost JSC", "Astana"):
        assert value in text
    germany = {"kk": "Германия", "ru": "Германия", "en": "Germany"}[language]
    assert germany in text
    five = {"kk": "Бес жыл", "ru": "Пять лет", "en": "Five years after the purchase"}[language]
    assert five in text
    document = json.loads(built.as_json())
    assert document["transfers_abroad"] == ["DE"]
    assert {r["name"] for r in document["recipients"]} == {"Example Cloud GmbH", "KazPost JSC"}
    assert document["retention_by_category"]["purchases"] == five
    assert document["categories"]["geolocation"] is True


def test_without_a_file_the_policy_gives_the_retention_of_every_category() -> None:
    built = build_access_report(
        customer(), reference=REFERENCE, language="en", now=NOW, desk=holdings()
    )

    retention = json.loads(built.as_json())["retention_by_category"]
    assert retention["purchases"]  # section 2: kept after the account is deleted
    assert "accounting" in retention["purchases"]
    assert "1095 days" in retention["requests"]


@pytest.mark.parametrize(
    ("language", "days", "said"),
    [
        ("ru", 31, "31 день после закрытия"),
        ("ru", 22, "22 дня после закрытия"),
        ("ru", 1095, "1095 дней после закрытия"),
        ("kk", 31, "кейін 31 күн;"),
        ("en", 1, "1 day after each request closes"),
        ("en", 31, "31 days after each request closes"),
    ],
)
def test_the_desks_retention_reads_as_people_say_the_number_of_days(
    language: str, days: int, said: str
) -> None:
    built = build_access_report(
        customer(),
        reference=REFERENCE,
        language=language,
        now=NOW,
        desk=holdings(),
        processing=ProcessingFacts(desk_retention_days=days),
    )

    retention = json.loads(built.as_json())["retention_by_category"]
    assert said in retention["requests"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[[recipients]]\nname = 'X'\nrole = 'processor'\ncountry = 'Germany'\n", "country"),
        ("[[recipients]]\nname = 'X'\nrole = 'partner'\ncountry = 'DE'\n", "role"),
        ("[[recipients]]\nrole = 'processor'\ncountry = 'DE'\n", "name"),
        ("[retention]\nshoe_size = 'forever'\n", "shoe_size"),
        ("[held_for_customers]\ngeolocation = 'yes'\n", "geolocation"),
        ("recipients = [\n", "TOML"),
        ("[recipient]\nname = 'X'\n", "recipient"),
        ("[retention]\npurchases = { en = 'Five years' }\n", "kk"),
    ],
)
def test_a_malformed_processing_file_says_where_and_why(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "processing.toml"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ProcessingFileError) as caught:
        ProcessingFacts.from_file(path)

    assert str(path) in str(caught.value)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_example_file_at_the_repository_root_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "processing.example.toml"

    facts = ProcessingFacts.from_file(example)

    assert facts.recipients


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_report_names_the_desks_own_address_and_authority(language: str) -> None:
    info = DeskInfo(
        mail_address="privacy@example.kz",
        authority={language: "The Test Authority"},
        authority_address={language: "1 Test Street, Astana"},
    )

    built = build_access_report(
        customer(), reference=REFERENCE, language=language, now=NOW, desk=holdings(), info=info
    )

    text = pdf_text(built.as_pdf())
    assert "privacy@example.kz" in text
    assert "aina.app@mercury.kz" not in text
    assert "aina.app@mercury.kz" not in built.as_json().decode()
    assert "The Test Authority" in text
    assert "1 Test Street, Astana" in text


def test_without_an_account_the_contacts_are_kept_as_the_desk_keeps_them() -> None:
    built = build_access_report(None, reference=REFERENCE, language="en", now=NOW, desk=holdings())

    retention = json.loads(built.as_json())["retention_by_category"]
    assert "1095 days after your last request" in retention["phone"]
    assert "account" not in retention["phone"]
