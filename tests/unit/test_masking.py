"""No phone, e-mail or IIN reaches a log line in clear."""

from __future__ import annotations

import functools
import logging
import sqlite3

import pytest

from workflows.privacy.masking import (
    Masked,
    PersonalDataFilter,
    mask_email,
    mask_iin,
    mask_phone,
    mask_telegram_id,
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


@pytest.mark.parametrize(
    ("text", "secrets", "kept"),
    [
        # A quoted local part may hold dots and spaces; the quotes do not hide it.
        ('reply to "john.doe"@example.kz now', ["john.doe", "john"], "j***@example.kz"),
        ('from "Aigerim N."@mail.kz', ["Aigerim", "N."], "A***@mail.kz"),
        # Phones written with dots, Kazakh and international style.
        ("call 8.701.123.45.67 today", ["123.45", "701.123"], "8701*****67"),
        ("call +7.701.123.4567 today", ["123.4567", "701.123"], "+7701*****67"),
        # An IIN in two halves: its first six digits are a birth date.
        ("ИИН 900101 300123.", ["900101", "9001", "300123"], "**********23"),
        ("IIN 900101-300123", ["900101", "9001"], "**********23"),
    ],
)
def test_the_forms_that_used_to_slip_through_are_masked(
    text: str, secrets: list[str], kept: str
) -> None:
    masked = mask_text(text)
    for secret in secrets:
        assert secret not in masked, masked
    assert kept in masked
    assert masked.split()[0] == text.split()[0]


def test_a_telegram_user_id_is_masked_to_its_ends() -> None:
    assert mask_telegram_id(1234567889) == "123***89"
    assert mask_telegram_id("700200") == "7***00"
    assert mask_telegram_id(-1001234567890) == "-1001***90"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("chat 7012345678 over 20 updates a minute: dropped", "chat 701***78 over 20"),
        ("a button nobody handles was pressed in chat 700200", "pressed in chat 7***00"),
        ("telegram_user_id=7012345678 opened", "telegram_user_id=701***78 opened"),
        ("from_user=User(id=7012345678, is_bot=False)", "User(id=701***78,"),
        ("{'user_id': 7012345678}", "{'user_id': 701***78}"),
        ("staff 555123456 took it", "staff 55***56 took"),
    ],
)
def test_telegram_ids_in_free_text_are_masked(text: str, masked: str) -> None:
    assert masked in mask_text(text)


def test_counts_sizes_and_addresses_are_not_taken_for_ids_or_phones() -> None:
    for line in (
        "outbox 123456 sent (request_taken, DSR-2026-000001)",
        "letter of 26214400 bytes refused",
        "metrics on http://192.168.100.200:9100/metrics",
        "imported 12345 users",
        "amount 15990.00 and 12345.67",
    ):
        assert mask_text(line) == line


def test_a_dialog_state_key_names_no_telegram_id() -> None:
    masked = mask_text("state of fsm:555123456:555123456:default lost")
    assert "555123456" not in masked
    assert "fsm:55***56:55***56:default" in masked


def test_the_database_drivers_debug_lines_keep_the_statement_and_hide_its_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiosqlite logs every statement with its parameters at DEBUG: a Telegram id or a
    # dialog key there has no word beside it to tell what it is.
    log = logging.getLogger("aiosqlite")
    caplog.handler.addFilter(PersonalDataFilter())
    cursor = sqlite3.connect(":memory:").cursor()
    call = functools.partial(
        cursor.execute,
        "SELECT data_subject.id FROM data_subject WHERE data_subject.telegram_user_id = ?",
        (555123456, "it's (sic)"),
    )
    with caplog.at_level(logging.DEBUG, logger="aiosqlite"):
        log.debug("executing %s", call)
        log.debug("operation %s completed", call)
    assert "555123456" not in caplog.text
    executing, completed = caplog.messages
    assert executing.startswith("executing functools.partial(")
    assert "WHERE data_subject.telegram_user_id = ?'" in executing
    assert completed.endswith(" completed")
