"""The access report: what a person receives when an ``access`` request is approved."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader

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
from workflows.directory.store import CustomerRecord, PurchaseRecord
from workflows.fulfilment.access_report import (
    POLICY_SECTIONS,
    AccessReport,
    build_access_report,
    mask_birth_date,
)
from workflows.i18n import LANGUAGES, DeskInfo, catalogue
from workflows.privacy.masking import mask_email, mask_iin, mask_phone


def report(language: str, record: CustomerRecord | None = None, **kwargs: Any) -> AccessReport:
    return build_access_report(
        record if record is not None else customer(),
        reference=REFERENCE,
        language=language,
        now=NOW,
        **kwargs,
    )


def heading(language: str, key: str) -> str:
    return catalogue().text(language, f"access.section.{key}")


# -- the documents hold everything, complete ------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_pdf_opens_and_holds_the_complete_data_and_the_policy(language: str) -> None:
    built = report(language)

    text = pdf_text(built.as_pdf())

    for value in (NAME, IIN, PHONE, EMAIL, REFERENCE, "P-5001", "1995-03-14"):
        assert value in text
    for key in ("legal_basis", "processors", "storage_location"):
        assert heading(language, key) in text
    assert catalogue().text(language, "access.title") in text
    assert "050400" in text
    # The long description wraps onto more lines and still reads to its last word.
    assert "шыршажапырақ" in text


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_json_holds_the_same_data_complete(language: str) -> None:
    built = report(language)

    document = json.loads(built.as_json().decode("utf-8"))

    assert document["reference"] == REFERENCE
    assert document["language"] == language
    assert document["generated_at"] == "2026-11-25T12:30:00+05:00"
    assert document["processes_data"] is True
    assert document["customer_found"] is True
    assert document["data"]["identity"] == {
        "full_name": NAME,
        "iin": IIN,
        "gender": "f",
        "birth_date": "1995-03-14",
    }
    assert document["data"]["contacts"] == {"phone": PHONE, "email": EMAIL}
    assert document["data"]["account"]["customer_id"] == "C-1001"
    assert document["data"]["account"]["marketing_consent"] is True
    assert document["purchases"][0] == {
        "purchase_id": "P-5001",
        "purchased_at": "2024-04-14T18:20:00+05:00",
        "description": "Көйлек",
        "amount": "45990.00",
    }
    assert [p["purchase_id"] for p in document["purchases"]] == ["P-5001", "P-5002", "P-5003"]
    assert document["controller"]["email"] == "aina.app@mercury.kz"
    assert "050400" in document["controller"]["postal_address"]
    for key in POLICY_SECTIONS:
        assert document[key], key
        assert all(isinstance(point, str) and point for point in document[key])


def test_the_json_is_utf8_text_not_ascii_escapes() -> None:
    raw = report("kk").as_json()

    assert NAME.encode("utf-8") in raw
    assert b"\\u04" not in raw


# -- the chat message and the staff preview are masked --------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("rendering", ["summary", "preview"])
def test_the_message_and_the_preview_show_masked_values_only(language: str, rendering: str) -> None:
    built = report(language)

    text = getattr(built, rendering)()

    for secret in (PHONE, IIN, EMAIL, "1995-03-14", "aliya.nurgaliyeva"):
        assert secret not in text
    for masked in (mask_phone(PHONE), mask_iin(IIN), mask_email(EMAIL), "19**-**-14"):
        assert masked in text
    assert "+7701*****67" in text
    assert catalogue().text(language, "access.purchases.count", count=3) in text
    assert "Көйлек" not in text  # the purchases themselves are in the files only


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_message_is_in_the_persons_language_and_points_to_the_files(language: str) -> None:
    summary = report(language).summary()

    assert REFERENCE in summary
    assert catalogue().text(language, "access.summary.files") in summary
    assert catalogue().text(language, "access.field.iin") in summary
    assert "{" not in summary


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_preview_fits_a_staff_card(language: str) -> None:
    lines = report(language).preview().splitlines()

    assert 5 <= len(lines) <= 10
    assert REFERENCE in lines[0]
    assert "C-1001" in lines[1]


def test_a_birth_date_keeps_only_its_century_and_day() -> None:
    assert mask_birth_date("1995-03-14") == "19**-**-14"
    assert mask_birth_date("") == ""
    assert mask_birth_date("14.03.1995") == "****"


# -- no customer account ----------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_without_an_account_the_report_says_so_and_holds_the_desks_contacts(
    language: str,
) -> None:
    built = build_access_report(
        None,
        reference=REFERENCE,
        language=language,
        now=NOW,
        subject_contacts={"phone": PHONE, "email": EMAIL},
    )

    assert built.processes_data is True
    assert built.customer_found is False
    not_found = catalogue().text(
        language,
        "access.processing.desk_only",
        company=DeskInfo().context(language)["company"],
    )
    assert not_found in built.summary()
    assert PHONE not in built.summary()
    assert mask_phone(PHONE) in built.summary()
    assert catalogue().text(language, "access.preview.not_found") in built.preview()
    document = json.loads(built.as_json())
    assert document["customer_found"] is False
    assert document["data"] == {}
    assert document["desk"]["phones"] == [PHONE]
    assert document["desk"]["emails"] == [EMAIL]
    assert document["purchases"] == []
    assert document["storage_location"]
    text = pdf_text(built.as_pdf())
    assert PHONE in text
    assert EMAIL in text
    assert heading(language, "sources") in text


def test_without_an_account_or_contacts_nothing_is_processed() -> None:
    built = build_access_report(None, reference=REFERENCE, language="en", now=NOW)

    assert built.processes_data is False
    assert "No customer account was found" in built.summary()
    assert json.loads(built.as_json())["data"] == {}
    assert REFERENCE in pdf_text(built.as_pdf())


# -- the PDF's metadata and its pages --------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_pdf_metadata_holds_no_personal_data(language: str) -> None:
    reader = PdfReader(io.BytesIO(report(language).as_pdf()))

    metadata = {str(k): str(v) for k, v in (reader.metadata or {}).items()}

    assert metadata["/Title"] == catalogue().text(language, "access.title")
    joined = " ".join(metadata.values())
    for value in (NAME, "Нұрғалиева", IIN, PHONE, EMAIL, "C-1001", REFERENCE):
        assert value not in joined
    assert reader.xmp_metadata is None


def test_many_purchases_run_over_several_pages() -> None:
    purchases = tuple(
        PurchaseRecord(f"P-{n:05}", datetime(2025, 1, 1, tzinfo=UTC), "Сөмке", Decimal(n))
        for n in range(1, 151)
    )

    document = report("ru", customer(purchases=purchases)).as_pdf()

    reader = PdfReader(io.BytesIO(document))
    assert len(reader.pages) > 4
    assert "P-00150" in pdf_text(document)


def unbroken(length: int) -> str:
    """A value without a space: numbered pieces, so what is lost or doubled shows."""
    pieces = "".join(f"{n:04d}Қ" for n in range(length // 5 + 1))
    return pieces[:length]


def flattened(document: bytes, language: str) -> str:
    """The PDF's text without page footers and line breaks: a wrapped value reads whole."""
    footer = catalogue().text(language, "access.pdf.footer", **DeskInfo().context(language))
    reader = PdfReader(io.BytesIO(document))
    lines = [
        line
        for page in reader.pages
        for line in page.extract_text().splitlines()
        if not line.startswith(footer)
    ]
    return "".join("".join(lines).split())


