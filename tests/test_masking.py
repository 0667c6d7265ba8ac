"""No phone, e-mail or IIN reaches a log line in clear."""

from __future__ import annotations

import logging

import pytest

from workflows.masking import (
    Masked,
    PersonalDataFilter,
    mask_email,
    mask_iin,
    mask_phone,
    mask_text,
)


def test_masks_keep_enough_to_recognise_and_no_more() -> None:
    assert mask_phone("+77011234567") == "+7701*****67"
    assert mask_email("aigerim.n@mail.kz") == "a***@mail.kz"
    assert mask_iin("900515400123") == "**********23"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("from +7 701 123 45 67 today", "123 45"),
        ("call 8(701)123-45-67", "123-45"),
        ("write to aigerim.n@mail.kz please", "aigerim.n"),
        ("ИИН 900515400123.", "9005154001"),
    ],
)
def test_free_text_is_masked(text: str, secret: str) -> None:
    masked = mask_text(text)
    assert secret not in masked
    assert masked.split()[0] == text.split()[0]  # the words around stay


def test_references_and_dates_are_left_alone() -> None:
    text = "DSR-2026-000042 due 2026-12-17, outbox 1234 retry in 5 s"
    assert mask_text(text) == text


def test_the_filter_masks_messages_and_their_arguments(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.masking")
    caplog.handler.addFilter(PersonalDataFilter())
    with caplog.at_level(logging.INFO, logger="test.masking"):
        log.info("contact %s shared %s", "+77011234567", "aigerim@mail.kz")
        log.info("subject %r", Masked("Айгерим Нурланқызы"))
    text = caplog.text
    assert "1234567" not in text
    assert "aigerim@" not in text
    assert "Айгерим" not in text
    assert "MASKED" in text
    assert "+7701*****67" in text


def test_timestamps_are_not_taken_for_phones() -> None:
    line = "2026-11-25 13:21:04 INFO outbox 12 sent (request_taken, DSR-2026-000001)"
    assert mask_text(line) == line
    assert mask_text("at 2026-11-25T13:21:04+05:00") == "at 2026-11-25T13:21:04+05:00"
