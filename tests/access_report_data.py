"""Aliya, the customer of the access report tests, and the report's PDF read back as text."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pypdf import PdfReader

from workflows.directory.store import CustomerRecord, PurchaseRecord
from workflows.identity import iin_check_digit

REFERENCE = "DSR-2026-000042"
NOW = datetime(2026, 11, 25, 7, 30, tzinfo=UTC)  # 12:30 in Almaty
NAME = "Әлия Қасымқызы Нұрғалиева"
PHONE = "+77011234567"
EMAIL = "aliya.nurgaliyeva@mail.kz"
LONG_DESCRIPTION = (
    "Қысқы пальто, жүн мен кашемир, қолдан тігілген, ұзын, белдігі бар, түсі: қою көк; "
    "жеткізу Алматы қаласы бойынша, сыйлық қорабымен және жеке жазылған ашықхатпен; "
    "соңғы сөз: шыршажапырақ"
)


def valid_iin(first_eleven: str) -> str:
    """``first_eleven`` digits with the check digit that makes them a valid IIN."""
    check = iin_check_digit(first_eleven)
    assert check is not None
    return first_eleven + str(check)


IIN = valid_iin("95031440123")


def customer(**changes: Any) -> CustomerRecord:
    """Aliya, customer C-1001 with three purchases; ``changes`` replace her fields."""
    record = CustomerRecord(
        id="C-1001",
        full_name=NAME,
        phone=PHONE,
        email=EMAIL,
        iin=IIN,
        gender="f",
        birth_date=date(1995, 3, 14),
        language="kk",
        marketing_consent=True,
        registered_at=datetime(2024, 5, 10, 9, 30, tzinfo=UTC),
        imported_at=NOW,
        updated_at=NOW,
        purchases=(
            PurchaseRecord(
                "P-5001", datetime(2024, 4, 14, 13, 20, tzinfo=UTC), "Көйлек", Decimal("45990.00")
            ),
            PurchaseRecord("P-5002", datetime(2024, 3, 1, tzinfo=UTC), "Туфли", Decimal("29990")),
            PurchaseRecord("P-5003", None, LONG_DESCRIPTION, None),
        ),
    )
    return replace(record, **changes)


def pdf_text(document: bytes) -> str:
    """The PDF's text with its whitespace made single spaces (a wrapped line reads as one)."""
    reader = PdfReader(io.BytesIO(document))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return " ".join(text.split())