@pytest.mark.parametrize("length", [300, 3_000, 20_000])
def test_a_long_unbroken_value_wraps_and_reads_back_whole(length: int) -> None:
    # A name or a description from a CRM can be anything; a cell taller than a page
    # used to raise ValueError and leave the request approved and unanswered.
    value = unbroken(length)
    record = customer(
        full_name=value,
        purchases=(PurchaseRecord("P-" + "7" * 62, None, value, Decimal("1")),),
    )

    document = report("kk", record).as_pdf()

    text = flattened(document, "kk")
    assert text.count(value) == 2  # the name and the description, each whole, once
    assert "P-" + "7" * 62 in text


def test_a_value_of_many_lines_runs_over_pages_in_order() -> None:
    lines = [f"line-{n:04d}" for n in range(400)]

    document = report("ru", customer(full_name="\n".join(lines))).as_pdf()

    text = flattened(document, "ru")
    assert "".join(lines) in text
    assert len(PdfReader(io.BytesIO(document)).pages) > 3


def test_a_customer_with_empty_fields_reads_cleanly() -> None:
    sparse = customer(
        full_name=None, phone=None, iin=None, gender=None, birth_date=None, registered_at=None
    )

    built = report("en", sparse)

    assert json.loads(built.as_json())["data"]["identity"]["iin"] is None
    assert "None" not in built.summary()
    assert "None" not in built.preview()
    assert "None" not in pdf_text(built.as_pdf())


def test_a_language_code_is_read_as_the_catalogue_language_and_the_time_must_be_aware() -> None:
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 - the mistake under test

    assert report("kk-KZ").language == "kk"
    with pytest.raises(ValueError, match="timezone"):
        build_access_report(None, reference=REFERENCE, language="en", now=naive)


def test_every_section_has_a_title_and_something_in_it() -> None:
    built = report("kk")

    keys = [section.key for section in built.sections]

    assert keys[0] == "processing"
    assert {"identity", "contacts", "account", "purchases", *POLICY_SECTIONS} <= set(keys)
    for section in built.sections:
        assert section.title
        assert section.items or section.paragraphs
        assert not re.search(r"[{}]", section.title + "".join(section.paragraphs))
